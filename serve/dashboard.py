"""The admin dashboard: ``GET /dashboard`` (the page) and ``GET /api/dashboard`` (its data).

The page (``serve/static/dashboard.html``) loads ``static/dashboard.js`` and
``static/dashboard.css`` from arbflow itself (no CDN, works offline); the script polls
``api/dashboard`` every few seconds and draws its charts as SVG. Both routes want the
admin token: ``Authorization: Bearer <token>`` or, for a browser, ``?token=<token>``.

:func:`dashboard_data` builds the JSON from :mod:`pipeline.analytics` on one DuckDB
connection: the summary figures, deliveries per minute (every minute of the window,
zeros included), opportunities by kind (opened, pushable, flagged; the edges of the
pushable ones in each kind's unit), pushable ones by edge bucket per kind (spot: net
bps; funding: net % APR), flagged ones by flag, the onboarding funnel, latency
percentiles, data freshness per exchange, and per configured experiment its engagement rate
per variant with 95% intervals and the difference from the control
(:mod:`pipeline.analytics.experiments`; drawn as bars with interval whiskers).
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.experiments import Experiment
from pipeline import analytics as an
from pipeline.lake import Lake

STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE = "dashboard.html"
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
DEFAULT_WINDOW = timedelta(hours=1)
MAX_WINDOW = timedelta(days=7)
MAX_MINUTES = 24 * 60
"""Points of the deliveries-per-minute series at most (the latest ones)."""
STALE_AFTER_S = 60.0
"""Data freshness above this is drawn as stale."""


def is_admin(expected: str, authorization: str | None, token: str | None) -> bool:
    """Whether the request carries the admin token (``Bearer`` header or ``?token=``), in
    constant time; an empty ``expected`` lets nobody in."""
    if not expected:
        return False
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and given.strip():
        return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected.encode())
    if token:
        return hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected.encode())
    return False


def parse_window(value: str | None) -> timedelta:
    """``?window=15m|1h|24h|…`` (default one hour, at most a week); ValueError if malformed."""
    if not value:
        return DEFAULT_WINDOW
    return min(an.parse_duration(value), MAX_WINDOW)


def static_file(name: str) -> tuple[bytes, str] | None:
    """A file of ``serve/static`` by its bare name and its content type (None: not one)."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    path = STATIC_DIR / name
    kind = STATIC_TYPES.get(path.suffix)
    if kind is None or not path.is_file():
        return None
    return path.read_bytes(), kind


def page_html() -> str:
    return (STATIC_DIR / PAGE).read_text(encoding="utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """JSON-ready row objects: ISO-8601 UTC times, null for NaN."""
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]


def _minutes(table: pa.Table, since: datetime, now: datetime) -> list[dict[str, Any]]:
    """Every minute from ``since`` to ``now`` (the latest :data:`MAX_MINUTES`), zeros where no rows."""
    counts = [c for c in table.column_names if c != "minute"]
    found = {r["minute"]: r for r in table.to_pylist()}
    end = now.replace(second=0, microsecond=0)
    start = max(since.replace(second=0, microsecond=0), end - timedelta(minutes=MAX_MINUTES - 1))
    out: list[dict[str, Any]] = []
    at = start
    while at <= end:
        row = found.pop(at, None) or {}
        out.append({"minute": _plain(at), **{c: int(row.get(c) or 0) for c in counts}})
        at += timedelta(minutes=1)
    return out


def dashboard_data(
    lake: Lake,
    *,
    window: timedelta = DEFAULT_WINDOW,
    now: datetime | None = None,
    experiments: Sequence[Experiment] = (),
) -> dict[str, Any]:
    """The charts' data over the last ``window`` (JSON-ready); ``experiments``: the configured
    ones (``settings.experiments``), each reported per variant."""
    from pipeline.analytics.experiments import experiment_reports

    with an.LakeView(lake, now=now) as view:
        now = view.now
        since = now - window
        summary = rows(an.summary(view, since))[0]
        return {
            "generated_at": _plain(now),
            "since": _plain(since),
            "window_s": window.total_seconds(),
            "stale_after_s": STALE_AFTER_S,
            "summary": summary,
            "deliveries_per_minute": _minutes(an.deliveries_per_minute(view, since), since, now),
            "opportunities_by_kind": rows(an.opportunities_by_kind(view, since)),
            "opportunities_by_edge": rows(an.opportunities_by_edge(view, since)),
            "flagged_opportunities": rows(an.flagged_opportunities(view, since)),
            "onboarding_funnel": rows(an.onboarding_funnel(view, since)),
            "latency_percentiles": rows(an.latency_percentiles(view, since)),
            "data_freshness": rows(an.data_freshness(view, since)),
            "experiments": [
                {k: _plain(v) for k, v in r.as_dict().items()}
                for r in experiment_reports(view, experiments, since)
            ],
        }
