"""Tiers for sale in Telegram Stars: prices, invoice payloads, paid periods.

Pure (no I/O; ``now`` and the signing key are passed in). The bot sends an invoice per
purchasable tier (``bot.routers.subscription``), checks it at pre-checkout and applies it
on ``successful_payment`` (``bot.payments``); the monitor's sweep ends paid periods.

Decisions:

- **Currency** is Telegram Stars (``XTR``) only: digital goods are paid in Stars, an
  invoice has one price, amounts are whole Stars.
- **Prices** (``ARBFLOW_DISTRIBUTION__PRICES``, JSON like the tiers override) are per tier:
  ``{"premium": {"stars": 900, "days": 30}}`` overrides fields of :data:`DEFAULT_PRICES`;
  ``{"enterprise": null}`` (or ``"stars": 0``) takes a tier off sale. Free and SuperAdmin
  are never for sale.
- **What a user may buy**: a tier above their current one, or their current tier again
  while it is a paid period (to extend it). A tier set by an admin without an expiry is
  not extended by buying it again, and nobody buys a tier below theirs.
- **Paying again while paid extends from the current expiry** (whichever paid tier is
  bought): the new period starts where the running one ends, so no paid day is lost.
- **Payload** (1-128 bytes, Telegram's limit): ``t1.<tier>.<days>.<stars>.<user id>.<nonce>.<sig>``,
  ``sig`` an HMAC-SHA256 (16 bytes, hex) of the rest under a key derived from the
  secret key. A payload that does not verify, names another user, or no longer matches
  the tier's price is refused at pre-checkout.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.accounts import Tier

CURRENCY = "XTR"
PAYLOAD_VERSION = "t1"
MAX_PAYLOAD_BYTES = 128
NOT_FOR_SALE: frozenset[Tier] = frozenset({Tier.FREE, Tier.SUPERADMIN})


class TierPrice(BaseModel):
    """One tier's price in Stars for ``days`` days."""

    model_config = ConfigDict(frozen=True)

    tier: Tier
    stars: int = Field(gt=0, le=100_000)
    days: int = Field(gt=0, le=3660)

    @property
    def period(self) -> timedelta:
        return timedelta(days=self.days)


DEFAULT_PRICES: Mapping[Tier, TierPrice] = {
    Tier.BASIC: TierPrice(tier=Tier.BASIC, stars=250, days=30),
    Tier.PREMIUM: TierPrice(tier=Tier.PREMIUM, stars=1000, days=30),
    Tier.ENTERPRISE: TierPrice(tier=Tier.ENTERPRISE, stars=5000, days=30),
}


def tier_prices(overrides: Mapping[str, Mapping[str, Any] | None] | None = None) -> dict[Tier, TierPrice]:
    """:data:`DEFAULT_PRICES` with per-tier overrides; ``None`` or ``stars: 0`` = not for sale.

    ``ValueError`` for Free/SuperAdmin, an unknown tier, or a bad field."""
    table = dict(DEFAULT_PRICES)
    for name, fields in (overrides or {}).items():
        tier = Tier(name)
        if tier in NOT_FOR_SALE:
            raise ValueError(f"the {tier.value} tier is not for sale")
        if fields is None or fields.get("stars") == 0:
            table.pop(tier, None)
            continue
        base = table[tier].model_dump() if tier in table else {"days": 30}
        table[tier] = TierPrice.model_validate({**base, **fields, "tier": tier})
    return dict(sorted(table.items(), key=lambda kv: kv[0].rank))


def purchasable(
    prices: Mapping[Tier, TierPrice], current: Tier, paid_until: datetime | None, now: datetime
) -> list[TierPrice]:
    """What a user on ``current`` may buy now: higher tiers, and ``current`` while paid."""
    paid = paid_until is not None and paid_until > now
    return [p for t, p in prices.items() if t > current or (t == current and paid)]


def new_expiry(paid_until: datetime | None, now: datetime, price: TierPrice) -> datetime:
    """The end of the period just paid: from the running paid period's end, else from now."""
    start = paid_until if paid_until is not None and paid_until > now else now
    return start + price.period


# -- payloads ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvoicePayload:
    tier: Tier
    days: int
    stars: int
    user_id: int
    nonce: str


class PayloadError(ValueError):
    """A payload that is not ours, was altered, or is malformed."""


def _sig(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:32]


def encode_payload(price: TierPrice, user_id: int, nonce: str, key: bytes) -> str:
    if not nonce.isalnum():
        raise ValueError("the nonce is alphanumeric")
    body = f"{PAYLOAD_VERSION}.{price.tier.value}.{price.days}.{price.stars}.{user_id}.{nonce}"
    out = f"{body}.{_sig(key, body)}"
    if len(out.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError("payload over 128 bytes")
    return out


def decode_payload(payload: str, key: bytes) -> InvoicePayload:
    """The payload's fields when its signature verifies, else :class:`PayloadError`."""
    parts = payload.split(".")
    if len(parts) != 7 or parts[0] != PAYLOAD_VERSION:
        raise PayloadError("not an arbflow invoice payload")
    body, sig = ".".join(parts[:6]), parts[6]
    if not hmac.compare_digest(_sig(key, body), sig):
        raise PayloadError("bad signature")
    try:
        return InvoicePayload(Tier(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]), parts[5])
    except ValueError as exc:
        raise PayloadError(f"malformed payload: {exc}") from exc


def check_purchase(
    payload: InvoicePayload,
    *,
    payer_id: int,
    currency: str,
    total_amount: int,
    prices: Mapping[Tier, TierPrice],
) -> str | None:
    """Why a verified payload cannot be paid now (a short reason), or None when it can."""
    if payload.user_id != payer_id:
        return "other_user"
    if currency != CURRENCY:
        return "currency"
    price = prices.get(payload.tier)
    if price is None:
        return "not_for_sale"
    if (price.stars, price.days) != (payload.stars, payload.days) or total_amount != price.stars:
        return "price_changed"
    return None


__all__ = [
    "CURRENCY",
    "DEFAULT_PRICES",
    "NOT_FOR_SALE",
    "InvoicePayload",
    "PayloadError",
    "TierPrice",
    "check_purchase",
    "decode_payload",
    "encode_payload",
    "new_expiry",
    "purchasable",
    "tier_prices",
]
