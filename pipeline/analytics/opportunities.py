"""Opportunities and market data: by kind (edges of the pushable ones, each kind in its
unit), flagged ones by flag, the best pushable ones, edge buckets (``opportunities``), and
data freshness per exchange (``quotes``)."""

from __future__ import annotations

import itertools
from datetime import datetime

import pyarrow as pa

from core.funding import DEFAULT_HORIZON_HOURS as FUNDING_HORIZON_HOURS
from core.funding import HOURS_PER_YEAR as FUNDING_HOURS_PER_YEAR
from core.models import OpportunityKind, RejectReason
from pipeline.analytics.view import Source, _now, _num, _sql_str, _view

NET_BPS_EDGES: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""Spot: lower edges of the net bps buckets of :func:`opportunities_by_edge` (plus one below 0)."""
APR_PCT_EDGES: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""Funding: lower edges of the net % APR buckets of :func:`opportunities_by_edge`."""
EDGE_UNITS: dict[OpportunityKind, str] = {
    OpportunityKind.SPOT_SPREAD: "net bps (instant)",
    OpportunityKind.FUNDING_RATE: "net % APR",
    OpportunityKind.TECHNICAL: "none (signal)",
}
"""The unit each kind's edge is aggregated in (never one unit across kinds)."""
EDGE_BUCKETS: dict[OpportunityKind, tuple[tuple[float, ...], str]] = {
    OpportunityKind.SPOT_SPREAD: (NET_BPS_EDGES, ""),
    OpportunityKind.FUNDING_RATE: (APR_PCT_EDGES, "%"),
}
"""Per kind with an edge: the bucket edges and the label suffix."""
DEFAULT_HORIZON_HOURS = float(FUNDING_HORIZON_HOURS)
"""Funding rows without ``net_apr`` and ``horizon_hours`` in their details: the horizon
their ``net_bps`` is a return over (the detector's default, ``core.funding``)."""
HOURS_PER_YEAR = float(FUNDING_HOURS_PER_YEAR)
INFORMATIONAL_FLAGS: tuple[str, ...] = tuple(
    f.value
    for f in (
        RejectReason.DEFAULT_FEE,
        RejectReason.PREDICTED_RATE,
        RejectReason.PREDICTED_UNAVAILABLE,
        RejectReason.BASIS_UNKNOWN,
    )
)
"""Flags that never stop a push (``core.models``): not counted as why one was flagged."""
LOW_CONFIDENCE = "low_confidence"
"""The reason counted for an opportunity never pushable without a blocking flag."""


def _json_number(path: str) -> str:
    return (
        f"(CASE WHEN json_valid(details) THEN TRY_CAST(json_extract_string(details, '{path}') AS DOUBLE) END)"
    )


_INFORMATIONAL = ", ".join(_sql_str(f) for f in INFORMATIONAL_FLAGS)


