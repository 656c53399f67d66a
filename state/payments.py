"""Payments in Telegram Stars: records in Redis, rows for the lake, the paid periods' end.

Redis (``p`` = ``prefix + ":"`` when a prefix is given), beside the user records of
:class:`state.users.RedisUserStore` on the same client:

- ``{p}payment:{telegram_payment_charge_id}`` hash: ``user_id``, ``tier``, ``stars``,
  ``days``, ``paid_at_ms``, ``paid_until_ms``, ``status`` (``paid`` | ``refunded``),
  ``refunded_at_ms``, ``provider_charge_id``, ``payload``. Written once per charge id: a
  second delivery of the same ``successful_payment`` finds it and changes nothing.
- ``{p}tiers:by_expiry`` sorted set: user id by the end of their paid period (ms), what
  :meth:`RedisPaymentStore.sweep_expired` walks.

Applying a payment, a refund and an expiry each happen in one MULTI/EXEC under WATCH of
the user's record (and the payment's), so a payment arriving while the sweep runs either
extends the period or starts after the downgrade, never lost in between. The user's
``tier`` and ``tier_expires_at`` change together, with one ``users:changes`` event
(``tier,tier_expires_at``) for the distribution engine's directory.

Lake: the ``payments`` dataset (``analytics/payments/``), one row per ``paid``,
``refunded`` or ``expired`` event (:data:`PAYMENTS`, :func:`payments_table`).

The sweep that sends the expiry notices is ``actors.tiers.expire_paid_tiers``; the
invoice payloads' signing key is the bot's (``bot.payments.payload_key``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from redis.exceptions import WatchError

from core.accounts import Tier, User
from core.errors import StoreUnavailable
from core.payments import CURRENCY, InvoicePayload, new_expiry
from state.redis import as_str, from_ms, redis_errors, to_ms
from state.users import CHANGES_MAXLEN, RedisUserStore, user_from_fields

log = logging.getLogger(__name__)

PAYMENTS_DATASET = "payments"
_TS = pa.timestamp("ms", tz="UTC")
PAYMENTS = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("event", pa.string(), nullable=False),  # paid | refunded | expired
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("tier", pa.string(), nullable=False),
        pa.field("stars", pa.int64(), nullable=False),  # 0 for expired
        pa.field("currency", pa.string(), nullable=False),
        pa.field("days", pa.int64(), nullable=False),
        pa.field("paid_until", _TS),
        pa.field("telegram_payment_charge_id", pa.string(), nullable=False),  # "" for expired
        pa.field("provider_payment_charge_id", pa.string(), nullable=False),
    ]
)
"""Arrow schema of the ``payments`` dataset (``analytics/payments/``)."""


@dataclass(frozen=True, slots=True)
class PaymentRow:
    ts: datetime
    event: str
    user_id: int
    tier: str
    stars: int = 0
    days: int = 0
    paid_until: datetime | None = None
    charge_id: str = ""
    provider_charge_id: str = ""
    currency: str = CURRENCY


def payments_table(rows: Iterable[PaymentRow]) -> pa.Table:
    rows = list(rows)
    return pa.Table.from_pydict(
        {
            "ts": [r.ts.astimezone(UTC) for r in rows],
            "event": [r.event for r in rows],
            "user_id": [r.user_id for r in rows],
            "tier": [r.tier for r in rows],
            "stars": [r.stars for r in rows],
            "currency": [r.currency for r in rows],
            "days": [r.days for r in rows],
            "paid_until": [None if r.paid_until is None else r.paid_until.astimezone(UTC) for r in rows],
            "telegram_payment_charge_id": [r.charge_id for r in rows],
            "provider_payment_charge_id": [r.provider_charge_id for r in rows],
        },
        schema=PAYMENTS,
    )


@dataclass(frozen=True, slots=True)
class Payment:
    charge_id: str
    user_id: int
    tier: Tier
    stars: int
    days: int
    paid_at: datetime
    paid_until: datetime
    status: str
    provider_charge_id: str = ""
    refunded_at: datetime | None = None

    @property
    def refunded(self) -> bool:
        return self.status == "refunded"

    def row(self, event: str, ts: datetime) -> PaymentRow:
        return PaymentRow(
            ts,
            event,
            self.user_id,
            self.tier.value,
            self.stars,
            self.days,
            self.paid_until,
            self.charge_id,
            self.provider_charge_id,
        )


def _payment(charge_id: str, raw: dict[Any, Any]) -> Payment:
    h = {as_str(k): as_str(v) for k, v in raw.items()}
    return Payment(
        charge_id=charge_id,
        user_id=int(h["user_id"]),
        tier=Tier(h["tier"]),
        stars=int(h["stars"]),
        days=int(h["days"]),
        paid_at=from_ms(h["paid_at_ms"]),
        paid_until=from_ms(h["paid_until_ms"]),
        status=h.get("status", "paid"),
        provider_charge_id=h.get("provider_charge_id", ""),
        refunded_at=from_ms(h["refunded_at_ms"]) if h.get("refunded_at_ms") else None,
    )


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`RedisPaymentStore.apply` did: ``new`` False for a repeated delivery."""

    payment: Payment
    new: bool
    user_found: bool


