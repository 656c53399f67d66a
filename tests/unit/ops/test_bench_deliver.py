"""bench/deliver.py builds its fan-out batches in the queue shards' current shape."""

from __future__ import annotations

import numpy as np

from actors.queues import BATCH_SCHEMA, decode_batch, encode_batch
from bench.deliver import _targets


def test_the_bench_batch_is_a_queue_shard_batch() -> None:
    table = _targets(np.arange(5, 8, dtype=np.int64), "enterprise", 1_000)
    assert table.schema.equals(BATCH_SCHEMA)
    assert table.column("chat").to_pylist() == [5, 6, 7]
    assert decode_batch(encode_batch(table)).equals(table)
