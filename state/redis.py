"""The Redis client and what every store of the online state shares.

Every store takes a ``redis.asyncio`` client (:func:`redis_client` fails fast and
reconnects by itself) and a key ``prefix`` (empty by default; tests pass a unique one
for isolation; ``p`` = ``prefix + ":"`` when a prefix is given). Library errors become
:class:`core.errors.StoreUnavailable` (:func:`redis_errors`). Every operation is one round
trip (a Lua script, a pipeline or a single command) except
:meth:`state.users.RedisUserStore.modify_preferences` (optimistic WATCH/MULTI). The Lua
scripts build a few key names from the prefix (sweeps): one Redis (or a hash-tagged
prefix), not a cluster-wide keyspace. Redis is the system of record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from core.errors import StoreUnavailable

MAX_CONNECTIONS = 100
"""Connections one client opens at most (redis-py's default)."""
POOL_WAIT_S = 5.0
"""How long a command waits for one of them when all are in use, before failing."""


def redis_client(url: str, *, max_connections: int = MAX_CONNECTIONS) -> aioredis.Redis:
    """A client that fails fast (and reconnects by itself) when Redis restarts. When all its
    connections are in use a command waits for one (up to :data:`POOL_WAIT_S`): redis-py's
    default pool raises "Too many connections" instead, which a caller cannot tell from Redis
    being away (a queue shard at 1,000 messages/s put back 3 % of its sends for it)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis: {what} failed: {exc}") from exc


def as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def from_ms(ms: int | str | bytes) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def pairs(raw: Sequence[Any]) -> dict[str, str]:
    return {as_str(raw[i]): as_str(raw[i + 1]) for i in range(0, len(raw), 2)}


class Prefixed:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.p = f"{prefix}:" if prefix else ""


__all__ = [
    "Prefixed",
    "as_str",
    "from_ms",
    "pairs",
    "redis_client",
    "redis_errors",
    "to_ms",
]


class PipelineBatcher:
    """Writes asked for in one turn of the event loop go to Redis in one pipeline.

    :meth:`run` adds the commands ``build`` puts on a pipeline and returns once that pipeline
    has executed (or raises its error): each caller still knows its write is in Redis, while
    the calls that arrive together (sends that wake in the same turn: many, when a loop
    lags) share one round trip — a queue shard wrote twice per push, one pipeline each.
    ``transaction``: the shared pipeline is a MULTI/EXEC (every caller's commands atomic
    together, a fortiori each caller's)."""

    def __init__(self, client: aioredis.Redis, *, transaction: bool = False) -> None:
        self.client = client
        self.transaction = transaction
        self._waiting: list[tuple[Callable[[Any], None], asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0
        self.pipelines = 0

    async def run(self, build: Callable[[Any], None]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not self._waiting:  # the first of this turn: the others join it until the next
            loop.call_soon(self._start)
        self._waiting.append((build, done))
        self.calls += 1
        await done

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[tuple[Callable[[Any], None], asyncio.Future[None]]]) -> None:
        self.pipelines += 1
        try:
            pipe = self.client.pipeline(transaction=self.transaction)
            for build, _ in batch:
                build(pipe)
            await pipe.execute()
        except BaseException as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)