@dataclass(frozen=True, slots=True)
class Expired:
    user: User
    tier: Tier
    paid_until: datetime


def _tier_fields(tier: Tier, until: datetime | None) -> dict[str, str]:
    return {
        "tier": json.dumps(tier.value),
        "tier_expires_at": json.dumps(None if until is None else until.astimezone(UTC).isoformat()),
    }


class RedisPaymentStore:
    """Payments and paid periods; see the module docstring for the keys."""

    ATTEMPTS = 50

    def __init__(self, users: RedisUserStore) -> None:
        self.users = users
        self.client = users.client
        self.p = users.p

    def _key(self, charge_id: str) -> str:
        return f"{self.p}payment:{charge_id}"

    @property
    def expiry_key(self) -> str:
        return f"{self.p}tiers:by_expiry"

    async def get(self, charge_id: str) -> Payment | None:
        with redis_errors(f"reading payment {charge_id}"):
            raw = await self.client.hgetall(self._key(charge_id))
        return _payment(charge_id, raw) if raw else None

    async def _retry(self, what: str, attempt: int) -> None:
        if attempt + 1 >= self.ATTEMPTS:
            raise StoreUnavailable(f"redis: {what} kept changing under us ({self.ATTEMPTS} tries)")
        await asyncio.sleep(random.uniform(0, 0.001 * (attempt + 1)))

    async def apply(
        self,
        charge_id: str,
        provider_charge_id: str,
        payload: InvoicePayload,
        stars: int,
        now: datetime,
    ) -> Applied:
        """Record a successful payment and set the tier until the end of the period paid
        (extending a running paid period from its end). Idempotent on ``charge_id``."""
        from core.payments import TierPrice

        price = TierPrice(tier=payload.tier, stars=max(stars, 1), days=payload.days)
        pkey, ukey = self._key(charge_id), self.users._key(payload.user_id)
        with redis_errors(f"applying payment {charge_id}"):
            async with self.client.pipeline(transaction=True) as pipe:
                for attempt in range(self.ATTEMPTS):
                    try:
                        await pipe.watch(pkey, ukey)
                        existing = await pipe.hgetall(pkey)
                        if existing:
                            await pipe.reset()
                            return Applied(_payment(charge_id, existing), False, True)
                        raw = await pipe.hgetall(ukey)
                        user = user_from_fields(raw) if raw else None
                        running = user.tier_expires_at if user is not None else None
                        until = new_expiry(running, now, price)
                        payment = Payment(
                            charge_id,
                            payload.user_id,
                            payload.tier,
                            stars,
                            payload.days,
                            now,
                            until,
                            "paid",
                            provider_charge_id,
                        )
                        pipe.multi()
                        pipe.hset(
                            pkey,
                            mapping={
                                "user_id": str(payload.user_id),
                                "tier": payload.tier.value,
                                "stars": str(stars),
                                "days": str(payload.days),
                                "paid_at_ms": str(to_ms(now)),
                                "paid_until_ms": str(to_ms(until)),
                                "status": "paid",
                                "provider_charge_id": provider_charge_id,
                                "nonce": payload.nonce,
                            },
                        )
                        if user is not None:
                            pipe.hset(ukey, mapping=_tier_fields(payload.tier, until))  # type: ignore[arg-type]
                            pipe.xadd(
                                self.users.changes_key,
                                {"user_id": payload.user_id, "field": "tier,tier_expires_at"},
                                maxlen=CHANGES_MAXLEN,
                            )
                            pipe.zadd(self.expiry_key, {str(payload.user_id): to_ms(until)})
                        await pipe.execute()
                        return Applied(payment, True, user is not None)
                    except WatchError:
                        await self._retry(f"payment {charge_id}", attempt)
        raise AssertionError("unreachable")

    async def mark_refunded(self, charge_id: str, now: datetime) -> tuple[Payment | None, bool]:
        """Mark the payment refunded and return its user to Free (their paid period ends).
        ``(payment, changed)``: ``(None, False)`` unknown, ``(p, False)`` already refunded."""
        pkey = self._key(charge_id)
        with redis_errors(f"refunding payment {charge_id}"):
            async with self.client.pipeline(transaction=True) as pipe:
                for attempt in range(self.ATTEMPTS):
                    try:
                        await pipe.watch(pkey)
                        raw = await pipe.hgetall(pkey)
                        if not raw:
                            await pipe.reset()
                            return None, False
                        payment = _payment(charge_id, raw)
                        if payment.refunded:
                            await pipe.reset()
                            return payment, False
                        ukey = self.users._key(payment.user_id)
                        await pipe.watch(ukey)
                        user_exists = bool(await pipe.exists(ukey))
                        pipe.multi()
                        pipe.hset(pkey, mapping={"status": "refunded", "refunded_at_ms": str(to_ms(now))})
                        if user_exists:
                            pipe.hset(ukey, mapping=_tier_fields(Tier.FREE, None))  # type: ignore[arg-type]
                            pipe.xadd(
                                self.users.changes_key,
                                {"user_id": payment.user_id, "field": "tier,tier_expires_at"},
                                maxlen=CHANGES_MAXLEN,
                            )
                        pipe.zrem(self.expiry_key, str(payment.user_id))
                        await pipe.execute()
                        refunded = replace(payment, status="refunded", refunded_at=now)
                        return refunded, True
                    except WatchError:
                        await self._retry(f"refund {charge_id}", attempt)
        raise AssertionError("unreachable")

    async def sweep_expired(self, now: datetime, *, batch: int = 500) -> list[Expired]:
        """Return every user whose paid period ended by ``now`` to Free; what was ended."""
        with redis_errors("listing paid periods"):
            due = await self.client.zrangebyscore(self.expiry_key, "-inf", to_ms(now), start=0, num=batch)
        out: list[Expired] = []
        for member in due:
            uid = int(as_str(member))  # type: ignore[arg-type]
            ukey = self.users._key(uid)
            with redis_errors(f"ending the paid period of {uid}"):
                async with self.client.pipeline(transaction=True) as pipe:
                    for attempt in range(self.ATTEMPTS):
                        try:
                            await pipe.watch(ukey)
                            raw = await pipe.hgetall(ukey)
                            user = user_from_fields(raw) if raw else None
                            until = user.tier_expires_at if user is not None else None
                            pipe.multi()
                            if user is None or until is None:  # gone, or no longer paid
                                pipe.zrem(self.expiry_key, str(uid))
                            elif until > now:  # extended meanwhile: keep the right score
                                pipe.zadd(self.expiry_key, {str(uid): to_ms(until)})
                            else:
                                pipe.hset(ukey, mapping=_tier_fields(Tier.FREE, None))  # type: ignore[arg-type]
                                pipe.xadd(
                                    self.users.changes_key,
                                    {"user_id": uid, "field": "tier,tier_expires_at"},
                                    maxlen=CHANGES_MAXLEN,
                                )
                                pipe.zrem(self.expiry_key, str(uid))
                            await pipe.execute()
                            if user is not None and until is not None and until <= now:
                                out.append(Expired(user, user.tier, until))
                            break
                        except WatchError:
                            await self._retry(f"expiry of {uid}", attempt)
        return out


__all__ = [
    "PAYMENTS",
    "PAYMENTS_DATASET",
    "Applied",
    "Expired",
    "Payment",
    "PaymentRow",
    "RedisPaymentStore",
    "payments_table",
]
