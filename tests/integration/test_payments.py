"""Upgrades paid in Telegram Stars, end to end in-process: the bot (real aiogram ``Bot`` and
``Dispatcher``, real Redis) and the Telegram sandbox paying its invoices.

A user pays through the sandbox's control API (``POST /sandbox/pay``) as a person presses
"Pay": the sandbox posts the ``pre_checkout_query`` and then the ``successful_payment``
updates; here they are taken from the sandbox's update queue (``getUpdates`` mode) and fed
to the dispatcher in order, as a polling bot would get them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from aiogram.types import LabeledPrice, Update

from actors.directory import UserDirectory
from actors.tiers import expire_paid_tiers
from bot.callbacks import BuyTier
from core.accounts import Tier, User
from state.payments import RedisPaymentStore
from tests.integration import test_bot
from tests.integration.test_bot import ADMIN, ALICE, BOB, Harness, buttons

h = test_bot.h  # the bot harness fixture


async def pump(h: Harness, until: asyncio.Task[Any]) -> list[dict[str, Any]]:
    """Feed what the sandbox posts for the bot until ``until`` is done and nothing is left."""
    state = h.sb.sandbox.bot()
    fed: list[dict[str, Any]] = []
    while not until.done() or state.pending:
        while state.pending:
            update = state.pending.pop(0)
            fed.append(update)
            await h.dp.feed_update(h.bot, Update.model_validate(update, context={"bot": h.bot}))
        await asyncio.sleep(0.01)
    return fed


async def pay(
    h: Harness, user_id: int, message_id: int, chat_id: int | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async def call() -> dict[str, Any]:
        body = {"user_id": user_id, "message_id": message_id, "chat_id": chat_id}
        r = await h.http.post(f"{h.sb.base_url}/sandbox/pay", json=body)
        return dict(r.json())

    task = asyncio.create_task(call())
    fed = await pump(h, task)
    return task.result(), fed


async def buy(h: Harness, user_id: int, tier: Tier) -> dict[str, Any]:
    """``/subscription``, press the tier's buy button: the invoice message."""
    await h.send(user_id, "/subscription")
    screen = await h.last(user_id)
    data = BuyTier(uid=user_id, tier=tier.value).pack()
    assert data in buttons(screen), buttons(screen)
    await h.press(user_id, screen["message"], data)
    invoice = (await h.messages(user_id))[-1]["message"]
    assert "invoice" in invoice
    return dict(invoice)


async def test_buy_premium_with_stars_duplicate_delivery_and_extension(h: Harness) -> None:
    await h.start(ALICE)
    await h.send(ALICE, "/subscription")
    screen = await h.last(ALICE)
    text = screen["text"]
    assert "Your tier: Free" in text and "1000 ⭐ for 30 days" in text and "250 ⭐" in text
    assert "midnight in your time zone" in text
    assert [b for b in buttons(screen) if b.startswith("bu:")] == [
        BuyTier(uid=ALICE, tier=t).pack() for t in ("basic", "premium", "enterprise")
    ]

    invoice = await buy(h, ALICE, Tier.PREMIUM)
    sent = (await h.requests("sendInvoice"))[-1]["params"]
    assert sent["currency"] == "XTR" and sent.get("provider_token", "") == ""
    assert json.loads(sent["prices"]) if isinstance(sent["prices"], str) else sent["prices"]
    assert invoice["invoice"]["total_amount"] == 1000 and invoice["invoice"]["currency"] == "XTR"

    outcome, fed = await pay(h, ALICE, invoice["message_id"])
    assert outcome["status"] == "paid", outcome
    assert [next(k for k in u if k != "update_id") for u in fed] == ["pre_checkout_query", "message"]
    answers = await h.requests("answerPreCheckoutQuery")
    assert answers[-1]["params"]["ok"] in (True, "true")
    user = await h.deps.users.get(ALICE)
    assert user is not None and user.tier is Tier.PREMIUM
    assert user.tier_expires_at == h.clock() + timedelta(days=30)
    thanks = (await h.texts(ALICE))[-1]
    assert "Thank you" in thanks and "Premium" in thanks and "until" in thanks
    charge = outcome["telegram_payment_charge_id"]
    rows = h.events.rows("payments")
    assert [
        (r["event"], r["user_id"], r["tier"], r["stars"], r["telegram_payment_charge_id"]) for r in rows
    ] == [("paid", ALICE, "premium", 1000, charge)]
    assert any(
        r["action"] == "pay:paid" and r["ok"] and charge in r["detail"] for r in h.events.rows("audit")
    )

    # the same successful_payment delivered again: one payment, the same expiry, no second thanks
    n_texts = len(await h.texts(ALICE))
    payment_update = fed[-1]
    await h.feed(payment_update)
    assert len(h.events.rows("payments")) == 1
    again = await h.deps.users.get(ALICE)
    assert again is not None and again.tier_expires_at == user.tier_expires_at
    assert len(await h.texts(ALICE)) == n_texts
    assert any(r["detail"] == f"duplicate {charge}" for r in h.events.rows("audit"))

    # paying again while paid extends from the current expiry
    h.clock.advance(timedelta(days=5))
    await h.send(ALICE, "/subscription")
    screen = await h.last(ALICE)
    assert "Paid until" in screen["text"]
    assert [b for b in buttons(screen) if b.startswith("bu:")] == [
        BuyTier(uid=ALICE, tier=t).pack() for t in ("premium", "enterprise")
    ]
    invoice = await buy(h, ALICE, Tier.PREMIUM)
    outcome, _ = await pay(h, ALICE, invoice["message_id"])
    assert outcome["status"] == "paid"
    extended = await h.deps.users.get(ALICE)
    assert extended is not None and extended.tier_expires_at == user.tier_expires_at + timedelta(days=30)


