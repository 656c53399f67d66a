"""Reading the lake: DuckDB views, Polars lazy scans, and output formats for the CLI.

Every dataset of ``DATASET_PATHS`` is a DuckDB view by its name, over
``read_parquet('<root>/<path>/**/*.parquet', hive_partitioning=true,
union_by_name=true)``; the partition columns ``year``, ``month``, ``day``, ``hour``
(INTEGER) come from the path. For an S3 lake the s3fs filesystem is registered with
the connection (DuckDB's httpfs extension is not needed).

Time pruning: DuckDB and Polars skip whole files only on filters over the partition
columns. A filter on ``ts`` alone still opens every file's footer (row groups are
then skipped by their statistics). Combine both::

    SELECT … FROM quotes WHERE {hour_filter(start, end)} AND ts >= … AND ts < …
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
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
from pipeline.schemas import DATASET_PATHS, SCHEMAS

PARTITION_COLUMNS = ("year", "month", "day", "hour")
OutputFormat = Literal["table", "csv", "json"]


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def dataset_glob(lake: Lake, dataset: str) -> str:
    """The glob of a dataset's committed files, with protocol (``s3://…`` or a path)."""
    return lake.uri(lake.dataset_root(dataset)) + "/**/*.parquet"


# -- DuckDB --------------------------------------------------------------------------
def connect(lake: Lake, *, datasets: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per dataset (session time zone UTC).

    Datasets without files get an empty view of their known schema (plus the
    partition columns) so queries do not fail; unknown-schema datasets without files
    are skipped.
    """
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        if not lake.is_local:
            con.register_filesystem(lake.fs)
        hive_types = "{" + ", ".join(f"{_sql_str(c)}: 'INTEGER'" for c in PARTITION_COLUMNS) + "}"
        for name in datasets if datasets is not None else DATASET_PATHS:
            if lake.has_files(name):
                source = (
                    f"read_parquet({_sql_str(dataset_glob(lake, name))}, hive_partitioning = true, "
                    f"union_by_name = {'false' if name in SCHEMAS else 'true'}, hive_types = {hive_types})"
                )
                cols = ", ".join(PARTITION_COLUMNS)
                con.execute(f"CREATE VIEW {_ident(name)} AS SELECT * EXCLUDE ({cols}), {cols} FROM {source}")
            elif name in SCHEMAS:
                hidden = f"__empty_{name}"
                con.register(hidden, SCHEMAS[name].empty_table())
                parts = ", ".join(f"CAST(NULL AS INTEGER) AS {c}" for c in PARTITION_COLUMNS)
                con.execute(f"CREATE VIEW {_ident(name)} AS SELECT *, {parts} FROM {_ident(hidden)}")
    except duckdb.Error as exc:
        con.close()
        raise LakeError(f"could not open the lake {lake!r} in DuckDB: {exc}") from exc
    return con


def run_query(lake: Lake, sql: str) -> pa.Table:
    """Run SQL over the lake's views; the result as an Arrow table."""
    with LakeQuery(lake) as q:
        return q.sql(sql)


class LakeQuery:
    """A DuckDB connection over the lake; use as a context manager."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.con = connect(lake)

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


def _empty_frame(dataset: str) -> pl.LazyFrame:
    frame = pl.from_arrow(SCHEMAS[dataset].empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy().with_columns(pl.lit(None, dtype=pl.Int32).alias(c) for c in PARTITION_COLUMNS)


def scan(lake: Lake, dataset: str) -> pl.LazyFrame:
    """A lazy Polars scan of a dataset with hive partition columns (Int32)."""
    if not lake.has_files(dataset):
        if dataset in SCHEMAS:
            return _empty_frame(dataset)
        raise LakeError(f"dataset {dataset!r} has no files yet in {lake!r}")
    return pl.scan_parquet(
        dataset_glob(lake, dataset),
        hive_partitioning=True,
        hive_schema=_HIVE_SCHEMA,
        storage_options=lake.storage_options or None,
        missing_columns="insert",
        extra_columns="ignore",
    )


def scan_all(lake: Lake) -> dict[str, pl.LazyFrame]:
    """Every dataset that has files or a known schema, by name (for notebooks)."""
    out: dict[str, pl.LazyFrame] = {}
    for name in DATASET_PATHS:
        if name in SCHEMAS or lake.has_files(name):
            out[name] = scan(lake, name)
    return out


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
