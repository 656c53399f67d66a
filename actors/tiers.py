"""The end of paid periods: the scheduled sweep (``alerts:monitor``, once a minute) that
returns every user whose paid period ended to Free, with lake rows and a notice."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pyarrow as pa

from notify.languages import pick_locale
from state.audit import AUDIT_DATASET, AuditRow, audit_table
from state.payments import PAYMENTS_DATASET, PaymentRow, RedisPaymentStore, payments_table

log = logging.getLogger(__name__)

Emit = Callable[[str, pa.Table], Awaitable[Any]]
Notify = Callable[[int, str], Awaitable[Any]]


async def expire_paid_tiers(
    store: RedisPaymentStore, emit: Emit, notify: Notify | None, now: datetime
) -> int:
    """The scheduled sweep's work (``alerts:monitor``, once a minute): every user whose paid
    period ended goes back to Free, with an ``expired`` payments row, an audit row and a
    notice in their language through ``notify(chat_id, html)`` (a notice that cannot be
    sent is logged: the downgrade stands). Returns how many were returned to Free."""
    expired = await store.sweep_expired(now)
    if not expired:
        return 0
    await emit(
        PAYMENTS_DATASET,
        payments_table(
            [PaymentRow(now, "expired", e.user.id, e.tier.value, paid_until=e.paid_until) for e in expired]
        ),
    )
    await emit(
        AUDIT_DATASET,
        audit_table(
            [AuditRow(now, e.user.id, e.user.id, "pay:expired", True, e.tier.value) for e in expired]
        ),
    )
    if notify is not None:
        from notify import texts  # aiogram's i18n: imported when a notice is written
        from notify.i18n import use_locale

        for e in expired:
            with use_locale(pick_locale(e.user.preferences.language, e.user.language_code)):
                text = texts.tier_expired(e.tier)
            try:
                await notify(e.user.id, text)
            except Exception as exc:  # the user blocked the bot, Telegram away: the downgrade stands
                log.warning("tier expiry notice to %s not sent: %r", e.user.id, exc)
    return len(expired)


__all__ = ["Emit", "Notify", "expire_paid_tiers"]
