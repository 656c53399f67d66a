"""Opportunity lifecycle: dedup, opened → updated → closed, cooldown re-open.

The pure heart of an opportunity coordinator (one per exchange pair). No I/O, no
awaits; ``now`` is injected and ids come from an injectable factory.

- **Dedup key** ``(kind, symbol, buy_exchange, sell_exchange)``: funding puts the long
  leg as buy and the short leg as sell; a technical signal puts its exchange on the
  side of its direction (long → buy, short → sell) and ``""`` on the other side.
- **Live**: a candidate is an opportunity while ``net_bps > 0`` and it is not flagged
  ``below_threshold`` (technical signals: not flagged ``below_threshold``). Other
  blocking flags (depth, transfer, collision) keep it tracked with ``pushable=False``.
- **opened**: a live key the tracker does not hold. **updated**: only on a material
  change against the last *emitted* state (so slow drift adds up): ``|Δnet_bps| ≥
  material_bps`` or the executable size changed by ``≥ material_size_frac`` of it, or
  ``pushable`` flipped (distribution must learn that it became pushable or stopped
  being so). **closed**: a held key that has not been live for ``close_after_s``
  (hysteresis; the tracker's default 0 closes on the first tick without it, the system
  sets ``ARBFLOW_OPPORTUNITIES__CLOSE_AFTER_S``); ``lifetime_s = gone_at - opened_at``
  with ``gone_at`` the first tick without it (= ``closed_at`` without hysteresis: the
  wait before closing is not part of its life, so persistence is not inflated by it).
  A final tick (``observe(..., close_after_s=0)`` with nothing live) closes every one.
- **Cooldown**: a key live again within ``cooldown_s`` of its close is the *same*
  opportunity: the tracker emits ``opened`` with the same id, the original
  ``opened_at`` and ``reopened=True``. Per id the events therefore read
  ``opened (updated)* closed`` repeated, never two ``opened`` without a ``closed``
  between, and a consumer that dedups on ``opportunity_id`` does not see a new
  opportunity. ``lifetime_s`` of a later ``closed`` spans from the first opening
  (the whole life of the opportunity, its short gaps included).

Numbers are ``float``: candidates come from the vectorised detector's float64
columns and are only compared here; no money is computed in this module.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

from core.models import (
    UNTRADEABLE_FLAGS,
    FundingOpportunity,
    OpportunityKind,
    Priority,
    RejectReason,
    SpreadOpportunity,
)

if TYPE_CHECKING:
    import polars as pl

OppKey = tuple[str, str, str, str]
"""``(kind, symbol, buy_exchange or "", sell_exchange or "")``."""

_EPS = 1e-9


class EventType(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"
    CLOSED = "closed"


def new_opportunity_id(now: datetime) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix ms of ``now`` + 74 random bits; sorts by time."""
    ms = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    rand = secrets.randbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def jsonable(value: Any) -> Any:
    """``value`` with only JSON types: datetimes → ISO 8601, Decimal → float, NaN/inf → None."""
    if value is None or isinstance(value, bool | int | str):
        return value.value if isinstance(value, Enum) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return jsonable(float(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value.astimezone(UTC)


def _dt(value: str | datetime) -> datetime:
    return _aware(value if isinstance(value, datetime) else datetime.fromisoformat(value))


# --------------------------------------------------------------------------- candidate


@dataclass(frozen=True, slots=True)
class Candidate:
    """One opportunity as detected in one tick (one notional: the best executable one).

    ``executable_usd`` is the size that can really be traded (funding: the notional).
    ``flags`` are ``core.models.RejectReason`` values. ``details`` holds extras
    (VWAPs, depths, next funding times, signal, direction, other notionals), JSON-safe.
    """

    kind: OpportunityKind
    symbol: str
    buy_exchange: str | None
    sell_exchange: str | None
    gross_bps: float
    net_bps: float
    gross_apr: float | None
    notional_usd: float
    executable_usd: float
    confidence: float
    priority: Priority
    pushable: bool
    flags: tuple[str, ...]
    detected_at: datetime
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OpportunityKind(self.kind))
        object.__setattr__(self, "priority", Priority(self.priority))
        object.__setattr__(self, "flags", tuple(str(f) for f in self.flags))
        object.__setattr__(self, "detected_at", _aware(self.detected_at))
        if self.buy_exchange is None and self.sell_exchange is None:
            raise ValueError("a candidate needs a buy or a sell exchange")

    @property
    def key(self) -> OppKey:
        return (self.kind.value, self.symbol, self.buy_exchange or "", self.sell_exchange or "")

    @property
    def flags_csv(self) -> str:
        return ",".join(self.flags)

    @property
    def live(self) -> bool:
        """Still an opportunity (see the module docstring)."""
        if RejectReason.BELOW_THRESHOLD.value in self.flags:
            return False
        return self.kind is OpportunityKind.TECHNICAL or self.net_bps > 0.0

    @property
    def size_usd(self) -> float:
        return self.executable_usd if math.isfinite(self.executable_usd) else self.notional_usd

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (the inverse of :meth:`from_dict`)."""
        return {
            "kind": self.kind.value,
            "symbol": self.symbol,
            "buy_exchange": self.buy_exchange,
            "sell_exchange": self.sell_exchange,
            "gross_bps": jsonable(self.gross_bps),
            "net_bps": jsonable(self.net_bps),
            "gross_apr": jsonable(self.gross_apr),
            "notional_usd": jsonable(self.notional_usd),
            "executable_usd": jsonable(self.executable_usd),
            "confidence": jsonable(self.confidence),
            "priority": self.priority.value,
            "pushable": self.pushable,
            "flags": list(self.flags),
            "detected_at": self.detected_at.isoformat(),
            "details": jsonable(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        def num(name: str, default: float = math.nan) -> float:
            value = data.get(name)
            return default if value is None else float(value)

        apr = data.get("gross_apr")
        flags = data.get("flags") or ()
        return cls(
            kind=OpportunityKind(data["kind"]),
            symbol=data["symbol"],
            buy_exchange=data.get("buy_exchange") or None,
            sell_exchange=data.get("sell_exchange") or None,
            gross_bps=num("gross_bps"),
            net_bps=num("net_bps"),
            gross_apr=None if apr is None else float(apr),
            notional_usd=num("notional_usd"),
            executable_usd=num("executable_usd"),
            confidence=num("confidence", 0.0),
            priority=Priority(data.get("priority", Priority.LOW.value)),
            pushable=bool(data.get("pushable", False)),
            flags=tuple(flags.split(",") if isinstance(flags, str) else flags),
            detected_at=_dt(data["detected_at"]),
            details=dict(data.get("details") or {}),
        )

    @classmethod
    def from_result(
        cls, result: SpreadOpportunity | FundingOpportunity, confidence: float, priority: Priority
    ) -> Candidate:
        """From the scalar evaluators of ``core.spread`` / ``core.funding`` plus a score."""
        flags = tuple(f.value for f in result.flags)
        if isinstance(result, SpreadOpportunity):
            details: dict[str, Any] = {
                "buy_vwap": result.buy_vwap,
                "sell_vwap": result.sell_vwap,
                "buy_depth_usd": result.buy_depth_usd,
                "sell_depth_usd": result.sell_depth_usd,
                "executable_base": result.executable_base,
                "buy_fee": result.buy_fee,
                "sell_fee": result.sell_fee,
            }
            gross_apr, executable = None, float(result.executable_usd)
        else:
            details = {
                "rate_source": result.rate_source,
                "net_apr": result.net_apr,
                "spread_per_day": result.spread_per_day,
                "breakeven_hours": result.breakeven_hours,
                "long_next_funding": result.long_next_funding,
                "short_next_funding": result.short_next_funding,
            }
            gross_apr, executable = float(result.gross_apr), float(result.notional_usd)
        return cls(
            kind=result.kind,
            symbol=result.symbol,
            buy_exchange=result.buy_exchange,
            sell_exchange=result.sell_exchange,
            gross_bps=float(result.gross_bps),
            net_bps=float(result.net_bps),
            gross_apr=gross_apr,
            notional_usd=float(result.notional_usd),
            executable_usd=executable,
            confidence=confidence,
            priority=priority,
            pushable=result.pushable,
            flags=flags,
            detected_at=result.detected_at,
            details=jsonable(details),
        )


_MAIN = (
    "kind",
    "symbol",
    "buy_exchange",
    "sell_exchange",
    "gross_bps",
    "net_bps",
    "gross_apr",
    "notional_usd",
    "executable_usd",
    "confidence",
    "priority",
    "pushable",
    "flags",
    "detected_at",
)
_ALT_FIELDS = ("notional_usd", "gross_bps", "net_bps", "executable_usd", "pushable", "flags")


def candidates_from_frame(df: pl.DataFrame, *, detected_at: datetime | None = None) -> list[Candidate]:
    """``pipeline.detect`` output rows → one :class:`Candidate` per dedup key.

    Takes ``detect_spreads`` / ``detect_funding`` frames, or a technical-signal frame
    with ``exchange`` and ``direction`` (``long``/``short``) instead of the two
    exchange columns. Of several notionals of one key, the kept row is the executable
    one (no ``insufficient_depth`` flag) with the best ``net_bps`` (else the best
    ``net_bps``); the others go to ``details["alternatives"]``. Columns that are not
    :class:`Candidate` fields go to ``details``. ``detected_at``: the tick time; when
    ``None``, the frame's ``detected_at`` column, else the newer leg (``buy_ts``,
    ``sell_ts``). The selection is vectorised; one object is built per kept key.
    """
    import polars as pl

    if df.height == 0:
        return []
    frame = df
    if "buy_exchange" not in frame.columns:
        if not {"exchange", "direction"} <= set(frame.columns):
            raise ValueError("a candidate frame needs buy_exchange/sell_exchange or exchange/direction")
        direction = pl.col("direction").str.to_lowercase()
        frame = frame.with_columns(
            buy_exchange=pl.when(direction == "long").then(pl.col("exchange")),
            sell_exchange=pl.when(direction == "short").then(pl.col("exchange")),
        )
    defaults: dict[str, pl.Expr] = {
        "kind": pl.lit(OpportunityKind.TECHNICAL.value),
        "sell_exchange": pl.lit(None, pl.String),
        "gross_bps": pl.lit(0.0),
        "net_bps": pl.lit(0.0),
        "gross_apr": pl.lit(None, pl.Float64),
        "notional_usd": pl.lit(math.nan),
        "confidence": pl.lit(0.0),
        "priority": pl.lit(Priority.LOW.value),
        "pushable": pl.lit(True),
        "flags": pl.lit(""),
    }
    frame = frame.with_columns(**{name: expr for name, expr in defaults.items() if name not in frame.columns})
    if "executable_usd" not in frame.columns:
        frame = frame.with_columns(executable_usd=pl.col("notional_usd"))
    if detected_at is not None:
        frame = frame.with_columns(detected_at=pl.lit(_aware(detected_at)))
    elif "detected_at" not in frame.columns:
        legs = [c for c in ("buy_ts", "sell_ts", "ts") if c in frame.columns]
        if not legs:
            raise ValueError("no detected_at given and no detected_at/buy_ts/sell_ts/ts column")
        frame = frame.with_columns(detected_at=pl.max_horizontal(legs))

    keys = ["_k", "symbol", "_b", "_s"]
    ranked = (
        frame.with_columns(
            _k=pl.col("kind"),
            _b=pl.col("buy_exchange").fill_null(""),
            _s=pl.col("sell_exchange").fill_null(""),
            _exec=~pl.col("flags").fill_null("").str.contains(RejectReason.INSUFFICIENT_DEPTH.value),
        )
        .sort(
            [*keys, "_exec", "net_bps"], descending=[False, False, False, False, True, True], nulls_last=True
        )
        .with_columns(_n=pl.int_range(pl.len()).over(keys))
    )
    best = ranked.filter(pl.col("_n") == 0)
    rest = ranked.filter(pl.col("_n") > 0)
    if rest.height:
        alts = rest.group_by(keys, maintain_order=True).agg(
            alternatives=pl.struct([c for c in _ALT_FIELDS if c in rest.columns])
        )
        best = best.join(alts, on=keys, how="left")
    extra = [c for c in best.columns if c not in _MAIN and not c.startswith("_")]
    out = []
    for row in best.select(*_MAIN, *extra).iter_rows(named=True):
        details = {name: row[name] for name in extra if row[name] is not None}
        apr = row["gross_apr"]
        out.append(
            Candidate(
                kind=OpportunityKind(row["kind"]),
                symbol=row["symbol"],
                buy_exchange=row["buy_exchange"],
                sell_exchange=row["sell_exchange"],
                gross_bps=_float(row["gross_bps"]),
                net_bps=_float(row["net_bps"]),
                gross_apr=None if apr is None else float(apr),
                notional_usd=_float(row["notional_usd"]),
                executable_usd=_float(row["executable_usd"]),
                confidence=_float(row["confidence"], 0.0),
                priority=Priority(row["priority"]),
                pushable=bool(row["pushable"]),
                flags=tuple(f for f in (row["flags"] or "").split(",") if f),
                detected_at=row["detected_at"],
                details=jsonable(details),
            )
        )
    return out


def _float(value: Any, default: float = math.nan) -> float:
    return default if value is None else float(value)


# --------------------------------------------------------------------------- events and state


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One row of the ``opportunities`` dataset.

    ``candidate`` is the state the event reports (``closed``: the last live state
    seen). ``at`` is the tick time the event was decided at (``detected_at`` in the lake).
    """

    event: EventType
    opportunity_id: str
    candidate: Candidate
    at: datetime
    opened_at: datetime
    lifetime_s: float | None = None
    reopened: bool = False

    @property
    def key(self) -> OppKey:
        return self.candidate.key


