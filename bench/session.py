"""Benchmark: session validation in the bot middleware vs a raw Redis GET.

Starts its own ``redis-server`` (``EmbeddedRedis``), opens sessions for a set of users
and replays the middleware's traffic on a simulated clock: every user interacts again
0.2-5 s after their previous update (a conversation: button presses, commands), the
users interleaved, for a couple of simulated minutes (so some validations find a
cached session, most go to Redis, and the coalesced 7-day extension writes happen
once a minute per user). Each update is timed through ``SessionCache.validate``
(``state.sessions``) and, right next to it, through a raw redis-py ``GET`` of a per-user
key on the same client: the baseline is measured in the same run, interleaved call
by call, so both see the same machine.

    uv run python bench/session.py [--quick] [--users 2000] [--calls 100000]

Last line: ``{"bench": "session", "validate_p99_ms": ..., "raw_get_p99_ms": ..., "ratio": ..., ...}``
with ``ratio = raw_get_p99 / validate_p99`` (>= 0.33 means within 3x a raw GET).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve.runtime import EmbeddedRedis
from state.redis import redis_client
from state.sessions import RedisSessionStore, SessionCache

TARGET = "p99 <= 2 ms and <= 3x a raw Redis GET"
TARGET_P99_MS = 2.0
TARGET_RATIO = 1 / 3


def _pct(values: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) / 1e6


async def run(users: int, calls: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    with (
        tempfile.TemporaryDirectory(prefix="arbflow-bench-session-") as tmp,
        EmbeddedRedis(Path(tmp)) as server,
    ):
        client = redis_client(server.url)
        try:
            store = RedisSessionStore(client, prefix="bench")
            sim = [0.0]
            cache = SessionCache(store, ttl_s=1.0, extend_every_s=60.0, clock=lambda: sim[0])
            t0 = datetime.now(UTC).replace(microsecond=0)
            async with client.pipeline(transaction=False) as pipe:
                for uid in range(users):
                    pipe.set(f"bench:raw:{uid}", "x" * 150)  # about the size of a session hash
                await pipe.execute()
            for uid in range(users):
                await store.start(uid, uid, t0)

            # the traffic: each user's next update 0.2-5 s after the previous one
            heap = [(rng.uniform(0.0, 5.0), uid) for uid in range(users)]
            heapq.heapify(heap)
            warmup = min(2_000, calls // 10)
            validate_ns: list[int] = []
            raw_ns: list[int] = []
            misses_before = 0
            gc.collect()
            gc.freeze()
            perf = time.perf_counter_ns
            for i in range(warmup + calls):
                at, uid = heapq.heappop(heap)
                heapq.heappush(heap, (at + rng.uniform(0.2, 5.0), uid))
                sim[0] = at
                now = t0 + timedelta(seconds=at)
                key = f"bench:raw:{uid}"
                # alternate which goes first so neither always gets the warmer socket
                if i & 1:
                    a = perf()
                    await client.get(key)
                    b = perf()
                    session = await cache.validate(uid, now)
                    c = perf()
                    raw, val = b - a, c - b
                else:
                    a = perf()
                    session = await cache.validate(uid, now)
                    b = perf()
                    await client.get(key)
                    c = perf()
                    val, raw = b - a, c - b
                if session is None:
                    raise SystemExit(f"user {uid} lost their session at {now}")
                if i == warmup:
                    validate_ns.clear()
                    raw_ns.clear()
                    hits_before, misses_before = cache.hits, cache.misses
                validate_ns.append(val)
                raw_ns.append(raw)
            gc.unfreeze()
            hits = cache.hits - hits_before
            misses = cache.misses - misses_before
            sim_seconds = sim[0]
        finally:
            await client.aclose()

    v50, v99 = _pct(validate_ns, 50), _pct(validate_ns, 99)
    r50, r99 = _pct(raw_ns, 50), _pct(raw_ns, 99)
    ratio = r99 / v99 if v99 else 0.0
    return {
        "bench": "session",
        "validate_p50_ms": round(v50, 4),
        "validate_p99_ms": round(v99, 4),
        "raw_get_p50_ms": round(r50, 4),
        "raw_get_p99_ms": round(r99, 4),
        "calls": calls,
        "users": users,
        "cache_hit_rate": round(hits / max(1, hits + misses), 3),
        "simulated_s": round(sim_seconds, 1),
        "ratio": round(ratio, 3),
        "target": TARGET,
        "ok": bool(v99 <= TARGET_P99_MS and ratio >= TARGET_RATIO),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls (well under 60 s)")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    users = args.users or (1_000 if args.quick else 2_000)
    calls = args.calls or (30_000 if args.quick else 150_000)
    result = asyncio.run(run(users, calls, args.seed))
    print(
        f"SessionCache.validate p50 {result['validate_p50_ms']} ms, p99 {result['validate_p99_ms']} ms "
        f"(hit rate {result['cache_hit_rate']:.0%} over {result['simulated_s']} simulated s, "
        f"{users} users); raw GET p50 {result['raw_get_p50_ms']} ms, p99 {result['raw_get_p99_ms']} ms",
        flush=True,
    )
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
