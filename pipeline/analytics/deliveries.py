"""Deliveries: by tier, per hour and minute, skips by layer, Telegram's 429s, latency
percentiles, engagement per kind (``deliveries``, ``engagement``), and the one-row summary.

These are the Telegram side's figures: rows of outbound webhook POSTs (``channel =
'webhook'``, docs/outbound-webhooks.md) are left out (:data:`TELEGRAM_ROWS`); rows written
before the column existed are Telegram's."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from pipeline.analytics.users import active_sessions, new_vs_returning
from pipeline.analytics.view import Source, _now, _view

LATENCY_QUANTILES = (0.5, 0.9, 0.99)
THROTTLED_REASON = "429"
TELEGRAM_ROWS = "coalesce(channel, 'telegram') = 'telegram'"
"""The ``deliveries`` rows of Telegram messages (not of outbound webhook POSTs)."""

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
        FROM deliveries WHERE {v.window("deliveries", since)} AND {TELEGRAM_ROWS}
        GROUP BY 1 ORDER BY sent DESC, tier
        """
        return v.sql(sql)


def _per_bucket(source: Source, since: datetime | None, unit: str, now: datetime | None) -> pa.Table:
    with _view(source, now) as v:
        sql = f"""
        SELECT date_trunc('{unit}', coalesce(sent_at, queued_at)) AS {unit}, {_STATUS_COUNTS},
            count(*) FILTER (WHERE status = 'retry' AND reason = '{THROTTLED_REASON}') AS throttled_429
        FROM deliveries WHERE {v.window("deliveries", since)} AND {TELEGRAM_ROWS}
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
        FROM deliveries WHERE status = 'skipped' AND {v.window("deliveries", since)} AND {TELEGRAM_ROWS}
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
        FROM deliveries WHERE status = 'retry' AND {v.window("deliveries", since)} AND {TELEGRAM_ROWS}
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
            WHERE status = 'sent' AND latency_ms IS NOT NULL
                AND {v.window("deliveries", since)} AND {TELEGRAM_ROWS}
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
            WHERE status = 'sent' AND {v.window("deliveries", since)} AND {TELEGRAM_ROWS} GROUP BY 1
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
            FROM deliveries WHERE {d} AND {TELEGRAM_ROWS}
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
