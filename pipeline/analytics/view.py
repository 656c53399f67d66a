"""One DuckDB connection over the lake for the analytics (:class:`LakeView`), its empty
views for datasets without files, and the SQL literals and time helpers every query uses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from core.errors import LakeError
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
