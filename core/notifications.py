"""What a push carries, and how sending it ended: pure data, no I/O.

- :class:`Notification`: one opportunity as a user is told about it, built from an
  opportunity event as ``pipeline.opportunities`` writes it (a lake row) or as
  ``core.lifecycle`` serialises it (``OpenOpportunity.to_dict``): :meth:`Notification.from_event`.
- :class:`Digest`: several notifications for one chat sent as one message, ordered like
  the user queues (high priority first, newest first within a priority); one opportunity
  appears once (its newest state).
- :func:`leg_groups` / :func:`payload_of`: the same symbol's spread (or funding carry) from
  several buy venues to one sell venue, or one buy venue to several sell venues, due
  together for one chat, is one push listing the legs ranked by net (a :class:`Digest`
  whose items are :func:`by_net`; ``notify.texts.grouped_push_message`` renders it).
- :class:`SendOutcome` / :class:`SendResult`: how one ``sendMessage`` ended, as the
  notifier reports it (it never raises for a Telegram answer).

Rates are floats (basis points, as ``core.lifecycle.Candidate`` holds them); NaN is kept
as NaN and rendered "n/a". Datetimes are UTC-aware.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from core.experiments import Layout
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
    executable_usd: float | None = None
    """Spot: the size that trades at this edge (the depth the book has); funding: the notional."""
    buy_vwap: float | None = None
    """Spot: the average buy price over the notional (the ask side's VWAP)."""
    sell_vwap: float | None = None
    buy_fee: float | None = None
    """Spot: each venue's taker fee (fraction, ``0.001`` = 0.10 %)."""
    sell_fee: float | None = None
    long_rate: float | None = None
    """Funding: the long leg's rate per its own interval (fraction)."""
    long_interval_hours: float | None = None
    short_rate: float | None = None
    short_interval_hours: float | None = None
    next_funding: datetime | None = None
    """Funding: the earlier of the two legs' next funding times."""
    signal: str | None = None
    """Technical: the rule that fired (``rsi_oversold``, ``macd_cross_up``, ``bb_break_upper`` …)."""
    timeframe: str | None = None
    indicator: float | None = None
    """Technical: the indicator's value at the bar (RSI, MACD histogram, or the close for a band)."""
    band: float | None = None
    """Technical, Bollinger signals: the band the close broke."""
    hit_rate: float | None = None
    """Technical: how often this signal was right before (fraction), over ``hit_samples``."""
    hit_samples: int | None = None

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
            executable_usd=_opt_num(event.get("executable_usd")),
            buy_vwap=_opt_num(details.get("buy_vwap")),
            sell_vwap=_opt_num(details.get("sell_vwap")),
            buy_fee=_opt_num(details.get("buy_fee")),
            sell_fee=_opt_num(details.get("sell_fee")),
            **_funding_legs(details),
            **_technical(details),
        )

    @property
    def rank(self) -> tuple[int, float]:
        """Queue order: priority (high first), then newest first."""
        return PRIORITY_RANK[self.priority], -self.detected_at.timestamp()


def _per_interval(rate_per_hour: Any, interval_hours: Any) -> float | None:
    rate, hours = _opt_num(rate_per_hour), _opt_num(interval_hours)
    return None if rate is None or hours is None else rate * hours


