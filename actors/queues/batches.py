"""The table partition helpers of the queue shards: the fan-out batch's schema, its Arrow IPC
bytes (how Redis keeps it), a fan-out cut by shard, and the shards' names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from core.eligibility import OpportunityView
from core.queueing import shard_of

BATCH_SCHEMA = pa.schema(
    [
        pa.field("chat", pa.int64()),
        pa.field("chat_ref", pa.string()),
        pa.field("user_id", pa.int64()),
        pa.field("audience", pa.string()),
        pa.field("tier", pa.string()),
        pa.field("due_ms", pa.int64()),
        pa.field("silent", pa.bool_()),
        pa.field("tz", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("score", pa.float64()),
    ]
)
"""One fan-out batch for one shard: the chats that get one opportunity. ``tz``: the chat's
IANA zone (the push's times are shown in it; null: UTC). Batches persisted by a release
without ``tz`` read as UTC. ``lang``: the chat's language (the push is written in it;
null, or a batch persisted without the column: English). ``score``: predicted engagement times
edge for the chat's user (``core.personalization``; null: no model, or a batch persisted
without the column), what a ranking chat's due items are ordered by."""


def shard_name(index: int) -> str:
    return f"uq:{index:03d}"


def encode_batch(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_batch(body: bytes) -> pa.Table:
    return pa.ipc.open_stream(body).read_all()


def _dedup_key(event: Mapping[str, Any]) -> str:
    return OpportunityView.make_dedup_key(
        str(event["kind"]),
        str(event["symbol"]),
        event.get("buy_exchange") or None,
        event.get("sell_exchange") or None,
    )


def batch_for(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A :data:`BATCH_SCHEMA` table from dicts (tests and small fan-outs)."""
    return pa.Table.from_pylist([dict(r) for r in rows], schema=BATCH_SCHEMA)


def split_by_shard(table: pa.Table, shards: int) -> dict[int, pa.Table]:
    """A fan-out table (:data:`BATCH_SCHEMA`) cut into one table per shard, vectorised."""
    import numpy as np
    import pyarrow.compute as pc

    chats = table.column("chat").to_numpy(zero_copy_only=False)
    refs = table.column("chat_ref")
    index = np.mod(np.nan_to_num(chats.astype("float64"), nan=0).astype(np.int64), shards)
    if refs.null_count < len(refs):
        for i, ref in enumerate(refs.to_pylist()):
            if ref is not None:
                index[i] = shard_of(ref, shards)
    out: dict[int, pa.Table] = {}
    order = np.argsort(index, kind="stable")
    sorted_idx = index[order]
    bounds = np.flatnonzero(np.diff(sorted_idx)) + 1
    for part in np.split(order, bounds):
        if part.size:
            out[int(index[part[0]])] = table.take(pa.array(part))
    del pc
    return out
