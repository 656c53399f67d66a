"""``/subscription``: the tiers, their limits and prices, and upgrades paid in Telegram Stars.

The flow (Telegram's Stars payments, currency ``XTR``):

1. ``/subscription`` lists the tiers with their prices (``core.payments``) and a buy button
   per tier the user may buy (:func:`core.payments.purchasable`).
2. A buy button sends an invoice (``sendInvoice``: one ``LabeledPrice``, empty
   ``provider_token``, a signed payload naming user, tier, period and price).
3. ``pre_checkout_query``: answered ok only when the payload verifies, is the payer's, the
   tier is still sold at that price and the user exists and may buy it; else ok=False with
   a reason Telegram shows. No session is needed (Telegram waits 10 s for the answer).
4. ``successful_payment``: :meth:`state.payments.RedisPaymentStore.apply` records it
   (idempotent on ``telegram_payment_charge_id``) and sets the tier until the end of the
   paid period; a ``payments`` lake row, an audit row and a thank-you message follow, once.
5. ``refunded_payment`` (a refund made outside ``/admin refund``): the payment is marked
   refunded and the user returns to Free, once.

Payment updates pass the session gate without a session: money is never refused.
"""

from __future__ import annotations

import contextlib
import logging
import secrets

from aiogram import Bot, F
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
    PreCheckoutQuery,
)

from bot.callbacks import BuyTier
from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.payments import payload_key
from bot.routers.common import RouterSpec, answer, audit, refuse_foreign, send
from core.accounts import Tier, TierPolicy, User
from core.payments import (
    CURRENCY,
    PayloadError,
    TierPrice,
    check_purchase,
    decode_payload,
    encode_payload,
    purchasable,
    tier_prices,
)
from notify import texts
from state.payments import PAYMENTS_DATASET, RedisPaymentStore, payments_table

log = logging.getLogger(__name__)
router = RouterSpec("subscription")


def prices_of(deps: BotDeps) -> dict[Tier, TierPrice]:
    return tier_prices(deps.settings.distribution.prices)


def payment_store(deps: BotDeps) -> RedisPaymentStore:
    return RedisPaymentStore(deps.users)


def buyable(deps: BotDeps, user: User) -> list[TierPrice]:
    return purchasable(prices_of(deps), deps.tier_of(user), user.tier_expires_at, deps.now())


def buy_keyboard(user: User, current: Tier, offers: list[TierPrice]) -> InlineKeyboardMarkup | None:
    if not offers:
        return None
    rows = [
        [
            InlineKeyboardButton(
                text=texts.buy_button(p, current),
                callback_data=BuyTier(uid=user.id, tier=p.tier.value).pack(),
            )
        ]
        for p in offers
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)


@router.message(Command("subscription"))
async def cmd_subscription(message: Message, bot: Bot, deps: BotDeps, policy: TierPolicy, user: User) -> None:
    offers = buyable(deps, user)
    text = texts.subscription_screen(
        deps.tiers,
        prices_of(deps),
        policy.tier,
        user.tier_expires_at,
        user.preferences.timezone,
        deps.now(),
        offers,
    )
    await send(bot, message.chat.id, text, buy_keyboard(user, policy.tier, offers))


@router.callback_query(BuyTier.filter())
async def on_buy(
    cb: CallbackQuery, callback_data: BuyTier, bot: Bot, deps: BotDeps, user: User, audit: AuditNote
) -> None:
    if await refuse_foreign(cb, callback_data.uid, audit):
        return
    offer = next((p for p in buyable(deps, user) if p.tier.value == callback_data.tier), None)
    if offer is None:
        audit.ok, audit.detail = False, f"not_for_sale {callback_data.tier}"
        await answer(cb, texts.not_for_sale(), alert=True)
        return
    chat_id = cb.message.chat.id if cb.message is not None else user.id
    payload = encode_payload(offer, user.id, secrets.token_hex(6), payload_key(deps.settings))
    await bot.send_invoice(
        chat_id,
        title=texts.invoice_title(offer),
        description=texts.invoice_description(deps.tiers[offer.tier], offer),
        payload=payload,
        currency=CURRENCY,
        prices=[LabeledPrice(label=texts.invoice_label(offer), amount=offer.stars)],
        provider_token="",
    )
    audit.detail = f"invoice {offer.tier.value} {offer.stars} {offer.days}d"
    await answer(cb, texts.invoice_sent())