def _opt_when(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return _when(value)
    except (TypeError, ValueError):
        return None


def _funding_legs(details: Mapping[str, Any]) -> dict[str, Any]:
    """A funding event's legs, from the detector's details (empty for other kinds)."""
    nexts = [t for t in (_opt_when(details.get(k)) for k in ("long_next_funding", "short_next_funding")) if t]
    return {
        "long_rate": _per_interval(details.get("long_rate_per_hour"), details.get("long_interval_hours")),
        "long_interval_hours": _opt_num(details.get("long_interval_hours")),
        "short_rate": _per_interval(details.get("short_rate_per_hour"), details.get("short_interval_hours")),
        "short_interval_hours": _opt_num(details.get("short_interval_hours")),
        "next_funding": min(nexts) if nexts else None,
    }


_INDICATOR_OF = {"rsi": "rsi", "macd": "macd_hist", "bb": "close"}


def _technical(details: Mapping[str, Any]) -> dict[str, Any]:
    """A technical signal's rule, indicator value and past hit rate (empty for other kinds)."""
    signal = str(details["signal"]) if details.get("signal") else None
    family = signal.split("_", 1)[0] if signal else ""
    band = None
    if signal in ("bb_break_upper", "bb_break_lower"):
        band = _opt_num(details.get("bb_upper" if signal.endswith("upper") else "bb_lower"))
    samples = _opt_num(details.get("hit_samples"))
    return {
        "signal": signal,
        "timeframe": str(details["timeframe"]) if details.get("timeframe") else None,
        "indicator": _opt_num(details.get(_INDICATOR_OF[family])) if family in _INDICATOR_OF else None,
        "band": band,
        "hit_rate": _opt_num(details.get("hit_rate")),
        "hit_samples": None if samples is None else int(samples),
    }


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
    layout: Layout = "full"
    """``compact``: one line per item, even for one item (a user's experiment variant,
    :mod:`core.experiments`); ``full``: the usual push, digest or group."""

    def __post_init__(self) -> None:
        if not self.items:
            raise ValueError("a digest needs at least one notification")

    @classmethod
    def of(cls, items: Iterable[Notification], *, keep_order: bool = False) -> Digest:
        """``keep_order``: the lines in the order given (ranked by the user's engagement model,
        ``core.personalization``), not by priority and age."""
        newest: dict[str, Notification] = {}
        for n in items:
            seen = newest.get(n.opportunity_id)
            if seen is None or n.detected_at >= seen.detected_at:
                newest[n.opportunity_id] = n
        if keep_order:
            return cls(tuple(newest.values()))
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


# -- legs of one thing a user acts on ---------------------------------------------------------


GROUPABLE = frozenset({OpportunityKind.SPOT_SPREAD, OpportunityKind.FUNDING_RATE})
"""Kinds with two venues (spot: buy/sell; funding: long/short); a technical signal has one."""


def _net_key(n: Notification) -> tuple[bool, float, str]:
    net = n.net_bps
    return (math.isnan(net), -net if not math.isnan(net) else 0.0, n.opportunity_id)


def by_net(notes: Iterable[Notification]) -> tuple[Notification, ...]:
    """Best net first (NaN last; the id breaks ties, so the order is stable)."""
    return tuple(sorted(notes, key=_net_key))


def leg_groups(notes: Iterable[Notification]) -> list[tuple[Notification, ...]]:
    """The notifications that are legs of one thing a user acts on, grouped: the same kind
    (spot spread or funding) and symbol, sharing the sell venue (several places to buy for
    one place to sell; funding: the short leg) or the buy venue (the long leg). Greedy: the
    venue shared by most legs first (sell before buy on a tie), and so on with the rest; a
    leg is in at most one group. Each group is ranked by net (:func:`by_net`); groups come
    best net first. Notifications in no group are not returned; two of the same route (the
    same venues) are never legs of one group."""
    routes: dict[tuple[str, str, str, str], Notification] = {}
    for n in by_net(notes):  # one leg per route (a reopened route has a new id): the best
        if n.kind in GROUPABLE and n.buy_exchange and n.sell_exchange:
            routes.setdefault((str(n.kind), n.symbol, n.buy_exchange, n.sell_exchange), n)
    left = {n.opportunity_id: n for n in routes.values()}
    groups: list[tuple[Notification, ...]] = []
    while len(left) >= 2:
        counts: dict[tuple[str, str, int, str], list[Notification]] = {}
        for n in left.values():
            counts.setdefault((str(n.kind), n.symbol, 0, str(n.sell_exchange)), []).append(n)
            counts.setdefault((str(n.kind), n.symbol, 1, str(n.buy_exchange)), []).append(n)
        _key, legs = min(counts.items(), key=lambda kv: (-len(kv[1]), kv[0][2], kv[0]))
        if len(legs) < 2:
            break
        groups.append(by_net(legs))
        for n in legs:
            del left[n.opportunity_id]
    return sorted(groups, key=lambda g: _net_key(g[0]))


def shared_venue(notes: Sequence[Notification]) -> tuple[str, str] | None:
    """``("sell", venue)`` or ``("buy", venue)`` when every leg shares it (sell first)."""
    if len(notes) < 2:
        return None
    for side in ("sell", "buy"):
        venues = {getattr(n, f"{side}_exchange") for n in notes}
        if len(venues) == 1 and None not in venues:
            return side, str(next(iter(venues)))
    return None


def is_leg_group(notes: Sequence[Notification]) -> bool:
    """All of ``notes`` (two or more) form one group of legs."""
    if len(notes) < 2:
        return False
    groups = leg_groups(notes)
    return len(groups) == 1 and len(groups[0]) == len({n.opportunity_id for n in notes})


def payload_of(
    notes: Sequence[Notification], *, layout: Layout = "full", ranked: bool = False
) -> Notification | Digest:
    """What one message to a chat carries: a notification, one group of legs (a
    :class:`Digest` ranked by net, rendered as a grouped push), or a digest. ``compact``:
    always a :class:`Digest` in that layout (one line per item), in the same order.
    ``ranked``: a digest's lines stay in the order given (the queue ranked them by score)."""
    if layout == "compact":
        if len(notes) > 1 and is_leg_group(notes):
            ordered = by_net(notes)
        else:
            ordered = Digest.of(notes, keep_order=ranked).items
        return Digest(tuple(ordered), layout="compact")
    if len(notes) == 1:
        return notes[0]
    if is_leg_group(notes):
        return Digest(by_net(notes))
    return Digest.of(notes, keep_order=ranked)


__all__ = [
    "GROUPABLE",
    "PRIORITY_RANK",
    "Digest",
    "Notification",
    "SendOutcome",
    "SendResult",
    "by_net",
    "is_leg_group",
    "leg_groups",
    "payload_of",
    "shared_venue",
]
