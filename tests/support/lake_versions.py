"""Lake files of older schema versions, written by hand (pyarrow, no arbflow writer).

No dataset has changed shape in git history yet (every one is at version 1), so the
"previous release" is simulated: :func:`simulated_history` gives each dataset a
version 2 that added two nullable columns and renamed one, with today's schema as
version 2. Files of version 1 (:meth:`DatasetVersions.schema_at`) then lack the added
columns and carry the renamed one under its old name: what a lake holds after a
release that adds and renames columns. :func:`older_release` is the same without the
rename, for readers that use the real registry (the CLI in a subprocess).
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.lake import Lake
from pipeline.versions import REGISTRY, Change, DatasetVersions

# Values the analytics count on; every other column gets a generic value of its type.
_VALUES: dict[str, Any] = {
    "status": "sent",
    "event": "opened",
    "kind": "spot_spread",
    "audience": "user",
    "channel": "telegram",
    "priority": "high",
    "tier": "free",
    "action": "push_button",
    "detail": "details",
    "outcome": "pass",
    "stage": "market",
    "market_type": "spot",
    "exchange": "binance",
    "buy_exchange": "binance",
    "sell_exchange": "okx",
    "symbol": "BTC/USDT",
    "flags": "",
    "details": "{}",
    "ok": True,
    "pushable": True,
    "reopened": False,
    "layer": 2,
}


def _candidates(entry: DatasetVersions) -> list[pa.Field]:
    skip = {
        entry.time_column,
        entry.symbol_column,
        *entry.exchange_columns,
        "status",
        "event",
        "kind",
        "action",
    }
    return [f for f in entry.schema if f.name not in skip]


def _added(entry: DatasetVersions) -> tuple[str, ...]:
    """The last two nullable columns (any two when fewer) that the filters do not use."""
    candidates = _candidates(entry)
    nullable = [f.name for f in candidates if f.nullable]
    return tuple(nullable[-2:] if len(nullable) >= 2 else [f.name for f in candidates][-2:])


def _renamed(entry: DatasetVersions) -> tuple[tuple[str, str], ...]:
    added = _added(entry)
    for f in _candidates(entry):
        if f.name not in added:
            return ((f"{f.name}_v1", f.name),)
    return ()


def simulated_history(dataset: str, *, rename: bool = True) -> DatasetVersions:
    """``dataset`` with a version 2 (today's schema) that added two columns and renamed one."""
    entry = REGISTRY[dataset]
    change = Change(2, "simulated", added=_added(entry), renamed=_renamed(entry) if rename else ())
    return DatasetVersions(
        dataset,
        entry.schema,
        (Change(1, "simulated first release"), change),
        time_column=entry.time_column,
        symbol_column=entry.symbol_column,
        exchange_columns=entry.exchange_columns,
    )


def older_release(dataset: str) -> DatasetVersions:
    return simulated_history(dataset, rename=False)


def _value(name: str, dtype: pa.DataType, i: int, at: datetime) -> Any:
    base = name.removesuffix("_v1")
    if pa.types.is_timestamp(dtype):
        return at
    if base in _VALUES:
        return _VALUES[base]
    if pa.types.is_boolean(dtype):
        return True
    if pa.types.is_integer(dtype):
        return i + 1
    if pa.types.is_floating(dtype):
        return 1.5 + i
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return [1.0 + i, 2.0 + i]
    return f"{base}-{i}"


def rows(schema: pa.Schema, n: int, start: datetime, *, tag: str) -> pa.Table:
    """``n`` rows of ``schema`` a minute apart from ``start``; strings carry ``tag``."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        at = start + timedelta(minutes=i)
        row = {f.name: _value(f.name, f.type, i, at) for f in schema}
        for f in schema:
            if isinstance(row[f.name], str) and f.name.removesuffix("_v1") not in _VALUES:
                row[f.name] = f"{tag}:{row[f.name]}"
        out.append(row)
    return pa.Table.from_pylist(out, schema=schema)


def write_file(lake: Lake, dataset: str, table: pa.Table, hour: datetime) -> str:
    """One Parquet file (pyarrow's writer, plain strings) in the hour partition of ``hour``."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    name = f"part-{int(hour.timestamp() * 1000):013d}-{uuid.uuid4().hex[:8]}.parquet"
    path = f"{lake.partition_path(dataset, hour)}/{name}"
    lake.write_atomic(path, buf.getvalue())
    return path
