"""``ParquetSink``: buffers Arrow tables per dataset and writes hour-partitioned Parquet.

Framework-free (the Ray actor in ``actors/sink.py`` wraps it). All methods are sync
and thread-safe; ``maybe_flush`` is cheap when nothing is due. Durability rules are
in ``docs/lake.md``:

- a file is whole or absent (``Lake.write_atomic``);
- a failed write keeps its rows buffered and is retried (with backoff) by the next
  flush; the buffer is capped at 4 x ``flush_bytes``, beyond which the oldest
  batches are dropped, counted and logged;
- compaction writes the merged file first (its key-value metadata lists its
  sources) and deletes the sources after; ``recover()`` finishes an interrupted
  compaction, so no row is ever stored twice.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import LakeError
from core.settings import LakeSettings
from pipeline.lake import Lake, hour_of
from pipeline.schemas import DATASET_PATHS, SCHEMAS, TS
from pipeline.versions import REGISTRY, VERSION_KEY

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
COMPACTED_FROM_KEY = "arbflow.compacted_from"
"""Parquet key-value metadata of a compacted file: JSON list of its source file names."""

TIME_COLUMNS: dict[str, str] = {name: v.time_column for name, v in REGISTRY.items() if v.time_column != "ts"}
"""The column whose UTC hour picks a row's partition, when it is not ``ts``."""

ROW_GROUP_ROWS = 32_768
"""Rows per Parquet row group: ~8 % faster to write here than one big group, and
finer ``ts`` statistics for readers to skip row groups by."""

BUFFER_CAP_FACTOR = 4
"""The buffer of a dataset never holds more than this many ``flush_bytes``."""

_HOUR_KEY = "__arbflow_hour"


def _frame(table: pa.Table, *, rechunk: bool = True) -> pl.DataFrame:
    frame = pl.from_arrow(table, rechunk=rechunk)
    assert isinstance(frame, pl.DataFrame)
    return frame


