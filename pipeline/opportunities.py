"""Opportunity events and validation outcomes as lake rows.

- :data:`OPPORTUNITIES`: one row per lifecycle event (``core.lifecycle``), the
  CONTRACT.md columns plus ``ts`` (= ``detected_at``), ``opened_at``,
  ``executable_usd``, ``lifetime_s`` (``closed`` only), ``reopened`` and ``details``
  (JSON). The sink partitions it by ``detected_at`` (``pipeline.sink.TIME_COLUMNS``).
- :data:`VALIDATIONS`: the validation audit, one row per outcome (pass or fail, with
  its reason) of each stage (``market``, ``technical``, ``score``); lake path
  ``validations/`` (kept out of ``audit-logs/``, whose view reads every file below it).
- :func:`closing_events`, :func:`with_units`: closing leftovers, an edge in its units.
The open opportunities in Redis: :mod:`pipeline.open_set`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from core.candidates import Candidate, jsonable
from core.lifecycle import EventType, LifecycleEvent, OpenOpportunity
from core.models import BLOCKING_FLAGS, OpportunityKind, Rejection
from pipeline.schemas import TS

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

OPPORTUNITIES_DATASET = "opportunities"
VALIDATIONS_DATASET = "validations"
VALIDATIONS_PATH = "validations"
"""Where :data:`VALIDATIONS_DATASET` lives under the lake root (its ``DATASET_PATHS`` entry)."""

OPPORTUNITIES = pa.schema(
    [
        pa.field("ts", TS, nullable=False),  # = detected_at
        pa.field("opportunity_id", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),  # opened | updated | closed
        pa.field("kind", pa.string(), nullable=False),  # spot_spread | funding_rate | technical
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("buy_exchange", pa.string()),  # funding: long leg; technical: exchange when long
        pa.field("sell_exchange", pa.string()),  # funding: short leg; technical: exchange when short
        pa.field("gross_bps", pa.float64()),
        pa.field("net_bps", pa.float64()),
        pa.field("gross_apr", pa.float64()),  # funding only (fraction per year)
        pa.field("notional_usd", pa.float64()),
        pa.field("executable_usd", pa.float64()),
        pa.field("confidence", pa.float64()),
        pa.field("priority", pa.string(), nullable=False),
        pa.field("pushable", pa.bool_(), nullable=False),
        pa.field("flags", pa.string(), nullable=False),  # comma-separated, "" when none
        pa.field("detected_at", TS, nullable=False),  # when the event was decided (tick time)
        pa.field("opened_at", TS, nullable=False),  # first opening of this opportunity_id
        pa.field("lifetime_s", pa.float64()),  # closed only: first tick without it - opened_at
        pa.field("reopened", pa.bool_(), nullable=False),  # re-opened within the cooldown
        pa.field("details", pa.string(), nullable=False),  # JSON object
    ]
)

VALIDATION_STAGES = ("market", "technical", "score")

VALIDATIONS = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("buy_exchange", pa.string()),
        pa.field("sell_exchange", pa.string()),
        pa.field("stage", pa.string(), nullable=False),  # market | technical | score
        pa.field("outcome", pa.string(), nullable=False),  # pass | fail
        pa.field("reason", pa.string(), nullable=False),  # comma-separated reasons, "" on pass
        pa.field("detail", pa.string(), nullable=False),
        pa.field("notional_usd", pa.float64()),
        pa.field("net_bps", pa.float64()),
        pa.field("confidence", pa.float64()),
    ]
)


def _json(value: Any) -> str:
    return json.dumps(jsonable(value), separators=(",", ":"), sort_keys=True, allow_nan=False)


def _none_if_nan(value: float | None) -> float | None:
    return None if value is None or value != value else value


# --------------------------------------------------------------------------- lake rows


def events_to_table(events: Sequence[LifecycleEvent]) -> pa.Table:
    """Lifecycle events → :data:`OPPORTUNITIES` rows, in order."""
    cands = [e.candidate for e in events]
    at = [e.at for e in events]
    columns: dict[str, list[Any]] = {
        "ts": at,
        "opportunity_id": [e.opportunity_id for e in events],
        "event": [e.event.value for e in events],
        "kind": [c.kind.value for c in cands],
        "symbol": [c.symbol for c in cands],
        "buy_exchange": [c.buy_exchange for c in cands],
        "sell_exchange": [c.sell_exchange for c in cands],
        "gross_bps": [_none_if_nan(c.gross_bps) for c in cands],
        "net_bps": [_none_if_nan(c.net_bps) for c in cands],
        "gross_apr": [_none_if_nan(c.gross_apr) for c in cands],
        "notional_usd": [_none_if_nan(c.notional_usd) for c in cands],
        "executable_usd": [_none_if_nan(c.executable_usd) for c in cands],
        "confidence": [_none_if_nan(c.confidence) for c in cands],
        "priority": [c.priority.value for c in cands],
        "pushable": [c.pushable for c in cands],
        "flags": [c.flags_csv for c in cands],
        "detected_at": at,
        "opened_at": [e.opened_at for e in events],
        "lifetime_s": [e.lifetime_s if e.event is EventType.CLOSED else None for e in events],
        "reopened": [e.reopened for e in events],
        "details": [_json(c.details) for c in cands],
    }
    return pa.table(columns, schema=OPPORTUNITIES)


_BLOCKING = sorted(f.value for f in BLOCKING_FLAGS)


def _validation_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Conform a frame to :data:`VALIDATIONS` (missing optional columns become null)."""
    schema = pl.Schema(pl.from_arrow(VALIDATIONS.empty_table()).schema)  # type: ignore[union-attr]
    present = set(frame.columns)
    return frame.select(
        [
            pl.col(name).cast(dtype) if name in present else pl.lit(None, dtype).alias(name)
            for name, dtype in schema.items()
        ]
    )


