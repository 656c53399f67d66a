"""The report: the tables of ``arbflow report`` in order, the delivery figures of
``/admin``, ``--since`` parsing, and the report as Rich tables for the terminal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from rich.table import Table as RichTable

from pipeline.analytics.deliveries import (
    deliveries_by_tier,
    deliveries_per_hour,
    engagement_by_kind,
    latency_percentiles,
    skips_by_layer,
    summary,
    throttled,
)
from pipeline.analytics.opportunities import (
    data_freshness,
    flagged_opportunities,
    opportunities_by_edge,
    opportunities_by_kind,
)
from pipeline.analytics.users import active_sessions, new_vs_returning, onboarding_funnel
from pipeline.analytics.view import LakeView, _utc
from pipeline.lake import Lake

Query = Callable[..., pa.Table]

REPORT: tuple[tuple[str, str, Query], ...] = (
    ("summary", "Summary", summary),
    ("active_sessions", "Sessions", active_sessions),
    ("new_vs_returning", "New and returning users", new_vs_returning),
    ("onboarding_funnel", "Onboarding funnel (furthest step per user who opted in)", onboarding_funnel),
    ("deliveries_by_tier", "Deliveries per tier", deliveries_by_tier),
    ("deliveries_per_hour", "Deliveries per hour (UTC)", deliveries_per_hour),
    ("skips_by_layer", "Skipped, by deciding layer", skips_by_layer),
    ("throttled", "Telegram 429s", throttled),
    ("latency_percentiles", "Opportunity → send latency (ms)", latency_percentiles),
    ("engagement_by_kind", "Engagement per kind", engagement_by_kind),
    (
        "opportunities_by_kind",
        "Opportunities by kind (edges of pushable ones, in each kind's unit)",
        opportunities_by_kind,
    ),
    ("flagged_opportunities", "Flagged opportunities (never pushable), by flag", flagged_opportunities),
    (
        "opportunities_by_edge",
        "Pushable opportunities by edge (spot: net bps; funding: net % APR)",
        opportunities_by_edge,
    ),
    ("data_freshness", "Data freshness per exchange", data_freshness),
)
"""The tables of ``arbflow report``: (key, title, query), in order."""


def report(lake: Lake, since: datetime | None, *, now: datetime | None = None) -> dict[str, pa.Table]:
    """Every :data:`REPORT` table by key, on one connection."""
    with LakeView(lake, now=now) as view:
        return {key: query(view, since) for key, _title, query in REPORT}


@dataclass(frozen=True, slots=True)
class DeliveryFigures:
    """The delivery figures of ``/admin``: what happened to notifications since a time."""

    deliveries: int
    """Outcomes: sent + skipped + expired + failed + blocked."""
    sent: int
    skipped: int
    throttled_429: int
    engagement_rate: float | None
    """Presses on pushes / pushes sent (None: nothing sent)."""
    p99_ms: float | None
    missed: int = 0
    """Items a tier delay hid until their opportunity closed (in ``expired``)."""
    digests: int = 0
    """"Missed while delayed" digests sent (in ``sent``)."""


def delivery_figures(lake: Lake, since: datetime, *, now: datetime | None = None) -> DeliveryFigures:
    """:class:`DeliveryFigures` since ``since`` (the bot asks for the UTC day so far)."""
    row = summary(lake, since, now=now).to_pylist()[0]
    outcomes = ("sent", "skipped", "expired", "failed", "blocked")
    return DeliveryFigures(
        deliveries=sum(int(row[k]) for k in outcomes),
        sent=int(row["sent"]),
        skipped=int(row["skipped"]),
        throttled_429=int(row["throttled_429"]),
        engagement_rate=None if row["engagement_rate"] is None else float(row["engagement_rate"]),
        p99_ms=None if row["p99_ms"] is None else float(row["p99_ms"]),
        missed=int(row["missed"]),
        digests=int(row["digests_sent"]),
    )


def start_of_day(now: datetime) -> datetime:
    """Midnight UTC of ``now``'s day."""
    return _utc(now).replace(hour=0, minute=0, second=0, microsecond=0)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` (a bare number is hours) as a timedelta."""
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in _UNITS else "h"
    number = raw[:-1] if raw[-1:] in _UNITS else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (use e.g. 15m, 24h, 7d)") from None
    if not value > 0 or value > 3650 * 86400 / _UNITS[unit]:
        raise ValueError(f"duration out of range: {text!r}")
    return timedelta(seconds=value * _UNITS[unit])


def parse_since(text: str, now: datetime) -> datetime | None:
    """``--since``: a duration back from ``now``, ``all`` (None), or an ISO-8601 time (UTC if naive)."""
    raw = text.strip()
    if raw.lower() in ("all", ""):
        return None
    if raw[:1].isdigit() and ("-" in raw[1:] or "T" in raw):
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return _utc(now) - parse_duration(raw)


# -- terminal rendering -------------------------------------------------------------------------


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if name.endswith(("rate", "conversion")):
            return f"{100 * value:.1f}%"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    if isinstance(value, datetime):
        return _utc(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def rich_tables(tables: dict[str, pa.Table]) -> list[RichTable]:
    """The report as Rich tables, titled and in :data:`REPORT` order; ``summary`` as
    figure/value rows, rates as percentages."""
    out: list[RichTable] = []
    for key, title, _ in REPORT:
        table = tables.get(key)
        if table is None:
            continue
        rich = RichTable(title=title, title_justify="left")
        if key == "summary" and table.num_rows == 1:
            rich.add_column("figure")
            rich.add_column("value", justify="right")
            for name, value in table.to_pylist()[0].items():
                rich.add_row(name.replace("_", " "), _cell(name, value))
            out.append(rich)
            continue
        for name, dtype in zip(table.column_names, table.schema.types, strict=True):
            numeric = pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
            rich.add_column(name.replace("_", " "), justify="right" if numeric else "left")
        for row in table.to_pylist():
            rich.add_row(*(_cell(k, v) for k, v in row.items()))
        if table.num_rows == 0:
            rich.caption = "no rows in this window"
        out.append(rich)
    return out