def polars_arrow_schema(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema as Polars can write it: same names, nullability, timestamp
    units and time zones, with strings/binaries/lists in their ``large_`` forms."""

    def convert(dtype: pa.DataType) -> pa.DataType:
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
            return pa.large_string()
        if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
            return pa.large_binary()
        if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_list_view(dtype):
            value = dtype.value_field
            return pa.large_list(pa.field("item", convert(value.type), value.nullable))
        if pa.types.is_struct(dtype):
            return pa.struct([f.with_type(convert(f.type)) for f in dtype.fields])
        return dtype

    return pa.schema([f.with_type(convert(f.type)) for f in schema], metadata=schema.metadata)


def encode_parquet(
    df: pl.DataFrame,
    target: str | IO[bytes] | None = None,
    *,
    compression_level: int,
    arrow_schema: pa.Schema | None = None,
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Serialise a frame to zstd Parquet with Polars (statistics on), keeping the
    Arrow schema (nullability, timestamp unit and zone) when given.

    Writes to ``target`` (a path or binary file) and returns ``b""``, or returns the
    bytes when ``target`` is None.
    """
    out: str | IO[bytes] = io.BytesIO() if target is None else target
    kwargs: dict[str, Any] = {
        "compression": "zstd",
        "compression_level": compression_level,
        "statistics": True,
        "row_group_size": ROW_GROUP_ROWS,
    }
    if metadata:
        kwargs["metadata"] = metadata
    written = False
    if arrow_schema is not None:
        try:
            df.write_parquet(out, arrow_schema=polars_arrow_schema(arrow_schema), **kwargs)
            written = True
        except pl.exceptions.PolarsError as exc:  # a type Polars cannot map back exactly
            log.debug("writing without the exact arrow schema: %s", exc)
            if not isinstance(out, str):
                out.seek(0)
                out.truncate()
    if not written:
        df.write_parquet(out, **kwargs)
    return out.getvalue() if isinstance(out, io.BytesIO) and target is None else b""


def _stamp(dataset: str) -> dict[str, str]:
    """The schema-version metadata of a file of ``dataset`` (``pipeline.versions``)."""
    entry = REGISTRY.get(dataset)
    return {VERSION_KEY: entry.stamp} if entry is not None else {}


@dataclass(slots=True)
class DatasetCounters:
    rows_in: int = 0
    arrow_bytes: int = 0
    rows_written: int = 0
    parquet_bytes: int = 0
    files: int = 0
    flushes: int = 0
    errors: int = 0
    dropped_rows: int = 0
    compactions: int = 0
    compacted_files: int = 0


@dataclass(slots=True)
class _Buffer:
    items: deque[tuple[float, pa.Table]] = field(default_factory=deque)
    rows: int = 0
    nbytes: int = 0
    retry_at: float = 0.0
    failures: int = 0

    def push(self, arrived: float, table: pa.Table, *, front: bool = False) -> None:
        (self.items.appendleft if front else self.items.append)((arrived, table))
        self.rows += table.num_rows
        self.nbytes += table.nbytes

    def pop_all(self) -> list[tuple[float, pa.Table]]:
        items = list(self.items)
        self.items.clear()
        self.rows = self.nbytes = 0
        return items

    def pop_oldest(self) -> tuple[float, pa.Table]:
        arrived, table = self.items.popleft()
        self.rows -= table.num_rows
        self.nbytes -= table.nbytes
        return arrived, table

    @property
    def since(self) -> float | None:
        return self.items[0][0] if self.items else None


def _epoch_s(now: datetime | float | None, clock: Callable[[], float]) -> float:
    if now is None:
        return clock()
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        return now.timestamp()
    return float(now)


class ParquetSink:
    """Buffer Arrow tables per dataset; flush them as hour-partitioned zstd Parquet."""

    def __init__(
        self,
        lake: Lake,
        settings: LakeSettings,
        *,
        clock: Callable[[], float] = time.time,
        compact_grace_s: float = 300.0,
        compact_target_bytes: int | None = None,
        time_columns: dict[str, str] | None = None,
    ) -> None:
        self.lake = lake
        self.settings = settings
        self.clock = clock
        self.compact_grace_s = compact_grace_s
        self.compact_target_bytes = (
            compact_target_bytes
            if compact_target_bytes is not None
            else settings.compact_target_mb * 1024 * 1024
        )
        self.time_columns = {**TIME_COLUMNS, **(time_columns or {})}
        self._buffers: dict[str, _Buffer] = {}
        self._counters: dict[str, DatasetCounters] = defaultdict(DatasetCounters)
        self._lock = threading.RLock()

    # -- intake ---------------------------------------------------------------------
    def datasets(self) -> list[str]:
        """Every dataset this sink can write (all of ``DATASET_PATHS``)."""
        return list(DATASET_PATHS)

    def time_column(self, dataset: str) -> str:
        return self.time_columns.get(dataset, "ts")

    def add(self, dataset: str, table: pa.Table) -> None:
        """Buffer a table; flush the dataset if a size threshold is reached.

        Never raises for a lake failure: the rows stay buffered and the error is
        counted and logged (``flush()`` raises it).
        """
        if dataset not in DATASET_PATHS:
            raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASET_PATHS)}")
        if table.num_rows == 0:
            return
        now = self.clock()
        with self._lock:
            buf = self._buffers.get(dataset)
            table = self._conform(dataset, table)
            if buf is None:
                buf = self._buffers[dataset] = _Buffer()
            buf.push(now, table)
            counters = self._counters[dataset]
            counters.rows_in += table.num_rows
            counters.arrow_bytes += table.nbytes
            self._enforce_cap(dataset, buf)
            due = buf.rows >= self.settings.flush_rows or buf.nbytes >= self.settings.flush_bytes
            due = due and now >= buf.retry_at
        if due:
            self._flush_quietly(dataset)
        self.maybe_flush()

    def _conform(self, dataset: str, table: pa.Table) -> pa.Table:
        """Cast to the dataset's schema when it has one; otherwise keep the table's own
        (tables of one flush are unified by name, new columns kept) with its time
        column as ``timestamp[ms, UTC]``."""
        target = SCHEMAS.get(dataset)
        tcol = self.time_column(dataset)
        if target is not None:
            if not table.schema.equals(target, check_metadata=False):
                missing = [n for n in target.names if n not in table.column_names]
                if missing:
                    raise ValueError(f"{dataset}: table lacks columns {missing}")
                try:
                    table = table.select(target.names).cast(target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
                    raise ValueError(f"{dataset}: table does not match its schema: {exc}") from exc
            return table
        if tcol not in table.column_names:
            raise ValueError(f"{dataset}: table lacks its time column {tcol!r}")
        dtype = table.schema.field(tcol).type
        if pa.types.is_timestamp(dtype) and dtype != TS:
            index = table.schema.get_field_index(tcol)
            table = table.set_column(index, table.schema.field(tcol).with_type(TS), table[tcol].cast(TS))
        elif not pa.types.is_timestamp(dtype):
            raise ValueError(f"{dataset}: time column {tcol!r} must be a timestamp, not {dtype}")
        return table

    def _enforce_cap(self, dataset: str, buf: _Buffer) -> None:
        cap = BUFFER_CAP_FACTOR * self.settings.flush_bytes
        if buf.nbytes <= cap or len(buf.items) <= 1:
            return
        dropped = 0
        while buf.nbytes > cap and len(buf.items) > 1:
            dropped += buf.pop_oldest()[1].num_rows
        counters = self._counters[dataset]
        counters.dropped_rows += dropped
        counters.errors += 1
        log.error(
            "lake sink %s: buffer over %d bytes while the lake is failing; dropped the %d oldest rows",
            dataset,
            cap,
            dropped,
        )

    # -- flushing -------------------------------------------------------------------
    def maybe_flush(self) -> int:
        """Flush every dataset whose oldest buffered row waited ``flush_seconds``.

        Cheap when nothing is due. Lake failures are logged and counted, not raised.
        Returns the number of files written.
        """
        now = self.clock()
        with self._lock:
            due = [
                name
                for name, buf in self._buffers.items()
                if buf.since is not None
                and now - buf.since >= self.settings.flush_seconds
                and now >= buf.retry_at
            ]
        return sum(self._flush_quietly(name) for name in due)

    def _flush_quietly(self, dataset: str) -> int:
        try:
            return self._flush_one(dataset)
        except LakeError as exc:
            log.warning("lake sink %s: flush failed, rows kept for retry: %s", dataset, exc)
            return 0

    def flush(self, dataset: str | None = None) -> int:
        """Write everything buffered (for one dataset or all). Returns files written.

        Raises the first LakeError after trying every dataset; failed rows stay
        buffered for the next flush.
        """
        with self._lock:
            names = [dataset] if dataset is not None else list(self._buffers)
        written = 0
        error: LakeError | None = None
        for name in names:
            try:
                written += self._flush_one(name)
            except LakeError as exc:
                error = error or exc
        if error is not None:
            raise error
        return written

    def _flush_one(self, dataset: str) -> int:
        with self._lock:
            buf = self._buffers.get(dataset)
            if buf is None or not buf.items:
                return 0
            items = buf.pop_all()
        tcol = self.time_column(dataset)
        counters = self._counters[dataset]
        written = 0
        chunks = self._combine(dataset, [t for _, t in items])
        for ci, table in enumerate(chunks):
            parts = self._split_hours(_frame(table, rechunk=False), tcol)
            for index, (hour, part) in enumerate(parts):
                try:
                    size = self._write_part(dataset, hour, part, tcol, table.schema)
                except LakeError:
                    with self._lock:
                        if written == 0:
                            for arrived, t in reversed(items):
                                buf.push(arrived, t, front=True)
                        else:  # keep only what was not written, never what was
                            rest = [p.to_arrow().cast(table.schema) for _, p in parts[index:]] + chunks[
                                ci + 1 :
                            ]
                            for t in reversed(rest):
                                buf.push(items[0][0], t, front=True)
                        counters.errors += 1
                        buf.failures += 1
                        buf.retry_at = self.clock() + min(30.0, 0.5 * 2 ** min(buf.failures, 6))
                        self._enforce_cap(dataset, buf)
                    raise
                with self._lock:
                    counters.rows_written += part.height
                    counters.parquet_bytes += size
                    counters.files += 1
                written += 1
        with self._lock:
            counters.flushes += 1
            buf.failures = 0
            buf.retry_at = 0.0
        return written

    @staticmethod
    def _combine(dataset: str, tables: list[pa.Table]) -> list[pa.Table]:
        """One table for the flush (zero-copy concat); for a schema-less dataset whose
        tables cannot be unified by name, each table on its own."""
        if len(tables) == 1:
            return tables
        if dataset in SCHEMAS:
            return [pa.concat_tables(tables)]
        try:
            return [pa.concat_tables(tables, promote_options="permissive")]
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            log.warning("lake sink %s: batches with clashing schemas written separately: %s", dataset, exc)
            return tables

    @staticmethod
    def _hour_expr(tcol: str) -> pl.Expr:
        return pl.col(tcol).dt.epoch("ms") // HOUR_MS

    def _split_hours(self, df: pl.DataFrame, tcol: str) -> list[tuple[int, pl.DataFrame]]:
        """Split rows by the UTC hour of the time column (vectorised)."""
        fallback = int(self.clock() * 1000) // HOUR_MS  # rows without a time: the current hour
        key = self._hour_expr(tcol).fill_null(fallback)
        lo, hi = df.select(key.min().alias("lo"), key.max().alias("hi")).row(0)
        if lo == hi:
            return [(int(lo), df)]
        parts = df.with_columns(key.alias(_HOUR_KEY)).partition_by(
            _HOUR_KEY, as_dict=True, include_key=False, maintain_order=True
        )
        return sorted(((int(k[0]), v) for k, v in parts.items()), key=lambda kv: kv[0])

    def _write_part(self, dataset: str, hour: int, df: pl.DataFrame, tcol: str, schema: pa.Schema) -> int:
        min_ms = df.select(pl.col(tcol).dt.epoch("ms").min()).item()
        min_ms = hour * HOUR_MS if min_ms is None else int(min_ms)
        directory = self.lake.partition_path(dataset, datetime.fromtimestamp(hour * 3600, UTC))
        path = f"{directory}/part-{min_ms:013d}-{uuid.uuid4().hex[:8]}.parquet"
        level = self.settings.compression_level
        stamp = _stamp(dataset)
        return self.lake.write_atomic_with(
            path,
            lambda target: encode_parquet(
                df, target, compression_level=level, arrow_schema=schema, metadata=stamp
            ),
        )

    # -- compaction & recovery ------------------------------------------------------
    def compact(self, dataset: str, now: datetime | float | None = None) -> int:
        """Merge the files of closed hour partitions. Returns the number of files written.

        A partition is closed when its hour ended more than ``compact_grace_s`` before
        ``now``; it is compacted when it holds at least ``compact_min_files`` files under
        ``compact_target_bytes`` (``ARBFLOW_LAKE__COMPACT_TARGET_MB``, 64 MiB), merged in
        groups of at least that much Parquet (see :meth:`_groups`).
        """
        now_s = _epoch_s(now, self.clock)
        by_dir: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for path, size in self.lake.file_sizes(dataset).items():
            by_dir[path.rsplit("/", 1)[0]].append((path, size))
        written = 0
        for directory, files in sorted(by_dir.items()):
            hour = hour_of(directory + "/")
            if hour is None or hour.timestamp() + 3600 + self.compact_grace_s >= now_s:
                continue
            small = sorted(f for f in files if f[1] < self.compact_target_bytes)
            if len(small) < max(2, self.settings.compact_min_files):
                continue
            for group in self._groups(small):
                if len(group) >= 2:
                    self._merge(dataset, directory, [p for p, _ in group])
                    written += 1
        return written

    def _groups(self, files: Sequence[tuple[str, int]]) -> Iterable[list[tuple[str, int]]]:
        """Consecutive files in groups of at least ``compact_target_bytes`` each (a group is
        closed once it reaches the target), the remainder joined to the last full group: every
        merged file reaches the target when the hour holds that much; an hour holding less
        becomes one file. A group stays under twice the target (bounded memory)."""
        groups: list[list[tuple[str, int]]] = []
        group: list[tuple[str, int]] = []
        total = 0
        for item in files:
            group.append(item)
            total += item[1]
            if total >= self.compact_target_bytes:
                groups.append(group)
                group, total = [], 0
        if group:
            if groups:
                groups[-1].extend(group)
            else:
                groups.append(group)
        return groups

    def _merge(self, dataset: str, directory: str, sources: list[str]) -> None:
        tcol = self.time_column(dataset)
        try:
            tables = [pq.read_table(io.BytesIO(self.lake.read_bytes(p))) for p in sources]
            entry = REGISTRY.get(dataset)
            if entry is not None:  # files of older versions come out in today's shape
                tables = [entry.conform(t) for t in tables]
            table = pa.concat_tables(tables, promote_options="default")
        except (pa.ArrowException, OSError) as exc:
            raise LakeError(f"lake compaction of {directory} could not read its files: {exc}") from exc
        schema = table.schema
        df = _frame(table).sort(tcol, maintain_order=True)
        min_ms = int(df.select(pl.col(tcol).dt.epoch("ms").min()).item() or 0)
        names = [p.rsplit("/", 1)[-1] for p in sources]
        data = encode_parquet(
            df,
            compression_level=self.settings.compression_level,
            arrow_schema=schema,
            metadata={COMPACTED_FROM_KEY: json.dumps(names), **_stamp(dataset)},
        )
        target = f"{directory}/compact-{min_ms:013d}-{uuid.uuid4().hex[:8]}.parquet"
        self.lake.write_atomic(target, data)
        # A crash here leaves sources and merged file side by side: recover() deletes the sources.
        self.lake.delete(sources)
        with self._lock:
            counters = self._counters[dataset]
            counters.compactions += 1
            counters.compacted_files += len(sources)
        log.info("lake compacted %d files into %s", len(sources), target)

    def recover(self, *, tmp_min_age_s: float = 0.0) -> dict[str, int]:
        """Clean up after a crash: delete leftover temp files, and the sources of any
        compacted file that still exist (crash between compaction write and delete).

        ``tmp_min_age_s`` spares temp files younger than that (another live writer's).
        """
        temp_deleted = sources_deleted = 0
        now = time.time()
        for dataset in DATASET_PATHS:
            stale = [
                p
                for p in self.lake.list_files(dataset, temp=True)
                if tmp_min_age_s <= 0 or now - self.lake.modified_at(p) >= tmp_min_age_s
            ]
            self.lake.delete(stale)
            temp_deleted += len(stale)
            by_dir: dict[str, set[str]] = defaultdict(set)
            for path in self.lake.list_files(dataset):
                directory, name = path.rsplit("/", 1)
                by_dir[directory].add(name)
            for directory, names in by_dir.items():
                if len(names) < 2:
                    continue
                for name in sorted(n for n in names if n.startswith("compact-")):
                    if name not in names:  # already deleted as a source of a later one
                        continue
                    listed = self._compacted_from(f"{directory}/{name}")
                    doomed = [n for n in listed if n in names and n != name]
                    if doomed:
                        self.lake.delete([f"{directory}/{n}" for n in doomed])
                        names.difference_update(doomed)
                        sources_deleted += len(doomed)
                        log.warning(
                            "lake recover: deleted %d sources already merged into %s", len(doomed), name
                        )
        if temp_deleted:
            log.warning("lake recover: deleted %d leftover temp files", temp_deleted)
        return {"temp_deleted": temp_deleted, "sources_deleted": sources_deleted}

    def _compacted_from(self, path: str) -> list[str]:
        try:
            with self.lake.open(path) as f:
                meta = pq.read_metadata(f).metadata or {}
        except (pa.ArrowException, OSError) as exc:
            raise LakeError(f"lake recover could not read the footer of {path}: {exc}") from exc
        raw = meta.get(COMPACTED_FROM_KEY.encode())
        if not raw:
            return []
        names = json.loads(raw)
        return [str(n) for n in names] if isinstance(names, list) else []

    # -- observability --------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        """``{"datasets": {name: {...}}, "total": {...}}``: rows and bytes in (Arrow) and
        out (Parquet), files, flushes, errors, dropped rows, compactions, buffered
        rows/bytes and ``lag_s`` (age of the oldest buffered row, by the sink's clock)."""
        now = self.clock()
        with self._lock:
            per: dict[str, dict[str, Any]] = {}
            for name in sorted(set(self._counters) | set(self._buffers)):
                row: dict[str, Any] = asdict(self._counters[name])
                buf = self._buffers.get(name)
                since = buf.since if buf else None
                row["buffered_rows"] = buf.rows if buf else 0
                row["buffered_bytes"] = buf.nbytes if buf else 0
                row["lag_s"] = max(0.0, now - since) if since is not None else 0.0
                per[name] = row
        total: dict[str, Any] = {key: 0 for key in asdict(DatasetCounters())}
        total.update(buffered_rows=0, buffered_bytes=0, lag_s=0.0)
        for row in per.values():
            for key, value in row.items():
                total[key] = max(total[key], value) if key == "lag_s" else total[key] + value
        return {"datasets": per, "total": total}

    def buffered_rows(self, dataset: str | None = None) -> int:
        with self._lock:
            if dataset is not None:
                buf = self._buffers.get(dataset)
                return buf.rows if buf else 0
            return sum(b.rows for b in self._buffers.values())
