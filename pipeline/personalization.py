"""The engagement model, fitted over the lake for every user at once (docs/personalization.md).

:func:`read_events` reads what users were shown and what they did with it, with DuckDB over
the lake's views (one windowed connection, ``lookback`` back from ``now``):

- *shown*: ``deliveries`` rows ``sent`` to a user on Telegram (audience ``user``; an outbound
  webhook's POST is no push the user saw);
- *opened*: ``engagement`` ``push_button`` presses of ``details`` or ``more`` on a push, and
  details opened from ``/opportunities`` (``audit`` ``cb:od``, detail ``id=…``);
- *muted*: ``engagement`` ``push_button`` presses of ``mute1h`` on a push;
- *blocked*: ``audit`` ``/settings`` ``block <symbol|exchange>`` (ok), unless the user's
  latest such row for the value is an ``unblock``.

A user's rows before their latest ``forget`` (``audit``: ``/forget``) do not count: the lake keeps
them, but a user who asked to be forgotten starts anew.

One row per (user, opportunity) comes back, its features from the ``opportunities`` rows
(kind, symbol, legs, ``net_bps`` of its first pushable event; the delivery's kind and edge when
the opportunity is older than the window), and one row per (user, blocked value).

:func:`fit` turns them into the model with Polars, vectorised over all users: each row
weighs ``0.5 ** (age / half_life)`` by its latest event; a push counts as *exposure* (a muted
one ``1 + MUTE_WEIGHT`` times) and, when opened, as an *open*. Per user and feature the
smoothed rate ``(opens + k·r_user) / (exposure + k)`` (``k`` = ``prior_events``) against the
user's own smoothed rate ``r_user = (opens + k·g) / (exposure + k)`` (``g``: everyone's rate)
gives the affinity ``ln(rate / r_user)``, clipped (``core.personalization``). Users with fewer
than ``min_events`` events get no model (neutral). :func:`records` encodes each user's model as
one JSON string (``state.personalization`` stores them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from core.personalization import (
    AFFINITY_CLIP,
    EDGE,
    EDGE_EDGES_BPS,
    EXCHANGE,
    KIND,
    MUTE_WEIGHT,
    SYMBOL,
)
from core.settings import PersonalizationSettings
from pipeline.analytics.deliveries import TELEGRAM_ROWS
from pipeline.analytics.view import LakeView, _ts
from pipeline.lake import Lake

PAIRS_SCHEMA = {
    "user_id": pl.Int64,
    "opportunity_id": pl.String,
    "ts": pl.Datetime("ms", "UTC"),
    "opened": pl.Boolean,
    "muted": pl.Boolean,
    "kind": pl.String,
    "symbol": pl.String,
    "buy_exchange": pl.String,
    "sell_exchange": pl.String,
    "net_bps": pl.Float64,
}
"""One row per (user, opportunity): its latest event, whether it was opened and muted, and
the opportunity's features."""
BLOCKS_SCHEMA = {"user_id": pl.Int64, "ts": pl.Datetime("ms", "UTC"), "feature": pl.String}
"""One row per (user, blocked symbol or exchange), as a feature name."""
AFFINITY_SCHEMA = {"user_id": pl.Int64, "feature": pl.String, "affinity": pl.Float64}
USERS_SCHEMA = {
    "user_id": pl.Int64,
    "base": pl.Float64,
    "events": pl.Int64,
    "exposure": pl.Float64,
    "opens": pl.Float64,
}
MIN_AFFINITY = 1e-3
"""Affinities closer to zero than this are not stored (they change nothing)."""


@dataclass(frozen=True, slots=True)
class Params:
    half_life_days: float = 14.0
    min_events: int = 5
    prior_events: float = 5.0

    @classmethod
    def from_settings(cls, settings: PersonalizationSettings) -> Params:
        return cls(settings.half_life_days, settings.min_events, settings.prior_events)


@dataclass(frozen=True, slots=True)
class Model:
    """The fitted model: one row per user with a model, one per (user, feature) affinity."""

    users: pl.DataFrame
    """``user_id``, ``base`` (smoothed open rate), ``events``, ``exposure``, ``opens`` (decayed)."""
    affinities: pl.DataFrame
    """``user_id``, ``feature``, ``affinity`` (``ln`` of the rate ratio, clipped)."""
    global_rate: float
    computed_at: datetime

    @property
    def size(self) -> int:
        return self.users.height


