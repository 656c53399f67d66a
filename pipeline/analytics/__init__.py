"""Analytics over the lake: the DuckDB queries behind ``arbflow report``, ``/admin`` and ``/dashboard``.

One room per job: ``view`` (the connection and its views), ``users``, ``deliveries``,
``opportunities`` (and market data), ``reporting`` (the report, ``/admin``'s figures, the
terminal tables); the package exports what each of them does.

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

from pipeline.analytics.deliveries import (
    LATENCY_QUANTILES,
    THROTTLED_REASON,
    deliveries_by_tier,
    deliveries_per_hour,
    deliveries_per_minute,
    engagement_by_kind,
    latency_percentiles,
    skips_by_layer,
    summary,
    throttled,
)
from pipeline.analytics.opportunities import (
    APR_PCT_EDGES,
    DEFAULT_HORIZON_HOURS,
    EDGE_BUCKETS,
    EDGE_UNITS,
    HOURS_PER_YEAR,
    INFORMATIONAL_FLAGS,
    LOW_CONFIDENCE,
    NET_BPS_EDGES,
    data_freshness,
    edge_buckets,
    flagged_opportunities,
    opportunities_by_edge,
    opportunities_by_kind,
    top_pushable,
)
from pipeline.analytics.reporting import (
    REPORT,
    DeliveryFigures,
    Query,
    delivery_figures,
    parse_duration,
    parse_since,
    report,
    rich_tables,
    start_of_day,
)
from pipeline.analytics.users import (
    END_EVENTS,
    FUNNEL_STEPS,
    active_sessions,
    new_vs_returning,
    onboarding_funnel,
)
from pipeline.analytics.view import DATASETS, EMPTY_SCHEMAS, TIME_COLUMNS, LakeView, Source

__all__ = [
    "APR_PCT_EDGES",
    "DATASETS",
    "DEFAULT_HORIZON_HOURS",
    "EDGE_BUCKETS",
    "EDGE_UNITS",
    "EMPTY_SCHEMAS",
    "END_EVENTS",
    "FUNNEL_STEPS",
    "HOURS_PER_YEAR",
    "INFORMATIONAL_FLAGS",
    "LATENCY_QUANTILES",
    "LOW_CONFIDENCE",
    "NET_BPS_EDGES",
    "REPORT",
    "THROTTLED_REASON",
    "TIME_COLUMNS",
    "DeliveryFigures",
    "LakeView",
    "Query",
    "Source",
    "active_sessions",
    "data_freshness",
    "deliveries_by_tier",
    "deliveries_per_hour",
    "deliveries_per_minute",
    "delivery_figures",
    "edge_buckets",
    "engagement_by_kind",
    "flagged_opportunities",
    "latency_percentiles",
    "new_vs_returning",
    "onboarding_funnel",
    "opportunities_by_edge",
    "opportunities_by_kind",
    "parse_duration",
    "parse_since",
    "report",
    "rich_tables",
    "skips_by_layer",
    "start_of_day",
    "summary",
    "throttled",
    "top_pushable",
]
