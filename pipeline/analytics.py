"""Analytics over the lake: the DuckDB queries behind ``arbflow report``, ``/admin`` and ``/dashboard``.

Every query is a function ``(source, since, *, now=None) -> pyarrow.Table``:

- ``source`` is a :class:`~pipeline.lake.Lake` (a connection is opened and closed for
  the one query) or an open :class:`LakeView` (several queries on one connection, as
  the report and the dashboard do);
- ``since`` (UTC-aware) keeps rows whose time column is at or after it (``None``: all
  rows); the hour partitions before it are pruned without opening their files;
- ``now`` (default: the view's clock) is the reference for ages and open sessions.

Time columns: ``deliveries`` by ``queued_at``, ``opportunities`` by ``detected_at``,
every other dataset by ``ts``. A dataset without files yet is an empty view of its
schema, so every query answers (zeros and empty tables), never an exception for a
young lake.

Where the figures come from (CONTRACT "Lake" and the schemas of the datasets):

- sessions, new and returning users: ``session_events`` (``started`` is a user's first
  session, ``resumed`` a later one; ``expired``/``ended``/``blocked`` end one);
- the onboarding funnel: ``audit`` (``/start`` or the "Start a session" button, then
  the ``onboard:<step>`` buttons), each user at the furthest step reached;
- deliveries, skips, latencies, 429s: ``deliveries`` (``retry`` rows with reason
  ``429`` are Telegram's flood answers);
- engagement: ``engagement`` (``push_button`` presses, ``details`` among them) against
  the pushes ``sent`` of the same kind; ``/opportunities`` views and opened details
  from ``audit`` (``/opportunities``, ``cb:od``);
- opportunities: ``opportunities``, one row per opportunity (its opened/updated/closed
  events): edges over the pushable ones only, each kind in its unit (spot net bps, an
  instant edge; funding net % APR and bps a day; technical none), and the never-pushable
  ones counted apart, by flag;
- data freshness: ``quotes`` (``now - max(ts)`` per exchange).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
from rich.table import Table as RichTable

from core.errors import LakeError
from core.funding import DEFAULT_HORIZON_HOURS as FUNDING_HORIZON_HOURS
from core.funding import HOURS_PER_YEAR as FUNDING_HOURS_PER_YEAR
from core.models import OpportunityKind, RejectReason
from pipeline.deliveries import DELIVERIES, ENGAGEMENT
from pipeline.lake import Lake
from pipeline.opportunities import OPPORTUNITIES
from pipeline.query import PARTITION_COLUMNS, connect, hour_filter
from pipeline.schemas import TS

DATASETS = ("quotes", "opportunities", "deliveries", "engagement", "session_events", "audit")
"""The datasets the analytics read (each a view of the connection)."""

TIME_COLUMNS = {"deliveries": "queued_at", "opportunities": "detected_at"}
"""The column ``since`` applies to, when it is not ``ts`` (the sink partitions by it too)."""

# Empty views for datasets without files: the columns the queries read (the writers'
# schemas live with them: state.sessions.SESSION_EVENTS and state.audit.AUDIT).
_SESSION_EVENTS = pa.schema(
    [
        ("ts", TS),
        ("user_id", pa.int64()),
        ("event", pa.string()),
        ("session_id", pa.string()),
        ("chat_id", pa.int64()),
        ("seq", pa.int64()),
        ("reason", pa.string()),
        ("session_started_at", TS),
        ("duration_s", pa.float64()),
    ]
)
_AUDIT = pa.schema(
    [
        ("ts", TS),
        ("actor_id", pa.int64()),
        ("chat_id", pa.int64()),
        ("action", pa.string()),
        ("ok", pa.bool_()),
        ("detail", pa.string()),
    ]
)
EMPTY_SCHEMAS: dict[str, pa.Schema] = {
    "opportunities": OPPORTUNITIES,
    "deliveries": DELIVERIES,
    "engagement": ENGAGEMENT,
    "session_events": _SESSION_EVENTS,
    "audit": _AUDIT,
}

FUNNEL_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("opted_in", ("/start", "cb:ss")),
    ("kinds", ("onboard:kinds",)),
    ("exchanges", ("onboard:exch",)),
    ("min_profit", ("onboard:minp",)),
    ("timezone", ("onboard:tz",)),
    ("hours", ("onboard:hours",)),
    ("tiers", ("onboard:tiers",)),
    ("api_keys", ("onboard:keys",)),
    ("done", ("onboard:done",)),
)
"""Onboarding steps in order (``core.accounts.OnboardingStep`` values) and the ``audit``
actions that reach them (the bot's ``onboard:<screen>`` buttons; "Skip setup" is ``done``)."""

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

LATENCY_QUANTILES = (0.5, 0.9, 0.99)
END_EVENTS = ("expired", "ended", "blocked")
THROTTLED_REASON = "429"


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ts(value: datetime) -> str:
    return f"TIMESTAMPTZ {_sql_str(value.isoformat())}"


def _num(value: float | None) -> str:
    return "NULL::DOUBLE" if value is None else f"{float(value)!r}::DOUBLE"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value.astimezone(UTC)


class LakeView:
    """One DuckDB connection over the lake with a view for each of :data:`DATASETS`.

    A dataset without files is an empty view of its schema. Use as a context manager;
    ``now`` (default: the wall clock when opened) is the reference of every query on it.
    """

    def __init__(
        self,
        lake: Lake,
        *,
        now: datetime | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        self.lake = lake
        self.now = _utc(now) if now is not None else datetime.now(UTC)
        # start/end: windowed views (only that window's hour partitions are listed and read)
        self.con = connect(lake, datasets=DATASETS, start=start, end=end)
        try:
            present = {str(r[0]) for r in self.con.sql("SELECT view_name FROM duckdb_views()").fetchall()}
            parts = ", ".join(f"CAST(NULL AS INTEGER) AS {c}" for c in PARTITION_COLUMNS)
            for name in DATASETS:
                if name not in present:
                    hidden = f"__empty_{name}"
                    self.con.register(hidden, EMPTY_SCHEMAS[name].empty_table())
                    self.con.execute(f'CREATE VIEW "{name}" AS SELECT *, {parts} FROM "{hidden}"')
        except duckdb.Error as exc:
            self.con.close()
            raise LakeError(f"could not open the lake {lake!r} for analytics: {exc}") from exc

    def sql(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        try:
            return self.con.sql(sql, params=params or None).to_arrow_table()
        except duckdb.Error as exc:
            raise LakeError(f"analytics query failed: {exc}") from exc

    def window(self, dataset: str, since: datetime | None) -> str:
        """SQL predicate: rows of ``dataset`` at or after ``since`` (partition pruning + exact bound)."""
        if since is None:
            return "true"
        since = _utc(since)
        col = TIME_COLUMNS.get(dataset, "ts")
        end = max(self.now, since) + timedelta(hours=1)
        return f"({hour_filter(since, end)} AND {col} >= {_ts(since)})"

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> LakeView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Source = Lake | LakeView


@contextmanager
def _view(source: Source, now: datetime | None) -> Iterator[LakeView]:
    if isinstance(source, LakeView):
        yield source
        return
    with LakeView(source, now=now) as view:
        yield view


def _now(view: LakeView, now: datetime | None) -> datetime:
    return _utc(now) if now is not None else view.now


# -- users ------------------------------------------------------------------------------------


def active_sessions(
    source: Source, since: datetime | None = None, *, now: datetime | None = None
) -> pa.Table:
    """One row: sessions started (or resumed) at or before ``now`` and not ended since, the
    users holding them, and sessions started in the window.

    ``since`` bounds ``started_in_window`` only: a session opened before the window and
    still going is active all the same.
    """
    with _view(source, now) as v:
        sql = f"""
        WITH ev AS (SELECT * FROM session_events WHERE ts <= $now),
        starts AS (
            SELECT session_id, any_value(user_id) AS user_id, min(ts) AS ts FROM ev
            WHERE event IN ('started', 'resumed') GROUP BY session_id
        ),
        ends AS (SELECT DISTINCT session_id FROM ev WHERE event IN {END_EVENTS!r}),
        open AS (SELECT * FROM starts ANTI JOIN ends USING (session_id))
        SELECT
            (SELECT count(*) FROM open) AS active_sessions,
            (SELECT count(DISTINCT user_id) FROM open) AS active_users,
            (SELECT count(*) FROM starts WHERE {"true" if since is None else "ts >= " + _ts(_utc(since))})
                AS started_in_window
        """
        return v.sql(sql, {"now": _now(v, now)})


def new_vs_returning(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Users who opened a session in the window: ``new`` (their first session, ``started``)
    and ``returning`` (a later one, ``resumed``, and no first session in the window)."""
    with _view(source, now) as v:
        sql = f"""
        WITH ev AS (
            SELECT user_id, event FROM session_events
            WHERE event IN ('started', 'resumed') AND {v.window("session_events", since)} AND ts <= $now
        ),
        per_user AS (
            SELECT user_id, bool_or(event = 'started') AS is_new, count(*) AS sessions
            FROM ev GROUP BY user_id
        ),
        kinds(user_type, ord) AS (VALUES ('new', 0), ('returning', 1))
        SELECT k.user_type,
            count(p.user_id) AS users,
            coalesce(sum(p.sessions), 0)::BIGINT AS sessions
        FROM kinds k LEFT JOIN per_user p ON (k.user_type = 'new') = p.is_new
        GROUP BY k.user_type, k.ord ORDER BY k.ord
        """
        return v.sql(sql, {"now": _now(v, now)})


def onboarding_funnel(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Per step (in order): users who stopped there and users who reached it (or a later
    step), of the users who opted in (``/start``) in the window; each user at the furthest
    step of their whole history, so a returning user who finished earlier counts as done."""
    steps = ", ".join(
        f"({_sql_str(step)}, {rank}, {_sql_str(action)})"
        for rank, (step, actions) in enumerate(FUNNEL_STEPS)
        for action in actions
    )
    with _view(source, now) as v:
        sql = f"""
        WITH steps(step, rank, action) AS (VALUES {steps}),
        cohort AS (
            SELECT DISTINCT actor_id FROM audit
            WHERE ok AND action IN ('/start', 'cb:ss') AND {v.window("audit", since)} AND ts <= $now
        ),
        furthest AS (
            SELECT a.actor_id, max(s.rank) AS rank
            FROM audit a JOIN steps s ON a.action = s.action
            WHERE a.ok AND a.ts <= $now AND a.actor_id IN (SELECT actor_id FROM cohort)
            GROUP BY a.actor_id
        ),
        ranks AS (SELECT DISTINCT step, rank FROM steps),
        started AS (SELECT count(*) AS n FROM furthest)
        SELECT r.step,
            count(f.actor_id) FILTER (WHERE f.rank = r.rank) AS stopped_here,
            count(f.actor_id) FILTER (WHERE f.rank >= r.rank) AS reached,
            CASE WHEN any_value(st.n) > 0
                THEN count(f.actor_id) FILTER (WHERE f.rank >= r.rank) / any_value(st.n) END AS conversion
        FROM ranks r CROSS JOIN started st LEFT JOIN furthest f ON true
        GROUP BY r.step, r.rank ORDER BY r.rank
        """
        return v.sql(sql, {"now": _now(v, now)})


# -- deliveries -------------------------------------------------------------------------------

_STATUS_COUNTS = """
    count(*) FILTER (WHERE status = 'queued') AS queued,
    count(*) FILTER (WHERE status = 'sent') AS sent,
    count(*) FILTER (WHERE status = 'skipped') AS skipped,
    count(*) FILTER (WHERE status = 'expired') AS expired,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'blocked') AS blocked,
    count(*) FILTER (WHERE status = 'retry') AS retries,
    count(*) FILTER (WHERE status = 'expired' AND reason = 'missed') AS missed,
    count(*) FILTER (WHERE status = 'sent' AND kind = 'missed_digest') AS digests_sent"""
"""Rows by status; ``missed``: items a tier delay hid until they closed (they are ``expired``
too), ``digests_sent``: "missed while delayed" digest messages (they are ``sent`` too)."""


def deliveries_by_tier(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Per tier (groups and channels by their audience): rows by status and chats sent to."""
    with _view(source, now) as v:
        sql = f"""
        SELECT coalesce(tier, audience) AS tier, {_STATUS_COUNTS},
            count(DISTINCT chat_id) FILTER (WHERE status = 'sent') AS chats
        FROM deliveries WHERE {v.window("deliveries", since)}
        GROUP BY 1 ORDER BY sent DESC, tier
        """
        return v.sql(sql)


def _per_bucket(source: Source, since: datetime | None, unit: str, now: datetime | None) -> pa.Table:
    with _view(source, now) as v:
        sql = f"""
        SELECT date_trunc('{unit}', coalesce(sent_at, queued_at)) AS {unit}, {_STATUS_COUNTS},
            count(*) FILTER (WHERE status = 'retry' AND reason = '{THROTTLED_REASON}') AS throttled_429
        FROM deliveries WHERE {v.window("deliveries", since)}
        GROUP BY 1 ORDER BY 1
        """
        return v.sql(sql)


def deliveries_per_hour(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Per UTC hour (of ``sent_at``, else ``queued_at``): rows by status and 429s."""
    return _per_bucket(source, since, "hour", now)


def deliveries_per_minute(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Per UTC minute (of ``sent_at``, else ``queued_at``): rows by status and 429s."""
    return _per_bucket(source, since, "minute", now)


def skips_by_layer(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Skipped deliveries by the deciding eligibility layer (1-6) and its reason."""
    with _view(source, now) as v:
        sql = f"""
        SELECT layer, reason, count(*) AS skipped, count(DISTINCT chat_id) AS chats
        FROM deliveries WHERE status = 'skipped' AND {v.window("deliveries", since)}
        GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2
        """
        return v.sql(sql)


def throttled(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """One row: Telegram's 429 answers (``retry`` rows, reason ``429``), all retries, and
    the chats the 429s hit."""
    with _view(source, now) as v:
        sql = f"""
        SELECT count(*) FILTER (WHERE reason = '{THROTTLED_REASON}') AS throttled_429,
            count(*) AS retries,
            count(DISTINCT chat_id) FILTER (WHERE reason = '{THROTTLED_REASON}') AS chats
        FROM deliveries WHERE status = 'retry' AND {v.window("deliveries", since)}
        """
        return v.sql(sql)


def latency_percentiles(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Opportunity → send latency (``latency_ms`` of ``sent`` rows): ``all`` first, then per tier."""
    quantiles = ", ".join(
        f"quantile_cont(latency_ms, {q}) AS p{round(q * 100)}_ms" for q in LATENCY_QUANTILES
    )
    with _view(source, now) as v:
        sql = f"""
        WITH sent AS (
            SELECT coalesce(tier, audience) AS tier, latency_ms FROM deliveries
            WHERE status = 'sent' AND latency_ms IS NOT NULL AND {v.window("deliveries", since)}
        )
        SELECT tier, n, p50_ms, p90_ms, p99_ms, max_ms FROM (
            SELECT 'all' AS tier, 0 AS ord, count(*) AS n, {quantiles}, max(latency_ms) AS max_ms FROM sent
            UNION ALL
            SELECT tier, 1 AS ord, count(*) AS n, {quantiles}, max(latency_ms) AS max_ms
            FROM sent GROUP BY tier
        ) ORDER BY ord, tier
        """
        return v.sql(sql)


def engagement_by_kind(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """Per opportunity kind: pushes sent, buttons pressed on them, details opened from a
    push, and the engagement rate (presses / pushes sent)."""
    with _view(source, now) as v:
        sql = f"""
        WITH pushes AS (
            SELECT coalesce(kind, 'unknown') AS kind, count(*) AS pushes_sent FROM deliveries
            WHERE status = 'sent' AND {v.window("deliveries", since)} GROUP BY 1
        ),
        presses AS (
            SELECT coalesce(kind, 'unknown') AS kind, count(*) AS presses,
                count(*) FILTER (WHERE detail = 'details') AS details_opened
            FROM engagement WHERE action = 'push_button' AND {v.window("engagement", since)} GROUP BY 1
        )
        SELECT kind, coalesce(pushes_sent, 0) AS pushes_sent, coalesce(presses, 0) AS presses,
            coalesce(details_opened, 0) AS details_opened,
            CASE WHEN pushes_sent > 0 THEN coalesce(presses, 0) / pushes_sent END AS engagement_rate
        FROM pushes FULL JOIN presses USING (kind)
        ORDER BY pushes_sent DESC, kind
        """
        return v.sql(sql)


def summary(source: Source, since: datetime | None, *, now: datetime | None = None) -> pa.Table:
    """One row of headline figures: deliveries by status, 429s, engagement (presses,
    ``/opportunities`` views, details opened), latency percentiles, sessions, users."""
    with _view(source, now) as v:
        when = _now(v, now)
        d, e, a = v.window("deliveries", since), v.window("engagement", since), v.window("audit", since)
        sql = f"""
        WITH dl AS (
            SELECT {_STATUS_COUNTS},
                count(*) FILTER (WHERE status = 'retry' AND reason = '{THROTTLED_REASON}') AS throttled_429,
                count(DISTINCT chat_id) FILTER (WHERE status = 'sent') AS chats_reached,
                quantile_cont(latency_ms, 0.5) FILTER (WHERE status = 'sent') AS p50_ms,
                quantile_cont(latency_ms, 0.9) FILTER (WHERE status = 'sent') AS p90_ms,
                quantile_cont(latency_ms, 0.99) FILTER (WHERE status = 'sent') AS p99_ms
            FROM deliveries WHERE {d}
        ),
        en AS (
            SELECT count(*) AS presses, count(*) FILTER (WHERE detail = 'details') AS push_details
            FROM engagement WHERE action = 'push_button' AND {e}
        ),
        au AS (
            SELECT count(*) FILTER (WHERE action = '/opportunities') AS list_views,
                count(*) FILTER (WHERE action = 'cb:od') AS list_details
            FROM audit WHERE ok AND {a}
        )
        SELECT dl.queued, dl.sent, dl.skipped, dl.expired, dl.failed, dl.blocked, dl.retries,
            dl.missed, dl.digests_sent, dl.throttled_429, dl.chats_reached, en.presses,
            CASE WHEN dl.sent > 0 THEN en.presses / dl.sent END AS engagement_rate,
            au.list_views, en.push_details + au.list_details AS details_opened,
            dl.p50_ms, dl.p90_ms, dl.p99_ms
        FROM dl, en, au
        """
        figures = v.sql(sql)
        sessions = active_sessions(v, since, now=when)
        users = new_vs_returning(v, since, now=when)
        by_type = dict(zip(users["user_type"].to_pylist(), users["users"].to_pylist(), strict=True))
        figures = figures.append_column("active_sessions", sessions.column("active_sessions"))
        figures = figures.append_column("new_users", pa.array([by_type.get("new", 0)], pa.int64()))
        return figures.append_column("returning_users", pa.array([by_type.get("returning", 0)], pa.int64()))


# -- opportunities and market data -------------------------------------------------------------


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


# -- the report -------------------------------------------------------------------------------

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