async def test_admin_refund_returns_the_user_to_free_once(h: Harness) -> None:
    await h.start(ALICE)
    await h.start(ADMIN)
    invoice = await buy(h, ALICE, Tier.BASIC)
    outcome, _ = await pay(h, ALICE, invoice["message_id"])
    charge = outcome["telegram_payment_charge_id"]
    user = await h.deps.users.get(ALICE)
    assert user is not None and user.tier is Tier.BASIC and user.tier_expires_at is not None

    # not an admin: refused like the other /admin subcommands
    await h.send(BOB, "/start")
    await h.send(BOB, f"/admin refund {charge}")
    assert await h.requests("refundStarPayment") == []

    await h.deps.users.update_preferences(ALICE, language="ru")  # the notice is in her language
    await h.send(ADMIN, f"/admin refund {charge}")
    calls = await h.requests("refundStarPayment")
    assert len(calls) == 1 and calls[0]["status"] == 200
    assert int(calls[0]["params"]["user_id"]) == ALICE
    assert calls[0]["params"]["telegram_payment_charge_id"] == charge
    assert "Refunded 250 ⭐" in (await h.texts(ADMIN))[-1]
    user = await h.deps.users.get(ALICE)
    assert user is not None and user.tier is Tier.FREE and user.tier_expires_at is None
    assert "возвращён" in (await h.texts(ALICE))[-1]
    assert [r["event"] for r in h.events.rows("payments")] == ["paid", "refunded"]
    assert any(
        r["action"] == "/admin" and r["detail"].startswith(f"refund {charge}") for r in h.events.rows("audit")
    )
    # the refunded_payment message Telegram then posts changes nothing more
    await pump(h, asyncio.create_task(asyncio.sleep(0)))
    assert [r["event"] for r in h.events.rows("payments")] == ["paid", "refunded"]

    # a second refund is refused clearly, without asking Telegram again
    await h.send(ADMIN, f"/admin refund {charge}")
    assert "already refunded" in (await h.texts(ADMIN))[-1]
    assert len(await h.requests("refundStarPayment")) == 1
    await h.send(ADMIN, "/admin refund stxunknown")
    assert "No payment with charge id" in (await h.texts(ADMIN))[-1]
    await h.send(ADMIN, "/admin refund")
    assert "/admin refund" in (await h.texts(ADMIN))[-1]
    payment = await RedisPaymentStore(h.deps.users).get(charge)
    assert payment is not None and payment.refunded


async def test_pre_checkout_refuses_forged_and_stale_invoices(h: Harness) -> None:
    await h.start(ALICE)
    # an invoice whose payload is not ours (altered price): refused at pre-checkout
    forged = await h.bot.send_invoice(
        ALICE,
        title="arbflow Premium",
        description="cheap",
        payload="t1.premium.30.1.100001.abc.0123456789abcdef0123456789abcdef",
        currency="XTR",
        prices=[LabeledPrice(label="Premium", amount=1)],
        provider_token="",
    )
    outcome, _ = await pay(h, ALICE, forged.message_id)
    assert outcome["status"] == "declined" and "not valid" in outcome["error_message"]
    user = await h.deps.users.get(ALICE)
    assert user is not None and user.tier is Tier.FREE
    assert h.events.rows("payments") == []
    checkout = [r for r in h.events.rows("audit") if r["action"] == "pay:checkout"]
    assert [(r["ok"], r["detail"]) for r in checkout] == [(False, "bad_payload")]

    # a real invoice whose price changed before it was paid
    invoice = await buy(h, ALICE, Tier.BASIC)
    h.deps.settings.distribution.prices = {"basic": {"stars": 300}}
    outcome, _ = await pay(h, ALICE, invoice["message_id"])
    assert outcome["status"] == "declined" and "price" in outcome["error_message"]
    # another user paying Alice's invoice
    h.deps.settings.distribution.prices = {}
    outcome, _ = await pay(h, BOB, invoice["message_id"], chat_id=ALICE)
    assert outcome["status"] == "declined"
    assert [r["detail"] for r in h.events.rows("audit") if r["action"] == "pay:checkout"][-2:] == [
        "price_changed",
        "other_user",
    ]
    # the same invoice at today's price again: accepted
    outcome, _ = await pay(h, ALICE, invoice["message_id"])
    assert outcome["status"] == "paid"


