"""Users: active sessions, new and returning users (``session_events``), the onboarding
funnel (``audit``)."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from pipeline.analytics.view import Source, _now, _sql_str, _ts, _utc, _view

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
END_EVENTS = ("expired", "ended", "blocked")


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