def _sql_events(v: LakeView, since: datetime, now: datetime) -> tuple[str, str]:
    d, e, a, o = (v.window(name, since) for name in ("deliveries", "engagement", "audit", "opportunities"))
    # a user who used /forget starts anew: nothing of theirs before it counts (the lake keeps it)
    forgot = (
        f"forgot AS (SELECT actor_id AS user_id, max(ts) AS ts FROM audit WHERE action = 'forget' AND {a} "
        "GROUP BY 1)"
    )
    after = "(f.ts IS NULL OR q.ts > f.ts)"
    pairs = f"""
        WITH {forgot},
        shown AS (
            SELECT user_id, opportunity_id, max(coalesce(sent_at, queued_at)) AS ts,
                any_value(kind) AS kind, any_value(net_bps) AS net_bps
            FROM deliveries
            WHERE status = 'sent' AND audience = 'user' AND user_id IS NOT NULL AND {d} AND {TELEGRAM_ROWS}
            GROUP BY 1, 2
        ),
        acts AS (
            SELECT user_id, opportunity_id, ts,
                starts_with(coalesce(detail, ''), 'mute') AS muted
            FROM engagement
            WHERE action = 'push_button' AND opportunity_id IS NOT NULL AND {e}
                AND (starts_with(coalesce(detail, ''), 'details') OR starts_with(coalesce(detail, ''), 'more')
                     OR starts_with(coalesce(detail, ''), 'mute'))
            UNION ALL
            SELECT actor_id, substr(detail, 4), ts, false
            FROM audit WHERE action = 'cb:od' AND ok AND starts_with(detail, 'id=') AND {a}
        ),
        acted AS (
            SELECT user_id, opportunity_id, max(ts) AS ts,
                bool_or(NOT muted) AS opened, bool_or(muted) AS muted
            FROM acts GROUP BY 1, 2
        ),
        opp AS (
            SELECT opportunity_id, any_value(kind) AS kind, any_value(symbol) AS symbol,
                any_value(buy_exchange) AS buy_exchange, any_value(sell_exchange) AS sell_exchange,
                coalesce(arg_min(net_bps, detected_at) FILTER (WHERE pushable),
                         arg_min(net_bps, detected_at)) AS net_bps
            FROM opportunities WHERE {o} GROUP BY 1
        ),
        joined AS (
        SELECT coalesce(s.user_id, x.user_id) AS user_id,
            coalesce(s.opportunity_id, x.opportunity_id) AS opportunity_id,
            greatest(s.ts, x.ts) AS ts,
            coalesce(x.opened, false) AS opened,
            coalesce(x.muted, false) AS muted,
            coalesce(p.kind, s.kind) AS kind, p.symbol, p.buy_exchange, p.sell_exchange,
            coalesce(p.net_bps, s.net_bps) AS net_bps
        FROM shown s
        FULL OUTER JOIN acted x ON s.user_id = x.user_id AND s.opportunity_id = x.opportunity_id
        LEFT JOIN opp p ON p.opportunity_id = coalesce(s.opportunity_id, x.opportunity_id)
        )
        SELECT q.* FROM joined q LEFT JOIN forgot f ON f.user_id = q.user_id
        WHERE q.ts <= {_ts(now)} AND {after}
    """
    blocks = f"""
        WITH {forgot},
        b AS (
            SELECT actor_id AS user_id, ts,
                split_part(detail, ' ', 1) AS verb, split_part(detail, ' ', 2) AS value
            FROM audit
            WHERE action = '/settings' AND ok AND {a}
                AND (starts_with(detail, 'block ') OR starts_with(detail, 'unblock '))
        ),
        latest AS (
            SELECT user_id, max(ts) AS ts,
                CASE WHEN contains(value, '/') THEN '{SYMBOL}:' || upper(value)
                     ELSE '{EXCHANGE}:' || lower(value) END AS feature
            FROM b WHERE value <> ''
            GROUP BY user_id, value
            HAVING arg_max(verb, ts) = 'block'
        )
        SELECT q.* FROM latest q LEFT JOIN forgot f ON f.user_id = q.user_id
        WHERE q.ts <= {_ts(now)} AND {after}
    """
    return pairs, blocks