@dataclass(frozen=True, slots=True)
class OpenOpportunity:
    """An open opportunity as the tracker (and Redis) hold it: its last emitted state."""

    opportunity_id: str
    candidate: Candidate
    opened_at: datetime
    updated_at: datetime
    reopened: bool = False
    seen_at: datetime | None = None
    """When a coordinator last saw it live (wall clock); None in records of older releases."""

    @property
    def key(self) -> OppKey:
        return self.candidate.key

    @property
    def last_seen(self) -> datetime:
        """``seen_at``, else (a record of an older release) ``updated_at``."""
        return self.seen_at or self.updated_at

    def to_dict(self) -> dict[str, Any]:
        out = {
            "opportunity_id": self.opportunity_id,
            **self.candidate.to_dict(),
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "reopened": self.reopened,
        }
        if self.seen_at is not None:
            out["seen_at"] = self.seen_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpenOpportunity:
        seen = data.get("seen_at")
        return cls(
            opportunity_id=str(data["opportunity_id"]),
            candidate=Candidate.from_dict(data),
            opened_at=_dt(data["opened_at"]),
            updated_at=_dt(data.get("updated_at") or data["opened_at"]),
            reopened=bool(data.get("reopened", False)),
            seen_at=_dt(seen) if seen else None,
        )


