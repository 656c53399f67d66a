"""Reading the lake: DuckDB views, Polars lazy scans, windows, and output formats for the CLI.

Every dataset of ``DATASET_PATHS`` is a DuckDB view by its name and a Polars scan, in
today's schema whatever release wrote the files (``pipeline.versions``): files are read by
name and unioned with an empty table of the dataset's reading schema, so older files give
NULL for columns they lack and their renamed columns are mapped. The partition columns
``year``, ``month``, ``day``, ``hour`` (INTEGER) come from the path.

S3 (:func:`attach_s3`): DuckDB reads an S3 lake natively with its ``httpfs`` extension
where one can be loaded — the file ``ARBFLOW_LAKE__DUCKDB_HTTPFS`` points at, else one
already installed in DuckDB's extension directory (nothing is ever downloaded) — with a
``SECRET`` of TYPE s3 for the lake's endpoint and keys; otherwise through the lake's s3fs
filesystem registered with the connection. Which one is logged once per process.

Windows: :func:`scan`, :func:`relation` and ``connect(lake, start=…, end=…)`` list and read
only the hour partitions of ``[start, end)`` (``Lake.window_files``), never the whole
dataset; use them for anything long-lived (notebooks, backtests). Without a window a view
binds every file of its dataset (one footer read each).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any, Literal

import duckdb
import polars as pl
import pyarrow as pa
from rich.table import Table as RichTable

from core.errors import LakeError
from pipeline.lake import Lake
from pipeline.schemas import DATASET_PATHS
from pipeline.versions import PARTITION_COLUMNS, DatasetVersions, versions

OutputFormat = Literal["table", "csv", "json"]
S3Reader = Literal["httpfs", "fsspec"]

log = logging.getLogger(__name__)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def dataset_glob(lake: Lake, dataset: str) -> str:
    """The glob of a dataset's committed files, with protocol (``s3://…`` or a path)."""
    return lake.uri(lake.dataset_root(dataset)) + "/**/*.parquet"


# -- windows ------------------------------------------------------------------------
LakeLike = Lake | str | None


def resolve_lake(lake: LakeLike = None) -> Lake:
    """A :class:`Lake` from a Lake, a lake URL (the other ``ARBFLOW_LAKE__*`` settings from
    the environment), or None (``ARBFLOW_LAKE__URL``, ``.env`` or ``./var/lake``)."""
    if isinstance(lake, Lake):
        return lake
    from core.settings import load_settings

    settings = load_settings()
    lake_settings = settings.lake if lake is None else settings.lake.model_copy(update={"url": lake})
    return Lake.from_settings(lake_settings)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value.astimezone(UTC)


def _files(lake: Lake, dataset: str, start: datetime | None, end: datetime | None) -> list[str] | str | None:
    """What a reader of ``[start, end)`` opens: the window's files (listed partition by
    partition), or the dataset's glob when there is no bound; None when nothing."""
    if start is None and end is None:
        return dataset_glob(lake, dataset) if lake.has_files(dataset) else None
    files = lake.window_files(dataset, start, end)
    return [lake.uri(p) for p in files] or None


def row_filter_sql(
    dataset: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    symbols: Iterable[str] | None = None,
    exchanges: Iterable[str] | None = None,
    registry: Mapping[str, DatasetVersions] | None = None,
) -> str:
    """SQL predicate keeping a window's rows: exact time bounds on the dataset's time column,
    symbols, exchanges (for opportunities: either leg); ``true`` when unbounded."""
    entry = versions(dataset, registry)
    out: list[str] = []
    tcol = _ident(entry.time_column)
    if start is not None:
        out.append(f"{tcol} >= TIMESTAMPTZ {_sql_str(_iso(start))}")
    if end is not None:
        out.append(f"{tcol} < TIMESTAMPTZ {_sql_str(_iso(end))}")
    if symbols is not None:
        if entry.symbol_column is None:
            raise ValueError(f"{dataset} has no symbol column to filter by")
        values = ", ".join(_sql_str(s) for s in symbols) or "NULL"
        out.append(f"{_ident(entry.symbol_column)} IN ({values})")
    if exchanges is not None:
        if not entry.exchange_columns:
            raise ValueError(f"{dataset} has no exchange column to filter by")
        values = ", ".join(_sql_str(e) for e in exchanges) or "NULL"
        out.append("(" + " OR ".join(f"{_ident(c)} IN ({values})" for c in entry.exchange_columns) + ")")
    return " AND ".join(out) if out else "true"


