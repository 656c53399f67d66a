"""Sharded user queues: ``uq:000`` … ``uq:NNN`` hold every pending push and send it.

Chats are sharded over a fixed number of async actors (``core.queueing.shard_of``;
``ARBFLOW_DISTRIBUTION__SHARDS``, default one per 2 CPUs, 1-8), never one actor per user. A shard:

- takes a fan-out batch from the distributor (:meth:`QueueShard.enqueue`: one
  opportunity, many chats, columnar) and persists it to Redis in one round trip
  before acknowledging, deduplicated by (chat, opportunity);
- runs a pump: what is due for a chat (tier delay, active hours) goes out best
  first, several at once as one digest; an item whose opportunity closed or went
  stale, or stopped being pushable, is dropped (``expired``); quotas are consumed in
  Redis at send time (the same counters ``/opportunities`` draws on; once per item, given
  back when it ends unsent); a sent item starts its target's cooldown for the dedup key
  and any end drops its pending mark (``actors.directory.DeliveryMarks``), after which
  the distributor is told which (target, key) pairs changed; send slots come from the global rate
  limiter (``ratelimit:global``); one send in flight per chat, so a chat's pushes
  keep their order and its 1 msg/s;
- handles outcomes: a 429 pauses the limiter for ``retry_after`` and requeues; a
  403 marks the chat blocked and ends its session; 5xx and timeouts retry with
  backoff up to ``max_retries``, then go to the dead-letter list (an admin replays
  it); every outcome is a ``deliveries`` row.

Durability (Redis, per shard ``uq:NNN``): ``:batches`` holds each fan-out batch
(Arrow IPC) with its opportunity, ``:done:<opp>`` the chats finished for it and
``:inflight:<opp>`` the chats whose send has started. A restarted shard rebuilds
its queues as batches minus done minus in flight; a chat that was in flight when the shard
died may or may not have got its message, so it is not sent again (recorded as
``failed``/``unknown_after_restart``): nothing queued is lost, nothing is sent twice.

The package, one room per job: ``batches`` (the fan-out table, its bytes, the cut by
shard), ``base`` (a shard's state and ports), ``persistence`` (the Redis log, the rows,
the flush), ``sending`` (the pump, sends, joins, outcomes, edits on close), ``shard``
(:class:`QueueShard`: intake, life, reporting), ``actor`` (:class:`QueueShardActor`,
:func:`get_shards`).
"""

from actors.queues.actor import QueueShardActor, get_shards
from actors.queues.base import Limiter, Notifier, ShardStats
from actors.queues.batches import (
    BATCH_SCHEMA,
    batch_for,
    decode_batch,
    encode_batch,
    shard_name,
    split_by_shard,
)
from actors.queues.shard import QueueShard

__all__ = [
    "BATCH_SCHEMA",
    "Limiter",
    "Notifier",
    "QueueShard",
    "QueueShardActor",
    "ShardStats",
    "batch_for",
    "decode_batch",
    "encode_batch",
    "get_shards",
    "shard_name",
    "split_by_shard",
]