@dataclass(frozen=True, slots=True)
class ClosedOpportunity:
    """A closed opportunity kept for the cooldown (so a re-open keeps its id)."""

    opportunity_id: str
    candidate: Candidate
    opened_at: datetime
    closed_at: datetime

    @property
    def key(self) -> OppKey:
        return self.candidate.key

    def to_dict(self) -> dict[str, Any]:
        return {
            "opportunity_id": self.opportunity_id,
            **self.candidate.to_dict(),
            "opened_at": self.opened_at.isoformat(),
            "closed_at": self.closed_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClosedOpportunity:
        return cls(
            opportunity_id=str(data["opportunity_id"]),
            candidate=Candidate.from_dict(data),
            opened_at=_dt(data["opened_at"]),
            closed_at=_dt(data["closed_at"]),
        )


@dataclass(slots=True)
class _Open:
    opportunity_id: str
    opened_at: datetime
    emitted: Candidate
    updated_at: datetime
    last: Candidate
    last_live: datetime
    reopened: bool = False
    gone_at: datetime | None = None
    """The first tick it was not live since it last was (its lifetime ends there)."""


def _blocked(c: Candidate) -> bool:
    return any(f in UNTRADEABLE_FLAGS for f in c.flags)


def is_material(
    prev: Candidate, new: Candidate, material_bps: float = 5.0, material_size_frac: float = 0.20
) -> bool:
    """Whether ``new`` differs materially from ``prev`` (the last emitted state).

    An opportunity that cannot be pushed either way (a probable ticker collision, a
    closed transfer…) changes materially only when its flags change: its edge is not
    actionable, and a collision's thousands of bps move by more than 5 bps every tick.
    """
    if prev.pushable != new.pushable:
        return True
    if not prev.pushable and not new.pushable and _blocked(prev) and _blocked(new):
        return set(prev.flags) != set(new.flags)
    if math.isfinite(prev.net_bps) and math.isfinite(new.net_bps):
        if abs(new.net_bps - prev.net_bps) >= material_bps - _EPS:
            return True
    elif math.isfinite(prev.net_bps) != math.isfinite(new.net_bps):
        return True
    old, size = prev.size_usd, new.size_usd
    if not (math.isfinite(old) and math.isfinite(size)):
        return math.isfinite(old) != math.isfinite(size)
    if old > 0:
        return abs(size - old) / old >= material_size_frac - _EPS
    return size > 0


class OpportunityTracker:
    """Dedup and lifecycle of the opportunities of one coordinator (see the module docstring).

    ``observe`` gets *everything* detected for this tracker's keys in one tick; a held
    key missing from it (or no longer live) closes once it has not been live for
    ``close_after_s``. ``kinds`` limits which held keys a tick speaks for (a funding
    tick does not close spot spreads).
    """

    def __init__(
        self,
        material_bps: float = 5.0,
        material_size_frac: float = 0.20,
        cooldown_s: float = 60.0,
        close_after_s: float = 0.0,
        *,
        id_factory: Callable[[datetime], str] = new_opportunity_id,
    ) -> None:
        if material_bps < 0 or material_size_frac < 0 or cooldown_s < 0 or close_after_s < 0:
            raise ValueError("thresholds and durations must be non-negative")
        self.material_bps = material_bps
        self.material_size_frac = material_size_frac
        self.cooldown_s = cooldown_s
        self.close_after_s = close_after_s
        self._new_id = id_factory
        self._open: dict[OppKey, _Open] = {}
        self._closed: dict[OppKey, ClosedOpportunity] = {}

    def __len__(self) -> int:
        return len(self._open)

    def observe(
        self,
        candidates: Iterable[Candidate],
        now: datetime,
        *,
        kinds: Collection[OpportunityKind | str] | None = None,
        close_after_s: float | None = None,
    ) -> list[LifecycleEvent]:
        """Advance by one tick; return the events it causes (opened/updated first, then closed).

        ``close_after_s`` overrides the hysteresis for this tick (0 with no candidates: a
        final tick that closes everything held, as on a clean stop).
        """
        now = _aware(now)
        close_after = self.close_after_s if close_after_s is None else close_after_s
        self._expire(now)
        live: dict[OppKey, Candidate] = {}
        for cand in candidates:
            if not cand.live:
                continue
            seen = live.get(cand.key)
            if seen is None or cand.net_bps > seen.net_bps:
                live[cand.key] = cand
        events: list[LifecycleEvent] = []
        for key, cand in live.items():
            state = self._open.get(key)
            if state is not None:
                state.last, state.last_live, state.gone_at = cand, now, None
                if is_material(state.emitted, cand, self.material_bps, self.material_size_frac):
                    state.emitted, state.updated_at = cand, now
                    events.append(self._event(EventType.UPDATED, state, cand, now))
                continue
            closed = self._closed.pop(key, None)
            if closed is not None:
                state = _Open(closed.opportunity_id, closed.opened_at, cand, now, cand, now, reopened=True)
            else:
                state = _Open(self._new_id(now), now, cand, now, cand, now)
            self._open[key] = state
            events.append(self._event(EventType.OPENED, state, cand, now))
        scope = None if kinds is None else {OpportunityKind(k).value for k in kinds}
        absent = [key for key in self._open if key not in live and (scope is None or key[0] in scope)]
        for key in absent:
            if self._open[key].gone_at is None:
                self._open[key].gone_at = now
        gone = [key for key in absent if (now - self._open[key].last_live).total_seconds() >= close_after]
        for key in sorted(gone):
            state = self._open.pop(key)
            ended = state.gone_at or now  # the hysteresis wait is not part of its life
            lifetime = max(0.0, (ended - state.opened_at).total_seconds())
            events.append(self._event(EventType.CLOSED, state, state.last, now, lifetime))
            if self.cooldown_s > 0:
                self._closed[key] = ClosedOpportunity(state.opportunity_id, state.last, state.opened_at, now)
        return events

    @staticmethod
    def _event(
        kind: EventType, state: _Open, cand: Candidate, now: datetime, lifetime: float | None = None
    ) -> LifecycleEvent:
        return LifecycleEvent(
            event=kind,
            opportunity_id=state.opportunity_id,
            candidate=cand,
            at=now,
            opened_at=state.opened_at,
            lifetime_s=lifetime,
            reopened=state.reopened,
        )

    def _expire(self, now: datetime) -> None:
        for key in [
            k for k, c in self._closed.items() if (now - c.closed_at).total_seconds() > self.cooldown_s
        ]:
            del self._closed[key]

    # -- restart -------------------------------------------------------------------
    def snapshot(self) -> list[OpenOpportunity]:
        """The open opportunities, each with its last emitted state (what Redis holds)."""
        return [
            OpenOpportunity(s.opportunity_id, s.emitted, s.opened_at, s.updated_at, s.reopened)
            for s in self._open.values()
        ]

    def recently_closed(self) -> list[ClosedOpportunity]:
        return list(self._closed.values())

    def live_ids(self, now: datetime) -> list[str]:
        """Ids of the open opportunities that were live in the tick at ``now``."""
        now = _aware(now)
        return [s.opportunity_id for s in self._open.values() if s.last_live == now]

    def restore(
        self,
        open_opps: Iterable[OpenOpportunity],
        recently_closed: Iterable[ClosedOpportunity] = (),
        *,
        now: datetime | None = None,
    ) -> None:
        """Rebuild state after a restart (from Redis): no event is emitted for it.

        A restored key present in the next tick continues (``updated`` only on a
        material change); absent, it closes as usual, ``close_after_s`` after it was last
        seen live (``OpenOpportunity.last_seen``, at most ``now``: a clock of another
        kind, a replay's, never keeps it open).
        """
        bound = None if now is None else _aware(now)
        for closed in recently_closed:
            if closed.key not in self._open:
                self._closed[closed.key] = closed
        for opp in open_opps:
            self._closed.pop(opp.key, None)
            self._open[opp.key] = _Open(
                opp.opportunity_id,
                opp.opened_at,
                opp.candidate,
                opp.updated_at,
                opp.candidate,
                opp.last_seen if bound is None else min(opp.last_seen, bound),
                opp.reopened,
            )


__all__ = [
    "Candidate",
    "ClosedOpportunity",
    "EventType",
    "LifecycleEvent",
    "OpenOpportunity",
    "OppKey",
    "OpportunityTracker",
    "candidates_from_frame",
    "is_material",
    "jsonable",
    "new_opportunity_id",
]