# -- DuckDB --------------------------------------------------------------------------
HTTPFS_SECRET = "arbflow_lake"


def httpfs_target(configured: str, *, configured_exists: bool, installed: bool) -> tuple[str | None, str]:
    """What to ``LOAD`` for DuckDB's httpfs, and why: the configured extension file when it
    exists, else the installed extension (``httpfs``), else None (use fsspec).

    A configured path that does not exist is not silently replaced by the installed one:
    the operator asked for that file, so it is None with the reason."""
    if configured:
        if configured_exists:
            return configured, f"ARBFLOW_LAKE__DUCKDB_HTTPFS={configured}"
        return None, f"ARBFLOW_LAKE__DUCKDB_HTTPFS={configured} does not exist"
    if installed:
        return "httpfs", "httpfs installed in DuckDB's extension directory"
    return None, "no httpfs extension installed for this DuckDB and none configured"


def httpfs_secret_sql(lake: Lake, name: str = HTTPFS_SECRET) -> str:
    """``CREATE SECRET`` (TYPE s3) for the lake: its endpoint (host[:port], ``USE_SSL`` from
    the endpoint's scheme), path-style URLs, its region, and its keys or none (anonymous).

    Built from ``lake.storage_options`` (the same options Polars' object_store gets)."""
    opts = lake.storage_options
    parts = ["TYPE s3", "URL_STYLE 'path'", f"REGION {_sql_str(opts.get('aws_region') or 'us-east-1')}"]
    endpoint = opts.get("aws_endpoint_url", "")
    if endpoint:
        scheme, _, rest = endpoint.partition("://")
        if not rest:  # no scheme given: https, as boto does
            scheme, rest = "https", endpoint
        parts.append(f"ENDPOINT {_sql_str(rest.rstrip('/'))}")
        parts.append(f"USE_SSL {'true' if scheme.lower() == 'https' else 'false'}")
    else:
        parts.append("USE_SSL true")
    if opts.get("aws_skip_signature") != "true" and opts.get("aws_access_key_id"):
        parts.append(f"KEY_ID {_sql_str(opts['aws_access_key_id'])}")
        parts.append(f"SECRET {_sql_str(opts.get('aws_secret_access_key', ''))}")
    parts.append(f"SCOPE {_sql_str('s3://' + lake.root.split('/', 1)[0])}")
    return f"CREATE OR REPLACE SECRET {_ident(name)} ({', '.join(parts)})"


_announced: set[tuple[str, str]] = set()


def _announce(reader: S3Reader, reason: str, *, warn: bool = False) -> None:
    """Log which S3 reader DuckDB uses, once per process and reason."""
    if (reader, reason) in _announced:
        return
    _announced.add((reader, reason))
    (log.warning if warn else log.info)("DuckDB reads the S3 lake through %s (%s)", reader, reason)


def _httpfs_installed(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT installed OR loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'"
    ).fetchall()  # all rows: DuckDB 2.0 keeps a connection busy until its result is drained
    return bool(rows and rows[0][0])


def attach_s3(con: duckdb.DuckDBPyConnection, lake: Lake) -> S3Reader:
    """Make ``s3://`` paths of ``lake`` readable by ``con``: DuckDB's own httpfs where it can be
    loaded without a download (:func:`httpfs_target`), configured with
    :func:`httpfs_secret_sql`; otherwise the lake's s3fs filesystem, registered. Returns which."""
    configured = lake.duckdb_httpfs.strip()
    target, reason = httpfs_target(
        configured,
        configured_exists=bool(configured) and os.path.isfile(configured),
        installed=not configured and _httpfs_installed(con),
    )
    warn = bool(configured)  # the operator asked for httpfs: falling back is worth a warning
    if target is not None:
        try:
            con.execute("LOAD httpfs" if target == "httpfs" else f"LOAD {_sql_str(target)}")
            con.execute(httpfs_secret_sql(lake))
        except duckdb.Error as exc:
            reason = f"loading httpfs from {target} failed: {str(exc).splitlines()[0]}"
        else:
            _announce("httpfs", reason)
            return "httpfs"
    con.register_filesystem(lake.fs)
    _announce("fsspec", reason, warn=warn)
    return "fsspec"