async def test_expiry_sweep_returns_the_user_to_free_with_a_notice(h: Harness) -> None:
    await h.start(ALICE)
    invoice = await buy(h, ALICE, Tier.PREMIUM)
    outcome, _ = await pay(h, ALICE, invoice["message_id"])
    assert outcome["status"] == "paid"
    store = RedisPaymentStore(h.deps.users)

    async def notify(chat_id: int, text: str) -> None:
        await h.bot.send_message(chat_id, text)

    # the distribution engine's directory sees the tier through the users' change stream
    directory = UserDirectory(h.deps.settings, h.deps.users.client, prefix=h.deps.users.prefix)
    await directory.load(h.clock())

    def tier_in_directory() -> str:
        idx = directory.row_of(ALICE)
        assert idx is not None
        return str(directory.frame.row(idx, named=True)["tier"])

    assert tier_in_directory() == "premium"
    assert await expire_paid_tiers(store, h.deps.emit, notify, h.clock() + timedelta(days=29)) == 0
    later = h.clock() + timedelta(days=30, seconds=1)
    assert await expire_paid_tiers(store, h.deps.emit, notify, later) == 1
    await directory.refresh(h.clock())
    assert tier_in_directory() == "free"
    user = await h.deps.users.get(ALICE)
    assert user is not None and user.tier is Tier.FREE and user.tier_expires_at is None
    assert "period ended" in (await h.texts(ALICE))[-1]
    assert [r["event"] for r in h.events.rows("payments")] == ["paid", "expired"]
    assert await expire_paid_tiers(store, h.deps.emit, notify, later) == 0  # once


async def test_a_user_record_written_before_paid_tiers_reads(h: Harness) -> None:
    await h.start(ALICE)
    key = h.deps.users._key(ALICE)
    assert await h.deps.client.hdel(key, "tier_expires_at") == 1  # type: ignore[union-attr]
    await h.deps.client.hset(key, "tier", json.dumps("basic"))  # type: ignore[union-attr]
    user = await h.deps.users.get(ALICE)
    assert isinstance(user, User) and user.tier is Tier.BASIC and user.tier_expires_at is None
    await h.send(ALICE, "/subscription")
    screen = await h.last(ALICE)
    assert "Your tier: Basic" in screen["text"] and "Paid until" not in screen["text"]
    # an admin's Basic does not expire: the sweep leaves it alone
    assert await expire_paid_tiers(RedisPaymentStore(h.deps.users), h.deps.emit, None, h.clock()) == 0


async def test_a_throttled_user_still_pays(h: Harness) -> None:
    """The per-user throttle never drops a checkout or a payment (money is never refused)."""
    await h.start(ALICE)
    invoice = await buy(h, ALICE, Tier.BASIC)
    h.sb.sandbox.payments.checkout_timeout_s = 2.0
    h.throttle_time[1] = 0.0  # the throttle's clock stops: the bucket does not refill
    for _ in range(12):
        await h.send(ALICE, "/status")
    assert any("slow down" in t.lower() for t in await h.texts(ALICE))
    outcome, _ = await pay(h, ALICE, invoice["message_id"])
    assert outcome["status"] == "paid", outcome
    user = await h.deps.users.get(ALICE)
    assert user is not None and user.tier is Tier.BASIC


async def test_a_payment_after_the_session_expired_is_recorded(h: Harness) -> None:
    """The session gate lets payments through: an invoice paid after the session expired
    still sets the tier (the user paid; no session is needed to take their money into account)."""
    await h.start(ALICE)
    invoice = await buy(h, ALICE, Tier.PREMIUM)
    h.clock.advance(timedelta(days=8))
    assert await h.deps.sessions.get_active(ALICE, h.clock()) is None
    outcome, _ = await pay(h, ALICE, invoice["message_id"])
    assert outcome["status"] == "paid", outcome
    user = await h.deps.users.get(ALICE)
    assert user is not None and user.tier is Tier.PREMIUM
    assert user.tier_expires_at == h.clock() + timedelta(days=30)
    assert "Thank you" in (await h.texts(ALICE))[-1]
