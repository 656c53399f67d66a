"""Candidates: one opportunity as the detector saw it in one tick, before the lifecycle
(:mod:`core.lifecycle`) decides whether it opened, changed or closed. Pure; numbers are
``float`` (the vectorised detector's float64 columns), compared, never used for money."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

from core.models import (
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


__all__ = ["Candidate", "OppKey", "candidates_from_frame", "jsonable"]
