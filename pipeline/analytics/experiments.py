"""Experiments: per variant, the users who got pushes, the pushes sent, the pushes engaged
with, the engagement rate with its 95% interval, and the difference from the control (the
first variant) with its interval and p-value (``arbflow report --experiment NAME``, the
dashboard's per-variant chart, ``GET /api/experiments/<name>``, the demo's last table).

Where the figures come from: ``deliveries`` rows ``sent`` whose ``experiment`` is the
experiment's name (the queue shards write the user's experiment and variant on every row;
files written before those columns read them as null: no experiment), one push per (user,
opportunity) (a digest of three is three pushes; the "missed while delayed" digests are not
pushes of the strategy and are left out, and so are outbound webhook POSTs, ``channel =
'webhook'``: the strategy is about Telegram messages); a push is *engaged* when the same user has an
``engagement`` row on the same opportunity (a button of the push pressed, details opened).

The statistics are :mod:`core.stats`: the rate is a ratio of per-user sums and its variance
is the users' (pushes of one user are correlated), so an A/A split is significant at 5%
about 5% of the time, not far more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from rich.table import Table as RichTable

from core.experiments import Experiment
from core.stats import Difference, RatioEstimate, difference, ratio_estimate, verdict
from pipeline.analytics.deliveries import TELEGRAM_ROWS
from pipeline.analytics.view import Source, _sql_str, _view

ENGAGED_ACTIONS = ("push_button", "details")
"""``engagement`` actions that make a push engaged."""

PUSH_EXCLUDED_KINDS = ("missed_digest",)
"""Rows of these kinds are messages of their own, not pushes of an opportunity."""


def experiments_seen(source: Source, since: datetime | None, *, now: datetime | None = None) -> list[str]:
    """The experiment names the ``deliveries`` rows of the window carry, sorted."""
    with _view(source, now) as v:
        table = v.sql(
            f"SELECT DISTINCT experiment FROM deliveries WHERE experiment IS NOT NULL "
            f"AND {v.window('deliveries', since)} ORDER BY 1"
        )
    return [str(x) for x in table.column("experiment").to_pylist()]


def experiment_users(
    source: Source, name: str, since: datetime | None, *, now: datetime | None = None
) -> pa.Table:
    """One row per (variant, user) of experiment ``name`` who was sent at least one push in
    the window: ``variant``, ``user_id``, ``sent`` (pushes: distinct opportunities) and
    ``engaged`` (of them, those the user engaged with)."""
    actions = ", ".join(_sql_str(a) for a in ENGAGED_ACTIONS)
    excluded = ", ".join(_sql_str(k) for k in PUSH_EXCLUDED_KINDS)
    with _view(source, now) as v:
        sql = f"""
        WITH sent AS (
            SELECT DISTINCT variant, user_id, opportunity_id FROM deliveries
            WHERE status = 'sent' AND experiment = {_sql_str(name)} AND variant IS NOT NULL
                AND user_id IS NOT NULL AND coalesce(kind, '') NOT IN ({excluded}) AND {TELEGRAM_ROWS}
                AND {v.window("deliveries", since)}
        ),
        pressed AS (
            SELECT DISTINCT user_id, opportunity_id FROM engagement
            WHERE action IN ({actions}) AND opportunity_id IS NOT NULL
                AND {v.window("engagement", since)}
        )
        SELECT s.variant, s.user_id, count(*) AS sent, count(p.user_id) AS engaged
        FROM sent s LEFT JOIN pressed p
            ON p.user_id = s.user_id AND p.opportunity_id = s.opportunity_id
        GROUP BY 1, 2 ORDER BY 1, 2
        """
        return v.sql(sql)


@dataclass(frozen=True, slots=True)
class VariantResult:
    """One variant's figures; ``diff`` against the control (None for the control itself)."""

    name: str
    control: bool
    estimate: RatioEstimate
    diff: Difference | None
    verdict: str | None

    @property
    def pushes(self) -> int:
        return int(self.estimate.denominator)

    @property
    def engaged(self) -> int:
        return int(self.estimate.numerator)

    def as_dict(self) -> dict[str, Any]:
        interval = self.estimate.interval()
        d = self.diff
        return {
            "variant": self.name,
            "control": self.control,
            "users": self.estimate.users,
            "pushes_sent": self.pushes,
            "engaged": self.engaged,
            "engagement_rate": self.estimate.rate,
            "rate_low": None if interval is None else interval[0],
            "rate_high": None if interval is None else interval[1],
            "diff": None if d is None else d.diff,
            "diff_low": None if d is None else d.low,
            "diff_high": None if d is None else d.high,
            "p_value": None if d is None else d.p_value,
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class ExperimentReport:
    """An experiment's figures per variant, the control first."""

    name: str
    configured: bool
    """Whether the experiment is in ``ARBFLOW_EXPERIMENTS`` now (else known from the lake only)."""
    variants: tuple[VariantResult, ...]
    description: str = ""

    @property
    def control(self) -> VariantResult:
        return self.variants[0]

    @property
    def verdicts(self) -> list[str]:
        return [v.verdict for v in self.variants if v.verdict]

    def table(self) -> pa.Table:
        return pa.Table.from_pylist([v.as_dict() for v in self.variants], schema=REPORT_SCHEMA)

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.name,
            "configured": self.configured,
            "description": self.description,
            "control": self.control.name,
            "variants": [v.as_dict() for v in self.variants],
            "verdicts": self.verdicts,
        }