def _candidate_frame(candidates: pl.DataFrame | Sequence[Candidate]) -> pl.DataFrame:
    if isinstance(candidates, pl.DataFrame):
        return candidates
    return pl.DataFrame(
        [
            {
                "kind": c.kind.value,
                "symbol": c.symbol,
                "buy_exchange": c.buy_exchange,
                "sell_exchange": c.sell_exchange,
                "notional_usd": c.notional_usd,
                "net_bps": c.net_bps,
                "confidence": c.confidence,
                "flags": c.flags_csv,
            }
            for c in candidates
        ],
        schema={
            "kind": pl.String,
            "symbol": pl.String,
            "buy_exchange": pl.String,
            "sell_exchange": pl.String,
            "notional_usd": pl.Float64,
            "net_bps": pl.Float64,
            "confidence": pl.Float64,
            "flags": pl.String,
        },
    )


def validations_to_table(
    now: datetime,
    *,
    book_rejections: pl.DataFrame | None = None,
    candidates: pl.DataFrame | Sequence[Candidate] | None = None,
    rejections: Iterable[Rejection] = (),
    extra: pl.DataFrame | None = None,
    push_threshold: float = 0.7,
    book_kind: OpportunityKind = OpportunityKind.SPOT_SPREAD,
) -> pa.Table:
    """Every validation outcome of one tick → :data:`VALIDATIONS` rows (vectorised).

    - ``book_rejections`` (``pipeline.detect.book_rejections``): ``market`` / ``fail``
      with the book's reason; the book's exchange in ``buy_exchange``.
    - ``candidates`` (``detect_spreads`` / ``detect_funding`` rows, every notional, or
      :class:`Candidate` objects): ``market`` — ``pass``, or ``fail`` with the blocking
      flags as reason; then, for those that passed, ``score`` — ``pass`` when
      ``confidence ≥ push_threshold``, else ``fail`` / ``below_confidence``. ``detail``
      lists every flag (informational ones included).
    - ``rejections``: ``core.models.Rejection`` of the scalar evaluators, ``market`` / ``fail``.
    - ``extra``: rows already in validation shape (a ``technical`` stage, say).
    """
    now = now.astimezone(UTC)
    parts: list[pl.DataFrame] = []
    if book_rejections is not None and book_rejections.height:
        parts.append(
            _validation_frame(
                book_rejections.select(
                    kind=pl.lit(book_kind.value),
                    symbol="symbol",
                    buy_exchange="exchange",
                    stage=pl.lit("market"),
                    outcome=pl.lit("fail"),
                    reason="reason",
                    detail=pl.format("{} book on {}", pl.col("market_type"), pl.col("exchange")),
                )
            )
        )
    if candidates is not None:
        cand = _candidate_frame(candidates)
        if cand.height:
            flags = (
                pl.col("flags")
                .fill_null("")
                .str.split(",")
                .list.eval(pl.element().filter(pl.element() != ""))
            )
            blocking = flags.list.eval(pl.element().filter(pl.element().is_in(_BLOCKING))).list.join(",")
            base = cand.select(
                kind="kind",
                symbol="symbol",
                buy_exchange="buy_exchange",
                sell_exchange="sell_exchange",
                notional_usd="notional_usd" if "notional_usd" in cand.columns else pl.lit(None, pl.Float64),
                net_bps="net_bps",
                confidence="confidence" if "confidence" in cand.columns else pl.lit(None, pl.Float64),
                reason=blocking,
                detail=pl.col("flags").fill_null(""),
            )
            market = base.with_columns(
                stage=pl.lit("market"),
                outcome=pl.when(pl.col("reason") == "").then(pl.lit("pass")).otherwise(pl.lit("fail")),
            )
            passed = market.filter(pl.col("outcome") == "pass")
            ok = pl.col("confidence").fill_null(0.0) >= push_threshold
            score = passed.with_columns(
                stage=pl.lit("score"),
                outcome=pl.when(ok).then(pl.lit("pass")).otherwise(pl.lit("fail")),
                reason=pl.when(ok).then(pl.lit("")).otherwise(pl.lit("below_confidence")),
                detail=pl.format(
                    "confidence {} vs {}", pl.col("confidence").round(4), pl.lit(push_threshold)
                ),
            )
            parts += [_validation_frame(market), _validation_frame(score)]
    rows = [
        {
            "kind": r.kind.value,
            "symbol": r.symbol,
            "buy_exchange": r.buy_exchange,
            "sell_exchange": r.sell_exchange,
            "stage": "market",
            "outcome": "fail",
            "reason": r.reason.value,
            "detail": r.detail,
        }
        for r in rejections
    ]
    if rows:
        parts.append(_validation_frame(pl.DataFrame(rows)))
    if extra is not None and extra.height:
        parts.append(_validation_frame(extra))
    if not parts:
        return VALIDATIONS.empty_table()
    out = pl.concat(parts, how="vertical").with_columns(
        ts=pl.col("ts").fill_null(pl.lit(now).dt.cast_time_unit("ms")),
        reason=pl.col("reason").fill_null(""),
        detail=pl.col("detail").fill_null(""),
    )
    return out.to_arrow().select(VALIDATIONS.names).cast(VALIDATIONS)


