"""Tiers paid in Telegram Stars: /subscription, invoices, payments, refunds, expiry."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from core.accounts import Tier, TierPolicy
from core.payments import TierPrice
from notify.i18n import _

if TYPE_CHECKING:
    pass
from notify.texts.account import tier_line
from notify.texts.base import esc, fmt_dt, fmt_duration, tier_label

# -- payments ---------------------------------------------------------------------------------
# Tiers paid in Telegram Stars (bot.routers.subscription, bot.payments, the monitor's sweep).


def fmt_stars(price: TierPrice) -> str:
    return _("{stars} ⭐ for {days} days").format(stars=price.stars, days=price.days)


def subscription_screen(
    tiers: Mapping[Tier, TierPolicy],
    prices: Mapping[Tier, TierPrice],
    current: Tier,
    paid_until: datetime | None,
    tz: str,
    now: datetime,
    buyable: Sequence[TierPrice],
) -> str:
    """``/subscription``: the tiers with their limits and prices, and how to upgrade."""
    lines = [_("<b>Your tier: {tier}</b>").format(tier=tier_label(current))]
    if paid_until is not None and paid_until > now:
        lines.append(
            _("Paid until {date} (in {left}); paying again extends it from then.").format(
                date=fmt_dt(paid_until, tz), left=fmt_duration(paid_until - now)
            )
        )
    lines.append("")
    for tier in Tier:
        if tier is Tier.SUPERADMIN:
            continue
        price = prices.get(tier)
        cost = (
            _("free") if tier is Tier.FREE else fmt_stars(price) if price is not None else _("not for sale")
        )
        mark = _(" ← you") if tier is current else ""
        lines.append(f"• {tier_line(tiers[tier])} — {cost}{mark}")
    lines.append(_("API keys (/apikeys) need Basic or above."))
    lines.append("")
    lines.append(
        _(
            "Quotas count alerts and /opportunities views together; the daily one resets at "
            "midnight in your time zone (/settings), the hourly one every hour."
        )
    )
    if buyable:
        lines.append(
            _(
                "Pay with Telegram Stars below: the tier applies at once for the period paid, "
                "then you return to Free (you are told)."
            )
        )
    elif current >= Tier.ENTERPRISE:
        lines.append(_("You have the top tier. Thank you!"))
    else:
        lines.append(_("No tier is for sale right now."))
    return "\n".join(lines)


def buy_button(price: TierPrice, current: Tier) -> str:
    if price.tier == current:
        return _("Extend {tier} · {stars} ⭐").format(tier=tier_label(price.tier), stars=price.stars)
    return _("Buy {tier} · {stars} ⭐ / {days} days").format(
        tier=tier_label(price.tier), stars=price.stars, days=price.days
    )


def invoice_title(price: TierPrice) -> str:
    """≤ 32 characters (Telegram's limit for an invoice title)."""
    return _("arbflow {tier}").format(tier=tier_label(price.tier))[:32]


def invoice_description(policy: TierPolicy, price: TierPrice) -> str:
    """≤ 255 characters."""
    return _("{tier} tier for {days} days: {limits}.").format(
        tier=tier_label(price.tier),
        days=price.days,
        limits=re.sub(r"<[^>]+>", "", re.sub(r"^<b>[^<]*</b>:\s*", "", tier_line(policy))),
    )[:255]


def invoice_label(price: TierPrice) -> str:
    return _("{tier}, {days} days").format(tier=tier_label(price.tier), days=price.days)


def invoice_sent() -> str:
    return _("Invoice sent: pay it below.")


def not_for_sale() -> str:
    return _("That tier is not for sale to you now: /subscription shows what is.")


def precheckout_error(reason: str) -> str:
    """The ``error_message`` Telegram shows when a checkout is refused."""
    if reason == "price_changed":
        return _("The price of this tier changed. Open /subscription for a new invoice.")
    if reason == "not_for_sale":
        return _("This tier is no longer for sale. Open /subscription to see what is.")
    if reason == "no_user":
        return _("We do not know you yet. Send /start, then /subscription.")
    if reason == "not_upgrade":
        return _("You already have this tier or a higher one. Open /subscription.")
    return _("This invoice is not valid. Open /subscription for a new one.")


def payment_thanks(tier: Tier, paid_until: datetime, tz: str) -> str:
    return _("⭐ Thank you! You are on <b>{tier}</b> until {date}. /status shows your limits.").format(
        tier=tier_label(tier), date=fmt_dt(paid_until, tz)
    )


def payment_unmatched() -> str:
    return _(
        "We received your payment but could not match it to a tier. An admin will sort it out; "
        "you can also ask for a refund."
    )


def tier_expired(tier: Tier) -> str:
    return _("Your paid <b>{tier}</b> period ended; you are on Free again. /subscription to renew.").format(
        tier=tier_label(tier)
    )


def payment_refunded(stars: int) -> str:
    return _("Your payment of {stars} ⭐ was refunded; you are on Free again.").format(stars=stars)


def admin_refund_usage() -> str:
    return _("<code>/admin refund &lt;telegram_payment_charge_id&gt;</code> — refund a Stars payment")


def admin_refund_unknown(charge_id: str) -> str:
    return _("No payment with charge id <code>{charge}</code>.").format(charge=esc(charge_id))


def admin_refund_already(charge_id: str) -> str:
    return _("Payment <code>{charge}</code> was already refunded.").format(charge=esc(charge_id))


def admin_refund_failed(charge_id: str, error: str) -> str:
    return _("Telegram refused to refund <code>{charge}</code>: {error}").format(
        charge=esc(charge_id), error=esc(error)
    )


def admin_refund_done(charge_id: str, user_id: int, stars: int) -> str:
    return _("Refunded {stars} ⭐ of <code>{charge}</code>; user {user} is on Free again.").format(
        stars=stars, charge=esc(charge_id), user=user_id
    )