def _per_opportunity(window: str) -> str:
    """SQL CTEs ``ev`` and ``per``: one row per opportunity with events in the window.

    ``opened``: it opened in the window; ``pushable``: one of its opened/updated events was
    pushable (an opportunity may become pushable after it opened); ``edge``: its edge in the
    kind's unit at its first pushable event (spot net bps, funding net % APR, technical
    NULL); ``net_apr``: funding's net APR (fraction) then; ``flags``: the distinct flags of its
    opened/updated events; ``lifetime_s``: of its (last) close.
    """
    apr = (
        f"coalesce({_json_number('$.net_apr')}, net_bps / 10000.0 * {HOURS_PER_YEAR!r} "
        f"/ coalesce({_json_number('$.horizon_hours')}, {DEFAULT_HORIZON_HOURS!r}))"
    )
    live = "event IN ('opened', 'updated')"
    return f"""
        ev AS (
            SELECT opportunity_id, kind, event, pushable AND {live} AS pushed, {live} AS live,
                coalesce(flags, '') AS flags, detected_at, lifetime_s, net_bps, symbol,
                buy_exchange, sell_exchange, notional_usd, confidence,
                CASE WHEN kind = 'funding_rate' THEN {apr} END AS net_apr
            FROM opportunities WHERE {window}
        ),
        per AS (
            SELECT opportunity_id, any_value(kind) AS kind, any_value(symbol) AS symbol,
                any_value(buy_exchange) AS buy_exchange, any_value(sell_exchange) AS sell_exchange,
                arg_min(notional_usd, detected_at) FILTER (WHERE pushed) AS notional_usd,
                arg_min(confidence, detected_at) FILTER (WHERE pushed) AS confidence,
                bool_or(event = 'opened') AS opened,
                bool_or(pushed) AS pushable,
                arg_min(CASE kind WHEN 'spot_spread' THEN net_bps WHEN 'funding_rate' THEN net_apr * 100 END,
                    detected_at) FILTER (WHERE pushed) AS edge,
                arg_min(net_apr, detected_at) FILTER (WHERE pushed) AS net_apr,
                list_distinct(flatten(list(string_split(flags, ',')) FILTER (WHERE live))) AS flags,
                count(*) FILTER (WHERE event = 'closed') AS closed,
                arg_max(lifetime_s, detected_at) FILTER (WHERE event = 'closed') AS lifetime_s
            FROM ev GROUP BY opportunity_id
        )"""


def _units_values() -> str:
    return ", ".join(f"({_sql_str(k.value)}, {_sql_str(EDGE_UNITS[k])})" for k in OpportunityKind)