async def _checkout_refusal(deps: BotDeps, query: PreCheckoutQuery) -> str | None:
    """Why this checkout must be refused (a reason code), or None to accept it."""
    try:
        payload = decode_payload(query.invoice_payload, payload_key(deps.settings))
    except PayloadError:
        return "bad_payload"
    reason = check_purchase(
        payload,
        payer_id=query.from_user.id,
        currency=query.currency,
        total_amount=query.total_amount,
        prices=prices_of(deps),
    )
    if reason is not None:
        return reason
    user = await deps.users.get(query.from_user.id)
    if user is None:
        return "no_user"
    if payload.tier not in {p.tier for p in buyable(deps, user)}:
        return "not_upgrade"
    return None


@router.pre_checkout_query()
async def on_pre_checkout(query: PreCheckoutQuery, bot: Bot, deps: BotDeps) -> None:
    reason = await _checkout_refusal(deps, query)
    if reason is None:
        await bot.answer_pre_checkout_query(query.id, ok=True)
    else:
        await bot.answer_pre_checkout_query(query.id, ok=False, error_message=texts.precheckout_error(reason))
    await audit(
        deps,
        query.from_user.id,
        query.from_user.id,
        "pay:checkout",
        reason is None,
        reason or f"{query.total_amount} {query.currency}",
    )


@router.message(F.successful_payment)
async def on_successful_payment(message: Message, bot: Bot, deps: BotDeps) -> None:
    paid = message.successful_payment
    assert paid is not None
    payer = message.from_user.id if message.from_user is not None else message.chat.id
    now = deps.now()
    charge = paid.telegram_payment_charge_id
    try:
        payload = decode_payload(paid.invoice_payload, payload_key(deps.settings))
        if payload.user_id != payer:
            raise PayloadError("another user's invoice")
    except PayloadError as exc:
        log.error("payment %s of %s: unmatched payload: %s", charge, payer, exc)
        await audit(deps, payer, message.chat.id, "pay:paid", False, f"unmatched {charge}")
        await send(bot, message.chat.id, texts.payment_unmatched())
        return
    applied = await payment_store(deps).apply(
        charge, paid.provider_payment_charge_id, payload, paid.total_amount, now
    )
    if not applied.new:  # the same payment delivered again: it was handled
        await audit(deps, payer, message.chat.id, "pay:paid", True, f"duplicate {charge}")
        return
    p = applied.payment
    await deps.emit(PAYMENTS_DATASET, payments_table([p.row("paid", now)]))
    await audit(
        deps,
        payer,
        message.chat.id,
        "pay:paid",
        applied.user_found,
        f"{charge} {p.tier.value} {p.stars} {paid.currency} until {p.paid_until.isoformat()}",
    )
    user = await deps.users.get(payer)
    tz = user.preferences.timezone if user is not None else "UTC"
    await send(bot, message.chat.id, texts.payment_thanks(p.tier, p.paid_until, tz))


@router.message(F.refunded_payment)
async def on_refunded_payment(message: Message, bot: Bot, deps: BotDeps) -> None:
    refund = message.refunded_payment
    assert refund is not None
    payer = message.from_user.id if message.from_user is not None else message.chat.id
    now = deps.now()
    payment, changed = await payment_store(deps).mark_refunded(refund.telegram_payment_charge_id, now)
    if payment is None or not changed:
        return  # unknown, or refunded through /admin refund already
    await deps.emit(PAYMENTS_DATASET, payments_table([payment.row("refunded", now)]))
    await audit(deps, payer, message.chat.id, "pay:refunded", True, payment.charge_id)
    with contextlib.suppress(TelegramAPIError):
        await send(bot, message.chat.id, texts.payment_refunded(payment.stars))