REPORT_SCHEMA = pa.schema(
    [
        ("variant", pa.string()),
        ("control", pa.bool_()),
        ("users", pa.int64()),
        ("pushes_sent", pa.int64()),
        ("engaged", pa.int64()),
        ("engagement_rate", pa.float64()),
        ("rate_low", pa.float64()),
        ("rate_high", pa.float64()),
        ("diff", pa.float64()),
        ("diff_low", pa.float64()),
        ("diff_high", pa.float64()),
        ("p_value", pa.float64()),
        ("verdict", pa.string()),
    ]
)


class UnknownExperiment(LookupError):
    """No experiment of that name is configured or in the lake's deliveries."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        listed = (
            ", ".join(self.known) if self.known else "none (set ARBFLOW_EXPERIMENTS; docs/experiments.md)"
        )
        super().__init__(f"no experiment named {name!r}; known: {listed}")


def analyse(
    name: str,
    per_user: pa.Table,
    variants: Sequence[str],
    *,
    configured: bool = True,
    description: str = "",
    alpha: float = 0.05,
) -> ExperimentReport:
    """The report from :func:`experiment_users`' rows; ``variants`` in order, the control
    first (a variant with no users still has its row). Variants found only in the rows come
    after, sorted. With more than two variants each is compared with the control at
    ``alpha`` divided by the comparisons (Bonferroni)."""
    rows = per_user.to_pylist()
    order = list(dict.fromkeys([*variants, *sorted({str(r["variant"]) for r in rows})]))
    if not order:
        raise ValueError(f"experiment {name!r} has no variants")
    level = alpha / max(1, len(order) - 1)
    estimates = {
        v: ratio_estimate(
            [int(r["engaged"]) for r in rows if r["variant"] == v],
            [int(r["sent"]) for r in rows if r["variant"] == v],
        )
        for v in order
    }
    control = order[0]
    results = [VariantResult(control, True, estimates[control], None, None)]
    for v in order[1:]:
        diff = difference(estimates[control], estimates[v])
        line = verdict(control, v, estimates[control], estimates[v], diff, alpha=level)
        results.append(VariantResult(v, False, estimates[v], diff, line))
    return ExperimentReport(name, configured, tuple(results), description)


def experiment_report(
    source: Source,
    name: str,
    experiments: Sequence[Experiment],
    since: datetime | None,
    *,
    now: datetime | None = None,
) -> ExperimentReport:
    """Experiment ``name``'s report over the window: a configured one's variants in their
    order (the first is the control); one that is no longer configured, from the variants its
    rows name. :class:`UnknownExperiment` (listing the known ones) when neither."""
    configured = next((e for e in experiments if e.name == name), None)
    with _view(source, now) as v:
        if configured is None:
            seen = experiments_seen(v, None)
            if name not in seen:
                known = list(dict.fromkeys([*(e.name for e in experiments), *seen]))
                raise UnknownExperiment(name, known)
        per_user = experiment_users(v, name, since)
    variants = [x.name for x in configured.variants] if configured is not None else []
    return analyse(
        name,
        per_user,
        variants,
        configured=configured is not None,
        description=configured.description if configured is not None else "",
    )


def experiment_reports(
    source: Source, experiments: Sequence[Experiment], since: datetime | None, *, now: datetime | None = None
) -> list[ExperimentReport]:
    """The report of every configured experiment (the dashboard's charts)."""
    with _view(source, now) as v:
        return [experiment_report(v, e.name, experiments, since) for e in experiments]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _pts(value: float) -> str:
    return f"{100 * value:+.1f}"


def rich_table(report: ExperimentReport) -> RichTable:
    """The report as one terminal table: per variant its users, pushes, engaged pushes, the
    rate with its 95% interval, the difference from the control (points) with its interval
    and the p-value; the verdicts as the caption."""
    title = f"Experiment {report.name}: engagement per variant"
    table = RichTable(title=title, title_justify="left", min_width=len(title))
    for col in ("variant", "users", "pushes", "engaged", "rate [95% CI]", "vs control, pts [95% CI]", "p"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v in report.variants:
        interval = v.estimate.interval()
        rate = _pct(v.estimate.rate) + (
            "" if interval is None else f" [{_pct(interval[0])}, {_pct(interval[1])}]"
        )
        if v.control:
            diff, p = "control", "-"
        elif v.diff is None:
            diff, p = "-", "-"
        else:
            diff = f"{_pts(v.diff.diff)} [{_pts(v.diff.low)}, {_pts(v.diff.high)}]"
            p = f"{v.diff.p_value:.3g}"
        table.add_row(v.name, f"{v.estimate.users:,}", f"{v.pushes:,}", f"{v.engaged:,}", rate, diff, p)
    notes = list(report.verdicts)
    if not report.configured:
        notes.append("(no longer in ARBFLOW_EXPERIMENTS: variants as the lake's rows name them)")
    table.caption = "\n".join(notes) or None
    return table


__all__ = [
    "ENGAGED_ACTIONS",
    "REPORT_SCHEMA",
    "ExperimentReport",
    "UnknownExperiment",
    "VariantResult",
    "analyse",
    "experiment_report",
    "experiment_reports",
    "experiment_users",
    "experiments_seen",
    "rich_table",
]
