"""What a push carries, and how sending it ended: pure data, no I/O.

- :class:`Notification`: one opportunity as a user is told about it, built from an
  opportunity event as ``pipeline.opportunities`` writes it (a lake row) or as
  ``core.lifecycle`` serialises it (``OpenOpportunity.to_dict``): :meth:`Notification.from_event`.
- :class:`Digest`: several notifications for one chat sent as one message, ordered like
  the user queues (high priority first, newest first within a priority); one opportunity
  appears once (its newest state).
- :class:`SendOutcome` / :class:`SendResult`: how one ``sendMessage`` ended, as the
  notifier reports it (it never raises for a Telegram answer).

Rates are floats (basis points, as ``core.lifecycle.Candidate`` holds them); NaN is kept
as NaN and rendered "n/a". Datetimes are UTC-aware.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from core.models import OpportunityKind, Priority

PRIORITY_RANK: Mapping[Priority, int] = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}
"""Sort key of a priority: high first."""


def _num(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    return float(value)  # Decimal and numeric strings too


def _opt_num(value: Any) -> float | None:
    number = _num(value)
    return None if math.isnan(number) else number


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float):  # epoch milliseconds (a lake timestamp as int)
        moment = datetime.fromtimestamp(float(value) / 1000.0, UTC)
    else:
        moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError("detected_at must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Notification:
    """One opportunity, as pushed. ``buy_exchange``/``sell_exchange``: funding — the long and
    short legs; technical — the exchange when long / when short (the other is None)."""

    opportunity_id: str
    kind: OpportunityKind
    symbol: str
    buy_exchange: str | None
    sell_exchange: str | None
    net_bps: float
    gross_bps: float
    gross_apr: float | None
    notional_usd: float
    confidence: float
    priority: Priority
    detected_at: datetime
    net_apr: float | None = None
    """Funding: the net return a year (fraction); None for the other kinds or when unknown."""
    horizon_hours: float | None = None
    """Funding: the horizon ``net_bps``/``gross_bps`` are a return over; None when unknown."""
    transfer_network: str | None = None
    """Spot: the network the asset moves on (``core.transfers``); None when not checked."""
    transfer_bps: float | None = None
    """Spot: that network's withdrawal fee in bps (already subtracted from ``net_bps``)."""
    transfer_unknown: bool = False
    """Spot: a venue does not say whether the asset can be withdrawn/deposited."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OpportunityKind(self.kind))
        object.__setattr__(self, "priority", Priority(self.priority))
        object.__setattr__(self, "detected_at", _when(self.detected_at))
        if not self.opportunity_id:
            raise ValueError("a notification needs an opportunity_id")
        if self.buy_exchange is None and self.sell_exchange is None:
            raise ValueError("a notification needs a buy or a sell exchange")

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Notification:
        """From an opportunity event: a lake row of ``opportunities`` or a lifecycle dict.

        ``detected_at`` may be a datetime, an ISO 8601 string or epoch milliseconds;
        missing numbers become NaN (``gross_apr``: None); exchanges may be empty strings.
        Raises ``KeyError``/``ValueError`` for an event without id, kind, symbol or time.
        Funding's ``net_apr`` and ``horizon_hours`` come from the event or its ``details``.
        """
        details: Any = event.get("details") or {}
        if isinstance(details, str):
            try:
                details = json.loads(details)
            except ValueError:
                details = {}
        if not isinstance(details, Mapping):
            details = {}
        return cls(
            opportunity_id=str(event["opportunity_id"]),
            kind=OpportunityKind(event["kind"]),
            symbol=str(event["symbol"]),
            buy_exchange=event.get("buy_exchange") or None,
            sell_exchange=event.get("sell_exchange") or None,
            net_bps=_num(event.get("net_bps")),
            gross_bps=_num(event.get("gross_bps")),
            gross_apr=_opt_num(event.get("gross_apr")),
            notional_usd=_num(event.get("notional_usd")),
            confidence=_num(event.get("confidence")) if event.get("confidence") is not None else 0.0,
            priority=Priority(event.get("priority") or Priority.LOW.value),
            detected_at=_when(event["detected_at"]),
            net_apr=_opt_num(event.get("net_apr", details.get("net_apr"))),
            horizon_hours=_opt_num(event.get("horizon_hours", details.get("horizon_hours"))),
            transfer_network=str(details["transfer_network"]) if details.get("transfer_network") else None,
            transfer_bps=_opt_num(details.get("transfer_bps")),
            transfer_unknown="transfer_unknown" in _flag_list(event.get("flags")),
        )

    @property
    def rank(self) -> tuple[int, float]:
        """Queue order: priority (high first), then newest first."""
        return PRIORITY_RANK[self.priority], -self.detected_at.timestamp()


def _flag_list(flags: Any) -> list[str]:
    """Flags as a list, from a lake row (comma-separated) or a lifecycle dict (a list)."""
    if isinstance(flags, str):
        return [f for f in flags.split(",") if f]
    if isinstance(flags, list | tuple):
        return [str(f) for f in flags]
    return []


@dataclass(frozen=True, slots=True)
class Digest:
    """Several notifications for one chat in one message (at least one).

    Build with :meth:`of`, which orders them (high priority first, newest first within a
    priority) and keeps only the newest state of each opportunity.
    """

    items: tuple[Notification, ...]

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError("a digest needs at least one notification")

    @classmethod
    def of(cls, items: Iterable[Notification]) -> Digest:
        newest: dict[str, Notification] = {}
        for n in items:
            seen = newest.get(n.opportunity_id)
            if seen is None or n.detected_at >= seen.detected_at:
                newest[n.opportunity_id] = n
        return cls(tuple(sorted(newest.values(), key=lambda n: n.rank)))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def top(self) -> Notification:
        """The first (most important) notification."""
        return self.items[0]

    @property
    def opportunity_ids(self) -> tuple[str, ...]:
        return tuple(n.opportunity_id for n in self.items)

    @property
    def priority(self) -> Priority:
        return self.top.priority


class SendOutcome(StrEnum):
    SENT = "sent"
    RETRY_AFTER = "retry_after"
    """429: flood control; ``retry_after_s`` says how long to wait."""
    BLOCKED = "blocked"
    """403: the chat blocked the bot, the user is deactivated, or the bot was removed."""
    TRANSIENT = "transient"
    """5xx, a network error or a timeout: retry with backoff (a timeout may have delivered)."""
    PERMANENT = "permanent"
    """400 and the like: retrying would fail the same way."""


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: SendOutcome
    message_id: int | None = None
    retry_after_s: float | None = None
    error: str = ""
    status_code: int | None = None
    """HTTP status of Telegram's answer; None when there was none (network error, timeout)."""

    @property
    def ok(self) -> bool:
        return self.outcome is SendOutcome.SENT

    @property
    def retryable(self) -> bool:
        return self.outcome in (SendOutcome.RETRY_AFTER, SendOutcome.TRANSIENT)


__all__ = ["PRIORITY_RANK", "Digest", "Notification", "SendOutcome", "SendResult"]