def closing_events(
    opps: Iterable[OpenOpportunity], *, reason: str, at: datetime | None = None
) -> list[LifecycleEvent]:
    """``closed`` events for open entries no tracker will close (a crash's leftovers, a stop).

    ``at``: the close time; None closes each at its ``last_seen`` (the last time it was
    known live; its ``lifetime_s`` then ends there). ``details["closed_by"]`` says why.
    """
    out = []
    for opp in opps:
        when = at or max(opp.last_seen, opp.opened_at)
        cand = replace(opp.candidate, details={**opp.candidate.details, "closed_by": reason})
        lifetime = max(0.0, (when - opp.opened_at).total_seconds())
        out.append(
            LifecycleEvent(
                EventType.CLOSED, opp.opportunity_id, cand, when, opp.opened_at, lifetime, opp.reopened
            )
        )
    return out


EDGE_UNITS: dict[str, str | None] = {
    "spot_spread": "bps (instant: net of taker fees, executable now)",
    "funding_rate": "APR % (net of the round trip, held over the funding horizon)",
    "technical": None,
}
"""What the edge of each kind is measured in (``GET /api/opportunities``, docs/opportunities.md)."""


def with_units(body: dict[str, Any], *, horizon_hours: float) -> dict[str, Any]:
    """An open opportunity (a reader's JSON) with its edge stated in its kind's units.

    Adds, never removes: ``edge_unit`` (:data:`EDGE_UNITS`); spot ``net_bps_instant``;
    funding ``net_apr_pct``, ``net_bps_per_day`` and ``horizon_hours`` (its ``net_bps``
    is the total over that horizon); technical signals carry no edge (``edge_unit`` null).
    """
    kind = str(body.get("kind"))
    out = {**body, "edge_unit": EDGE_UNITS.get(kind)}
    net = body.get("net_bps")
    net = float(net) if isinstance(net, int | float) else None
    if kind == "spot_spread":
        out["net_bps_instant"] = net
    elif kind == "funding_rate":
        details = body.get("details") or {}
        apr = details.get("net_apr") if isinstance(details, dict) else None
        if not isinstance(apr, int | float) and net is not None and horizon_hours > 0:
            apr = net / 10_000.0 * 8760.0 / horizon_hours
        out["net_apr_pct"] = None if apr is None else float(apr) * 100.0
        out["net_bps_per_day"] = None if net is None or horizon_hours <= 0 else net * 24.0 / horizon_hours
        out["horizon_hours"] = horizon_hours
    return out


__all__ = [
    "EDGE_UNITS",
    "OPPORTUNITIES",
    "OPPORTUNITIES_DATASET",
    "VALIDATIONS",
    "VALIDATIONS_DATASET",
    "VALIDATIONS_PATH",
    "VALIDATION_STAGES",
    "closing_events",
    "events_to_table",
    "validations_to_table",
    "with_units",
]