def connect(
    lake: Lake,
    *,
    datasets: Iterable[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    symbols: Iterable[str] | None = None,
    exchanges: Iterable[str] | None = None,
    registry: Mapping[str, DatasetVersions] | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per dataset (session time zone UTC).

    Every view has today's columns in order, whatever version wrote the files: each file
    is read by name (``union_by_name``) and unioned with an empty table of the dataset's
    reading schema, so a column an older file lacks is null and a renamed column is
    mapped (``pipeline.versions``); then the partition columns (INTEGER).

    ``start``/``end`` (UTC-aware) make the views windowed: only the hour partitions
    holding ``[start, end)`` are listed and read, and the views keep the rows of
    ``[start, end)`` by each dataset's time column. ``symbols``/``exchanges`` filter the
    datasets that have such columns (the others are left whole). Without a window a
    view covers the whole dataset. A dataset without files is an empty view of its schema.
    """
    start, end = _utc(start), _utc(end)
    symbols = list(symbols) if symbols is not None else None
    exchanges = list(exchanges) if exchanges is not None else None
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        if not lake.is_local:
            attach_s3(con, lake)
        hive_types = "{" + ", ".join(f"{_sql_str(c)}: 'INTEGER'" for c in PARTITION_COLUMNS) + "}"
        for name in datasets if datasets is not None else DATASET_PATHS:
            entry = versions(name, registry)
            hidden = f"__schema_{name}"
            con.register(hidden, _reading_table(entry))
            files = _files(lake, name, start, end)
            inner = f"SELECT * FROM {_ident(hidden)}"
            if files is not None:
                listed = (
                    _sql_str(files) if isinstance(files, str) else "[" + ", ".join(map(_sql_str, files)) + "]"
                )
                inner += (
                    f" UNION ALL BY NAME SELECT * FROM read_parquet({listed}, hive_partitioning = true, "
                    f"union_by_name = true, hive_types = {hive_types})"
                )
            where = row_filter_sql(
                name,
                start,
                end,
                symbols=symbols if entry.symbol_column else None,
                exchanges=exchanges if entry.exchange_columns else None,
                registry=registry,
            )
            con.execute(
                f"CREATE VIEW {_ident(name)} AS SELECT {entry.sql_projection()} FROM ({inner}) WHERE {where}"
            )
    except duckdb.Error as exc:
        con.close()
        raise LakeError(f"could not open the lake {lake!r} in DuckDB: {exc}") from exc
    return con


def _reading_table(entry: DatasetVersions) -> pa.Table:
    fields = [*entry.reading_schema(), *(pa.field(c, pa.int32()) for c in PARTITION_COLUMNS)]
    return pa.schema(fields).empty_table()


def relation(
    dataset: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    symbols: Iterable[str] | None = None,
    exchanges: Iterable[str] | None = None,
    lake: LakeLike = None,
    registry: Mapping[str, DatasetVersions] | None = None,
) -> duckdb.DuckDBPyRelation:
    """The DuckDB twin of :func:`scan`: a relation of the window's rows on a connection of
    its own (``rel.con`` is not exposed: aggregate with ``rel.aggregate(…)``,
    ``rel.filter(…)``, or ``duckdb.sql("… FROM rel")`` through a Python variable)."""
    lake = resolve_lake(lake)
    start, end = _utc(start), _utc(end)
    where = row_filter_sql(dataset, start, end, symbols=symbols, exchanges=exchanges, registry=registry)
    con = connect(lake, datasets=[dataset], start=start, end=end, registry=registry)
    try:
        return con.sql(f"SELECT * FROM {_ident(dataset)} WHERE {where}")
    except duckdb.Error as exc:
        raise LakeError(f"query failed: {exc}") from exc


def mentioned(sql: str) -> list[str]:
    """The datasets a SQL text names (as words): the views :func:`run_query` binds. Binding a
    view reads the footers of its files, so a query on one dataset does not pay for all."""
    return [name for name in DATASET_PATHS if re.search(rf"\b{re.escape(name)}\b", sql, re.IGNORECASE)]


def run_query(
    lake: Lake, sql: str, *, start: datetime | None = None, end: datetime | None = None
) -> pa.Table:
    """Run SQL over the views of the datasets it names (windowed to ``[start, end)`` when given)."""
    with LakeQuery(lake, datasets=mentioned(sql), start=start, end=end) as q:
        return q.sql(sql)


class LakeQuery:
    """A DuckDB connection over the lake; use as a context manager."""

    def __init__(
        self,
        lake: Lake,
        *,
        datasets: Iterable[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        self.lake = lake
        self.con = connect(lake, datasets=datasets, start=start, end=end)

    def sql(self, sql: str) -> pa.Table:
        try:
            rel = self.con.sql(sql)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        except duckdb.Error as exc:
            raise LakeError(f"query failed: {exc}") from exc

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> LakeQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hour_floor(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _hour_bounds(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """First and last hour partitions (inclusive) holding instants of ``[start, end)``."""
    return _hour_floor(start), _hour_floor(end - timedelta(microseconds=1))


def _parts(value: datetime) -> tuple[int, int, int, int]:
    return value.year, value.month, value.day, value.hour


def _lex_sql(values: tuple[int, ...], op: str, cols: tuple[str, ...] = PARTITION_COLUMNS) -> str:
    """``(year, month, day, hour) op values`` spelled out column by column (op: ``>`` or ``<``)."""
    head, value = cols[0], values[0]
    if len(cols) == 1:
        return f"{head} {op}= {value}"
    return f"({head} {op} {value} OR ({head} = {value} AND {_lex_sql(values[1:], op, cols[1:])}))"


def hour_filter(start: datetime, end: datetime) -> str:
    """SQL predicate over the partition columns keeping the hours that hold ``[start, end)``.

    Written as nested comparisons, the shape DuckDB evaluates against each file's
    partition values before opening it (an arithmetic ``year * 1000000 + …`` key is
    not pruned through a view). Add ``ts >= … AND ts < …`` for the exact bounds.
    """
    lo, hi = _hour_bounds(start, end)
    return f"({_lex_sql(_parts(lo), '>')} AND {_lex_sql(_parts(hi), '<')})"


def _lex_expr(values: tuple[int, ...], op: str, cols: tuple[str, ...] = PARTITION_COLUMNS) -> pl.Expr:
    col, value = pl.col(cols[0]), values[0]
    if len(cols) == 1:
        return col >= value if op == ">" else col <= value
    strict = col > value if op == ">" else col < value
    return strict | ((col == value) & _lex_expr(values[1:], op, cols[1:]))


def hour_filter_expr(start: datetime, end: datetime) -> pl.Expr:
    """The same predicate as :func:`hour_filter` for a Polars scan."""
    lo, hi = _hour_bounds(start, end)
    return _lex_expr(_parts(lo), ">") & _lex_expr(_parts(hi), "<")


# -- Polars --------------------------------------------------------------------------
_HIVE_SCHEMA = {c: pl.Int32 for c in PARTITION_COLUMNS}


def _empty_frame(entry: DatasetVersions) -> pl.LazyFrame:
    frame = pl.from_arrow(entry.schema.empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy().with_columns(pl.lit(None, dtype=pl.Int32).alias(c) for c in PARTITION_COLUMNS)


def scan(
    dataset: str | Lake,
    start: datetime | str | None = None,
    end: datetime | None = None,
    *,
    symbols: Iterable[str] | None = None,
    exchanges: Iterable[str] | None = None,
    lake: LakeLike = None,
    registry: Mapping[str, DatasetVersions] | None = None,
) -> pl.LazyFrame:
    """A lazy Polars scan of a dataset's rows in ``[start, end)`` (UTC-aware; a missing
    bound is open), of ``symbols`` and ``exchanges`` when given, with today's columns
    whatever version wrote the files, then the partition columns (Int32).

    Only the hour partitions of the window are listed and read (see
    :meth:`Lake.window_files`); the bounds, symbols and exchanges are also applied to the
    rows. ``lake``: a :class:`Lake`, a lake URL, or None (the settings' lake). The older
    form ``scan(lake, dataset)`` still works (the whole dataset).
    """
    if isinstance(dataset, Lake):
        if not isinstance(start, str):
            raise TypeError("scan(lake, dataset): the dataset name is missing")
        lake, dataset, start = dataset, start, None
    if isinstance(start, str):
        raise TypeError("start must be a datetime")
    source = resolve_lake(lake)
    start, end = _utc(start), _utc(end)
    entry = versions(dataset, registry)
    files = _files(source, dataset, start, end)
    if files is None:
        frame = _empty_frame(entry)
    else:
        frame = pl.scan_parquet(
            files,
            hive_partitioning=True,
            hive_schema=_HIVE_SCHEMA,
            schema=entry.polars_schema(),
            storage_options=source.storage_options or None,
            missing_columns="insert",
            extra_columns="ignore",
        ).select(entry.polars_projection())
    predicate = _row_filter_expr(entry, start, end, symbols, exchanges)
    return frame if predicate is None else frame.filter(predicate)


def _row_filter_expr(
    entry: DatasetVersions,
    start: datetime | None,
    end: datetime | None,
    symbols: Iterable[str] | None,
    exchanges: Iterable[str] | None,
) -> pl.Expr | None:
    out: list[pl.Expr] = []
    tcol = pl.col(entry.time_column)
    if start is not None:
        out.append(tcol >= pl.lit(start, dtype=pl.Datetime("ms", "UTC")))
    if end is not None:
        out.append(tcol < pl.lit(end, dtype=pl.Datetime("ms", "UTC")))
    if symbols is not None:
        if entry.symbol_column is None:
            raise ValueError(f"{entry.dataset} has no symbol column to filter by")
        out.append(pl.col(entry.symbol_column).is_in(list(symbols)))
    if exchanges is not None:
        if not entry.exchange_columns:
            raise ValueError(f"{entry.dataset} has no exchange column to filter by")
        wanted = list(exchanges)
        out.append(pl.any_horizontal(pl.col(c).is_in(wanted) for c in entry.exchange_columns))
    if not out:
        return None
    return pl.all_horizontal(out)


def scan_all(
    lake: Lake,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    symbols: Iterable[str] | None = None,
    exchanges: Iterable[str] | None = None,
) -> dict[str, pl.LazyFrame]:
    """Every dataset by name, windowed like :func:`scan` (for notebooks); ``symbols`` and
    ``exchanges`` filter the datasets that have such columns."""
    out: dict[str, pl.LazyFrame] = {}
    for name in DATASET_PATHS:
        entry = versions(name)
        out[name] = scan(
            name,
            start,
            end,
            lake=lake,
            symbols=symbols if entry.symbol_column else None,
            exchanges=exchanges if entry.exchange_columns else None,
        )
    return out


def window_bounds(
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    *,
    hours: float = 24.0,
    now: datetime | None = None,
) -> tuple[datetime, datetime]:
    """A notebook's window from its parameters: ISO-8601 strings (UTC when naive) or
    datetimes; ``end`` None is ``now`` (the wall clock), ``start`` None is ``end - hours``."""

    def parse(value: datetime | str) -> datetime:
        if isinstance(value, str):
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    stop = parse(end) if end is not None else (now or datetime.now(UTC)).astimezone(UTC)
    first = parse(start) if start is not None else stop - timedelta(hours=hours)
    if first >= stop:
        raise ValueError(f"empty window: start {first.isoformat()} is not before end {stop.isoformat()}")
    return first, stop


# -- output formats ------------------------------------------------------------------
def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """A JSON-ready value: ISO-8601 UTC timestamps, floats for decimals, null for NaN."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _cell(value: Any) -> str:
    plain = _plain(value)
    if plain is None:
        return ""
    if isinstance(plain, dict | list):
        return json.dumps(plain, separators=(",", ":"))
    return str(plain)


def format_table(table: pa.Table, fmt: OutputFormat = "table") -> str | RichTable:
    """``json``: one JSON array of row objects; ``csv``: with a header; ``table``: a rich Table."""
    if fmt == "json":
        return json.dumps([_plain(row) for row in table.to_pylist()], ensure_ascii=False)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        for row in zip(*columns, strict=True):
            writer.writerow([_cell(v) for v in row])
        return out.getvalue()
    if fmt == "table":
        rich_table = RichTable(show_lines=False)
        for name, dtype in zip(table.column_names, table.schema.types, strict=True):
            numeric = pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)
            rich_table.add_column(name, justify="right" if numeric else "left")
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        for row in zip(*columns, strict=True):
            rich_table.add_row(*(_cell(v) for v in row))
        return rich_table
    raise ValueError(f"unknown format {fmt!r}: use table, csv or json")