def opportunities_by_kind(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Per kind: opportunities opened in the window, how many were pushable (at opening or
    later) and how many never were (``flagged``, by flag in :func:`flagged_opportunities`),
    closes, and the edges of the **pushable** ones only, in the kind's ``unit``
    (:data:`EDGE_UNITS`: spot net bps, funding net % APR, technical none): mean and max at
    the moment each became pushable; funding also in bps a day. A flagged edge (a ticker
    collision of 300,000 bps) moves none of them. Median lifetime of the pushable ones."""
    with _view(source, now) as v:
        sql = f"""
        WITH {_per_opportunity(v.window("opportunities", since))},
        units(kind, unit) AS (VALUES {_units_values()})
        SELECT per.kind, coalesce(any_value(units.unit), '') AS unit,
            count(*) FILTER (WHERE opened) AS opened,
            count(*) FILTER (WHERE opened AND pushable) AS pushable,
            count(*) FILTER (WHERE opened AND NOT pushable) AS flagged,
            sum(closed)::BIGINT AS closed,
            avg(edge) FILTER (WHERE opened AND pushable) AS mean_net,
            max(edge) FILTER (WHERE opened AND pushable) AS max_net,
            avg(net_apr * 10000.0 / 365.0) FILTER (WHERE opened AND pushable) AS mean_bps_per_day,
            median(lifetime_s) FILTER (WHERE pushable) AS median_lifetime_s
        FROM per LEFT JOIN units USING (kind)
        GROUP BY per.kind ORDER BY opened DESC, per.kind
        """
        return v.sql(sql)


def flagged_opportunities(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Opportunities opened in the window that were never pushable, per kind and flag: each
    counts once under every non-informational flag it carried (``implausible_spread`` is a
    probable ticker collision), or under ``low_confidence`` when it had none (it stayed under
    the push threshold)."""
    with _view(source, now) as v:
        sql = f"""
        WITH {_per_opportunity(v.window("opportunities", since))},
        reasons AS (
            SELECT kind, list_filter(flags, lambda f: f <> '' AND f NOT IN ({_INFORMATIONAL})) AS blocking
            FROM per WHERE opened AND NOT pushable
        )
        SELECT kind, flag, count(*) AS opportunities FROM (
            SELECT kind,
                unnest(CASE WHEN len(blocking) = 0 THEN ['{LOW_CONFIDENCE}'] ELSE blocking END) AS flag
            FROM reasons
        ) GROUP BY kind, flag ORDER BY opportunities DESC, kind, flag
        """
        return v.sql(sql)


def top_pushable(
    source: Source, since: datetime | None, *, now: datetime | None = None, n: int = 5
) -> pa.Table:
    """The ``n`` best pushable opportunities opened in the window **per kind with an edge**,
    each ranked in its kind's unit (spot by net bps, funding by net % APR), best first."""
    with _view(source, now) as v:
        sql = f"""
        WITH {_per_opportunity(v.window("opportunities", since))},
        units(kind, unit) AS (VALUES {_units_values()}),
        ranked AS (
            SELECT per.*, units.unit,
                row_number() OVER (PARTITION BY per.kind ORDER BY edge DESC, opportunity_id) AS rank
            FROM per JOIN units USING (kind) WHERE opened AND pushable AND edge IS NOT NULL
        )
        SELECT kind, rank, symbol, buy_exchange, sell_exchange, edge AS net, unit,
            net_apr * 10000.0 / 365.0 AS bps_per_day, notional_usd, confidence, lifetime_s
        FROM ranked WHERE rank <= {int(n)} ORDER BY kind DESC, rank
        """
        return v.sql(sql)


def edge_buckets(edges: tuple[float, ...], unit: str = "") -> list[tuple[str, float | None, float | None]]:
    """``(label, lo, hi)`` of each bucket, ``lo`` inclusive; below the first edge, then up."""
    out: list[tuple[str, float | None, float | None]] = [(f"<{edges[0]:g}{unit}", None, edges[0])]
    for lo, hi in itertools.pairwise(edges):
        out.append((f"{lo:g}-{hi:g}{unit}", lo, hi))
    out.append((f"≥{edges[-1]:g}{unit}", edges[-1], None))
    return out


def opportunities_by_edge(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Pushable opportunities opened in the window per edge bucket of their kind, each kind in
    its unit (:data:`EDGE_BUCKETS`: spot by net bps, funding by net % APR; technical signals
    have no edge and no buckets). Every bucket is listed, zeros included."""
    values = ", ".join(
        f"({_sql_str(kind.value)}, {_sql_str(EDGE_UNITS[kind])}, {i}, {_sql_str(label)}, "
        f"{_num(lo)}, {_num(hi)})"
        for kind, (edges, suffix) in EDGE_BUCKETS.items()
        for i, (label, lo, hi) in enumerate(edge_buckets(edges, suffix))
    )
    order = ", ".join(f"({_sql_str(k.value)}, {i})" for i, k in enumerate(OpportunityKind))
    with _view(source, now) as v:
        sql = f"""
        WITH {_per_opportunity(v.window("opportunities", since))},
        buckets(kind, unit, ord, bucket, lo, hi) AS (VALUES {values}),
        kinds(kind, kord) AS (VALUES {order}),
        o AS (SELECT kind, edge FROM per WHERE opened AND pushable AND edge IS NOT NULL)
        SELECT b.kind, b.unit, b.bucket, b.lo, count(o.edge) AS opportunities
        FROM buckets b JOIN kinds k USING (kind) LEFT JOIN o
            ON o.kind = b.kind AND (b.lo IS NULL OR o.edge >= b.lo) AND (b.hi IS NULL OR o.edge < b.hi)
        GROUP BY k.kord, b.kind, b.unit, b.ord, b.bucket, b.lo ORDER BY k.kord, b.ord
        """
        return v.sql(sql)


def data_freshness(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Per exchange with quotes in the window: the newest quote's ``ts``, its age at ``now``
    in seconds, quotes and symbols in the window."""
    with _view(source, now) as v:
        sql = f"""
        SELECT exchange, max(ts) AS last_ts,
            date_diff('millisecond', max(ts), $now) / 1000.0 AS age_s,
            count(*) AS quotes, count(DISTINCT symbol) AS symbols
        FROM quotes WHERE {v.window("quotes", since)} AND ts <= $now
        GROUP BY exchange ORDER BY exchange
        """
        return v.sql(sql, {"now": _now(v, now)})