def read_events(lake: Lake, now: datetime, lookback_days: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The (user, opportunity) rows and the blocked values of the last ``lookback_days``."""
    now = now.astimezone(UTC)
    since = now - timedelta(days=lookback_days)
    with LakeView(lake, now=now, start=since, end=now + timedelta(hours=1)) as v:
        pairs_sql, blocks_sql = _sql_events(v, since, now)
        pairs = pl.from_arrow(v.sql(pairs_sql))
        blocks = pl.from_arrow(v.sql(blocks_sql))
    assert isinstance(pairs, pl.DataFrame) and isinstance(blocks, pl.DataFrame)
    pairs = pairs.cast(PAIRS_SCHEMA).select(list(PAIRS_SCHEMA))  # type: ignore[arg-type]
    blocks = blocks.cast(BLOCKS_SCHEMA).select(list(BLOCKS_SCHEMA))  # type: ignore[arg-type]
    return pairs, blocks


def _decay(now: datetime, half_life_days: float) -> pl.Expr:
    age_days = (pl.lit(now) - pl.col("ts")).dt.total_milliseconds().clip(lower_bound=0) / 86_400_000.0
    return pl.lit(0.5).pow(age_days / half_life_days)


def _edge_bucket(col: str) -> pl.Expr:
    bucket = pl.lit(0, pl.Int64)
    for bound in EDGE_EDGES_BPS:
        bucket = bucket + (pl.col(col).fill_null(0.0).fill_nan(0.0) >= bound).cast(pl.Int64)
    return bucket


def _feature_rows(pairs: pl.DataFrame) -> pl.DataFrame:
    """Every (user, opportunity) row once per feature of its opportunity (long form)."""
    base = ["user_id", "opportunity_id", "exposure", "opens"]
    kinds = pl.col("kind").fill_null("unknown")
    parts = [
        pairs.select(*base, (pl.lit(f"{KIND}:") + kinds).alias("feature")),
        pairs.filter(pl.col("symbol").is_not_null()).select(
            *base, (pl.lit(f"{SYMBOL}:") + pl.col("symbol").str.to_uppercase()).alias("feature")
        ),
        pairs.select(
            *base,
            (pl.lit(f"{EDGE}:") + kinds + pl.lit(":") + _edge_bucket("net_bps").cast(pl.String)).alias(
                "feature"
            ),
        ),
    ]
    for leg in ("buy_exchange", "sell_exchange"):
        parts.append(
            pairs.filter(pl.col(leg).is_not_null() & (pl.col(leg) != "")).select(
                *base, (pl.lit(f"{EXCHANGE}:") + pl.col(leg).str.to_lowercase()).alias("feature")
            )
        )
    return pl.concat(parts).unique(["user_id", "opportunity_id", "feature"], keep="first")


def fit(pairs: pl.DataFrame, blocks: pl.DataFrame, now: datetime, params: Params = Params()) -> Model:
    """The model from :func:`read_events`' frames (see the module doc), all users at once."""
    now = now.astimezone(UTC)
    k = float(params.prior_events)
    pairs = pairs.filter(pl.col("user_id").is_not_null() & pl.col("ts").is_not_null()).with_columns(
        w=_decay(now, params.half_life_days)
    )
    pairs = pairs.with_columns(
        exposure=pl.col("w") * (1.0 + MUTE_WEIGHT * pl.col("muted").cast(pl.Float64)),
        opens=pl.col("w") * pl.col("opened").cast(pl.Float64),
    )
    blocks = blocks.filter(pl.col("user_id").is_not_null() & pl.col("ts").is_not_null()).select(
        "user_id",
        "feature",
        exposure=_decay(now, params.half_life_days) * MUTE_WEIGHT,
        opens=pl.lit(0.0),
    )
    users = (
        pl.concat(
            [
                pairs.select("user_id", "exposure", "opens", n=pl.lit(1, pl.Int64)),
                blocks.select("user_id", "exposure", "opens", n=pl.lit(1, pl.Int64)),
            ]
        )
        .group_by("user_id")
        .agg(pl.col("exposure").sum(), pl.col("opens").sum(), pl.col("n").sum().alias("events"))
    )
    total_open = float(pairs.get_column("opens").sum() or 0.0)
    total_exp = float(pairs.get_column("exposure").sum() or 0.0)
    g = min(0.99, max(0.01, (total_open + 1.0) / (total_exp + 2.0)))
    users = users.filter(pl.col("events") >= params.min_events).with_columns(
        base=(pl.col("opens") + k * g) / (pl.col("exposure") + k)
    )
    per_feature = pl.concat(
        [
            _feature_rows(pairs).select("user_id", "feature", "exposure", "opens"),
            blocks.select("user_id", "feature", "exposure", "opens"),
        ]
    )
    affinities = (
        per_feature.group_by("user_id", "feature")
        .agg(pl.col("exposure").sum(), pl.col("opens").sum())
        .join(users.select("user_id", "base"), on="user_id", how="inner")
        .select(
            "user_id",
            "feature",
            affinity=(((pl.col("opens") + k * pl.col("base")) / (pl.col("exposure") + k)) / pl.col("base"))
            .log()
            .clip(-AFFINITY_CLIP, AFFINITY_CLIP),
        )
        .filter(pl.col("affinity").abs() >= MIN_AFFINITY)
        .sort("user_id", "feature")
    )
    return Model(
        users=users.select(list(USERS_SCHEMA)).cast(USERS_SCHEMA).sort("user_id"),  # type: ignore[arg-type]
        affinities=affinities.cast(AFFINITY_SCHEMA),  # type: ignore[arg-type]
        global_rate=g,
        computed_at=now,
    )


def compute(lake: Lake, now: datetime, settings: PersonalizationSettings) -> Model:
    """Read the lake and fit: the scheduled task's work."""
    pairs, blocks = read_events(lake, now, settings.lookback_days)
    return fit(pairs, blocks, now, Params.from_settings(settings))


def records(model: Model) -> pl.DataFrame:
    """``user_id`` and ``record``: each user's model as one JSON string
    (``{"b": base, "n": events, "a": [{"f": feature, "v": affinity}, …]}``), built vectorised."""
    grouped = model.affinities.group_by("user_id").agg(
        pl.struct(pl.col("feature").alias("f"), pl.col("affinity").round(4).alias("v")).alias("a")
    )
    return (
        model.users.join(grouped, on="user_id", how="left")
        .select(
            "user_id",
            record=pl.struct(
                pl.col("base").round(5).alias("b"),
                pl.col("events").alias("n"),
                pl.col("a").fill_null(pl.lit([], pl.List(pl.Struct({"f": pl.String, "v": pl.Float64})))),
            ).struct.json_encode(),
        )
        .sort("user_id")
    )


__all__ = ["Model", "Params", "compute", "fit", "read_events", "records"]
