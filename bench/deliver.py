"""Benchmark: sustained push delivery against the sandbox enforcing Telegram's limits.

One run starts a private ``redis-server``, a local Ray, and the Telegram sandbox in its
own process (flood limits on: 30 msg/s per bot, or 1,000 with paid broadcast; 1 msg/s
per chat). For each rate it starts the real push side (``serve.orchestrator.Distribution``:
the ``ratelimit:global`` actor, the ``uq:NNN`` queue shards, the distributor) and:

- **sustained**: queues one opportunity for more distinct chats than the window can
  carry (so the queues never run dry), straight into the shards, and counts the
  ``sendMessage`` calls the sandbox answered 200 in each second of the window
  (``--seconds``, 60 by default, 10 with ``--quick``), after a short warm-up. The
  baseline is the configured global rate: ``ratio`` = achieved ÷ configured (target
  ≥ 0.96), with zero 429 answers.
- **several per chat** (each rate): every 0.5 s a new opportunity for the same few private
  chats and channels (20 + 6 at 30/s, 200 + 20 at 1,000/s), so each always has one waiting
  and the per-chat (1/s) and per-group (20/min) limits bind: ``ratio`` = messages answered
  200 in the window ÷ what those limits allow (target ≥ 0.9: a chat's next message is spaced
  from when its last send ended), with zero 429 answers.
- **a pool of bots** (``--pool N``, 3 by default; 0 skips it): the sandbox hosts N bots at
  30 msg/s each, the users are bound to them in turn (the first bot's share by no binding at all:
  the primary's, as records from before the pool), and the sustained case runs over all of
  them: ``ratio`` = achieved ÷ (N x 30) (target ≥ 0.95, zero 429s from every bot), the
  capacity of the pool adding up (docs/bot-pool.md).
- **latency** (first rate only): Premium users with a session and an empty queue;
  one opportunity event at a time goes to the distributor (``on_events``, as the pair
  coordinators send it); the time from the event's ``detected_at`` to the sandbox
  receiving the ``sendMessage`` is measured (target p99 ≤ 250 ms).

    uv run python bench/deliver.py [--quick] [--seconds S] [--rates 30,1000] [--shards N]
                                   [--pool N] [--pool-only]

``--shards`` defaults to what ``arbflow run`` starts on this machine (one per 2 CPUs).

Last line: ``{"bench": "deliver", "rates": {...}, "pool": {...}, "latency_ms": {...}, "ratio":
min achieved/configured, "target": ..., "ok": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = (
    ">= 0.96x the configured global rate for the window with zero 429s (30 and 1000 msg/s); several "
    "messages per chat and group: >= 0.9x what the per-chat and per-group limits allow, zero 429s; "
    "p99 <= 250 ms; a pool of 3 bots: >= 0.95x 90 msg/s sustained, zero 429s"
)
POOL_TARGET = 0.95
"""The pool case: at least this share of the bots' summed rate, sustained."""
GAP_S = 0.5
"""The several-per-chat case: a new opportunity for every chat this often (faster than 1/s)."""


def _sandbox(port: int, rate: float, paid: bool, ready: Any, tokens: list[str] | None = None) -> None:
    from serve.standins.sandbox import run_sandbox

    run_sandbox(
        "127.0.0.1", port, tokens, global_rate=rate, paid_broadcast=paid, announce=lambda _s: ready.set()
    )


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.loads(r.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _event(kind: str = "spot_spread") -> dict[str, Any]:
    return {
        "event": "opened",
        "opportunity_id": str(uuid.uuid4()),
        "kind": kind,
        "symbol": "BTC/USDT",
        "buy_exchange": "binance",
        "sell_exchange": "okx",
        "gross_bps": 55.0,
        "net_bps": 35.0,
        "gross_apr": None,
        "notional_usd": 10_000.0,
        "confidence": 0.9,
        "priority": "high",
        "pushable": True,
        "flags": [],
        "detected_at": datetime.now(UTC).isoformat(),
    }


def _targets(chats: np.ndarray, tier: str, due_ms: int, audience: str = "user") -> pa.Table:
    """A queue-shard batch (``BATCH_SCHEMA``): every chat a user of ``tier`` (or a channel), due
    at ``due_ms``."""
    from actors.queues import BATCH_SCHEMA

    n = len(chats)
    return pa.table(
        {
            "chat": chats,
            "chat_ref": pa.nulls(n, pa.string()),
            "user_id": chats if audience == "user" else pa.nulls(n, pa.int64()),
            "audience": pa.array([audience] * n),
            "tier": pa.array([tier] * n),
            "due_ms": pa.array(np.full(n, due_ms, dtype=np.int64)),
            "silent": pa.array(np.zeros(n, dtype=bool)),
            "tz": pa.nulls(n, pa.string()),  # UTC
            "lang": pa.nulls(n, pa.string()),  # English
            "score": pa.nulls(n, pa.float64()),  # no engagement model: today's order
        },
        schema=BATCH_SCHEMA,
    )


def sustained(settings: Any, base_url: str, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    import ray

    from actors.queues import split_by_shard
    from serve.orchestrator import Distribution

    dist = Distribution(settings).start()
    try:
        _post(f"{base_url}/sandbox/reset", {})
        n = int(rate * (seconds + warmup) * 1.25) + 50
        now_ms = int(time.time() * 1000)
        table = _targets(np.arange(10_000_000, 10_000_000 + n, dtype=np.int64), "enterprise", now_ms)
        event = {**_event(), "detected_at": datetime.now(UTC).isoformat()}
        t0 = time.time()
        parts = split_by_shard(table, len(dist.shards))
        ray.get([dist.shards[i].enqueue.remote(event, part) for i, part in parts.items()])
        enqueue_s = time.time() - t0
        time.sleep(warmup + seconds + 1.0)
        records = _get(f"{base_url}/sandbox/requests?method=sendMessage&limit=1000000")["requests"]
        ok_times = np.sort(np.array([r["time"] for r in records if r.get("status") == 200]))
        throttled = sum(1 for r in records if r.get("status") == 429)
        start = t0 + enqueue_s + warmup
        window = ok_times[(ok_times >= start) & (ok_times < start + seconds)]
        achieved = window.size / seconds
        per_second = np.histogram(window, bins=int(seconds), range=(start, start + seconds))[0]
        stats = dist.stats()
    finally:
        dist.stop()
    return {
        "configured": rate,
        "achieved": round(achieved, 1),
        "ratio": round(achieved / rate, 3),
        "min_second": int(per_second.min()) if per_second.size else 0,
        "max_second": int(per_second.max()) if per_second.size else 0,
        "sent_total": int(ok_times.size),
        "throttled_429": int(throttled),
        "enqueue_s": round(enqueue_s, 2),
        "shard_429s": stats["totals"].get("throttled", 0),
        "late_slots": stats["totals"].get("late_slots", 0),
    }


def pool(settings: Any, base_url: str, seconds: float, warmup: float) -> dict[str, Any]:
    """Sustained delivery through a pool of bots: the chats bound to the bots in turn (the
    primary's share by no binding at all), as many as the window can carry."""
    import ray
    import redis

    from actors.queues import split_by_shard
    from serve.orchestrator import Distribution
    from serve.standins.sandbox import DEFAULT_USERNAME
    from state.keys import BOT_BINDINGS_KEY

    bots = settings.telegram.bot_ids
    rate = settings.telegram.global_rate * len(bots)
    n = int(rate * (seconds + warmup) * 1.25) + 50
    chats = np.arange(40_000_000, 40_000_000 + n, dtype=np.int64)
    client = redis.Redis.from_url(settings.redis.url)
    pipe = client.pipeline(transaction=False)
    for i, chat in enumerate(chats.tolist()):
        if i % len(bots):  # the others bound explicitly (a /start through them)
            pipe.hset(BOT_BINDINGS_KEY, str(chat), str(bots[i % len(bots)]))
    pipe.execute()
    client.close()
    dist = Distribution(settings).start()
    try:
        _post(f"{base_url}/sandbox/reset", {})
        now_ms = int(time.time() * 1000)
        table = _targets(chats, "enterprise", now_ms)
        event = {**_event(), "detected_at": datetime.now(UTC).isoformat()}
        t0 = time.time()
        parts = split_by_shard(table, len(dist.shards))
        ray.get([dist.shards[i].enqueue.remote(event, part) for i, part in parts.items()])
        enqueue_s = time.time() - t0
        time.sleep(warmup + seconds + 1.0)
        records = _get(f"{base_url}/sandbox/requests?method=sendMessage&limit=1000000")["requests"]
        stats = dist.stats()
    finally:
        dist.stop()
    start = t0 + enqueue_s + warmup
    per_bot: dict[str, Any] = {}
    total = 0
    for name in sorted({r["bot"] for r in records}):
        times = np.sort(np.array([r["time"] for r in records if r["bot"] == name and r.get("status") == 200]))
        window = times[(times >= start) & (times < start + seconds)]
        total += window.size
        per_second = np.histogram(window, bins=int(seconds), range=(start, start + seconds))[0]
        per_bot[name] = {
            "achieved": round(window.size / seconds, 1),
            "max_second": int(per_second.max()) if per_second.size else 0,
            "throttled_429": sum(1 for r in records if r["bot"] == name and r.get("status") == 429),
        }
    # the sandbox names its bots in order (serve.standins.sandbox): each chat's push must come
    # from the bot it is bound to
    names = [DEFAULT_USERNAME] + [f"arbflow_sandbox_{i + 1}_bot" for i in range(1, len(bots))]
    wrong = sum(
        1
        for r in records
        if r.get("status") == 200 and r["bot"] != names[(int(r["chat_id"]) - 40_000_000) % len(bots)]
    )
    achieved = total / seconds
    return {
        "bots": len(bots),
        "configured": rate,
        "achieved": round(achieved, 1),
        "ratio": round(achieved / rate, 3),
        "per_bot": per_bot,
        "throttled_429": sum(b["throttled_429"] for b in per_bot.values()),
        "enqueue_s": round(enqueue_s, 2),
        "shard_429s": stats["totals"].get("throttled", 0),
        "wrong_bot": wrong,
    }


def several(settings: Any, base_url: str, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    """Several messages per chat and per group: every ``GAP_S`` a new opportunity for the same
    private chats and channels (groups to the sandbox), so each always has one waiting and the
    per-chat (1/s) and per-group (20/min) limits bind, not the global rate. ``ratio`` = messages
    answered 200 in the window / what Telegram allows those chats (chats at 1/s, groups at 1/3 s)."""
    import ray

    from actors.queues import split_by_shard
    from serve.orchestrator import Distribution

    chats, groups = (20, 6) if rate <= 30 else (200, 20)
    private = np.arange(30_000_000, 30_000_000 + chats, dtype=np.int64)
    channels = -np.arange(1_000_000_000_001, 1_000_000_000_001 + groups, dtype=np.int64)
    allowed = chats * 1.0 + groups * 20 / 60
    dist = Distribution(settings).start()
    try:
        _post(f"{base_url}/sandbox/reset", {})
        t0 = time.time()
        k = 0
        while time.time() < t0 + warmup + seconds:
            now_ms = int(time.time() * 1000)
            table = pa.concat_tables(
                [_targets(private, "enterprise", now_ms), _targets(channels, "channel", now_ms, "channel")]
            )
            event = {**_event(), "symbol": f"S{k}/USDT", "detected_at": datetime.now(UTC).isoformat()}
            parts = split_by_shard(table, len(dist.shards))
            ray.get([dist.shards[i].enqueue.remote(event, part) for i, part in parts.items()])
            k += 1
            time.sleep(max(0.0, t0 + k * GAP_S - time.time()))
        time.sleep(1.0)
        records = _get(f"{base_url}/sandbox/requests?method=sendMessage&limit=1000000")["requests"]
    finally:
        dist.stop()
    ok = [(r["time"], r["chat_id"]) for r in records if r.get("status") == 200]
    throttled = sum(1 for r in records if r.get("status") == 429)
    start = t0 + warmup
    window = [(t, c) for t, c in ok if start <= t < start + seconds]
    per_chat: dict[int, int] = {}
    for _t, c in window:
        per_chat[int(c)] = per_chat.get(int(c), 0) + 1
    in_groups = sum(n for c, n in per_chat.items() if c < 0)
    return {
        "chats": chats,
        "groups": groups,
        "opportunities": k,
        "allowed_per_s": round(allowed, 2),
        "achieved": round(len(window) / seconds, 2),
        "ratio": round(len(window) / seconds / allowed, 3),
        "per_chat_per_s": round((len(window) - in_groups) / seconds / chats, 3),
        "per_group_per_min": round(in_groups / seconds / groups * 60, 2),
        "throttled_429": int(throttled),
    }


def fanout(settings: Any, users: int) -> dict[str, Any]:
    """Enqueueing one opportunity's eligible users into the shards, vs raw Redis writes."""
    import ray
    import redis

    from actors.queues import split_by_shard
    from serve.orchestrator import Distribution

    far = int((time.time() + 3600) * 1000)  # due in an hour: nothing is sent meanwhile
    chats = np.arange(20_000_000, 20_000_000 + users, dtype=np.int64)
    table = _targets(chats, "premium", far)
    dist = Distribution(settings).start()
    try:
        runs = []
        for _ in range(3):
            event = _event()
            t0 = time.perf_counter()
            parts = split_by_shard(table, len(dist.shards))
            queued = sum(ray.get([dist.shards[i].enqueue.remote(event, part) for i, part in parts.items()]))
            runs.append(time.perf_counter() - t0)
            assert queued == users, queued
    finally:
        dist.stop()
    # baseline: the same users written to Redis as one hash field each, pipelined
    client = redis.Redis.from_url(settings.redis.url)
    t0 = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for chat in chats.tolist():
        pipe.hset("bench:fanout:raw", str(chat), "1")
    pipe.execute()
    raw_s = time.perf_counter() - t0
    client.delete("bench:fanout:raw")
    best = min(runs)
    return {
        "users": users,
        "seconds": round(best, 3),
        "users_per_s": round(users / best),
        "raw_redis_per_s": round(users / raw_s),
        "ratio_vs_raw_redis": round(raw_s / best, 2),
    }


def latency(settings: Any, base_url: str, samples: int) -> dict[str, Any]:
    import ray

    from core.accounts import Tier, User
    from serve.orchestrator import Distribution
    from state.sessions import RedisSessionStore
    from state.users import RedisUserStore

    async def users() -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.redis.url)
        store, sessions = RedisUserStore(client), RedisSessionStore(client)
        now = datetime.now(UTC)
        for i in range(samples):  # user i wants symbol i only: one eligible user per event
            uid = 500_001 + i
            await store.create(User.new(uid, now, tier=Tier.PREMIUM))
            await store.update_preferences(uid, symbols={f"S{i}/USDT"})
            await sessions.start(uid, uid, now)
        await client.aclose()

    asyncio.run(users())
    dist = Distribution(settings).start()
    out_ms: list[float] = []
    try:
        _post(f"{base_url}/sandbox/reset", {})
        for i in range(samples):
            event = {**_event(), "symbol": f"S{i}/USDT"}
            ray.get(dist.distributor.on_events.remote([event]))
            detected = datetime.fromisoformat(event["detected_at"]).timestamp()
            deadline = time.time() + 5
            first = None
            while first is None and time.time() < deadline:
                time.sleep(0.02)
                recs = _get(f"{base_url}/sandbox/requests?method=sendMessage")["requests"]
                times = [r["time"] for r in recs if r.get("status") == 200]
                if times:
                    first = min(times)
            if first is not None:
                out_ms.append((first - detected) * 1000)
            time.sleep(0.1)
            _post(f"{base_url}/sandbox/reset", {})
    finally:
        dist.stop()
    lat = np.array(out_ms)
    return {
        "n": int(lat.size),
        "p50": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p99": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
        "max": round(float(lat.max()), 1) if lat.size else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rates", default="30,1000")
    parser.add_argument("--shards", type=int, help="queue shards (default: arbflow run's)")
    parser.add_argument("--samples", type=int)
    parser.add_argument("--fanout-users", type=int)
    parser.add_argument("--pool", type=int, default=3, help="bots of the pool case (0: skip it)")
    parser.add_argument("--pool-only", action="store_true", help="only the pool case")
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    samples = args.samples or (30 if args.quick else 100)
    rates = [] if args.pool_only else [float(r) for r in args.rates.split(",") if r]

    import ray

    from core.settings import Settings, default_queue_shards
    from serve.runtime import EmbeddedRedis, free_port, ray_init
    from serve.standins.sandbox import DEFAULT_TOKEN, sandbox_tokens

    tmp = Path(tempfile.mkdtemp(prefix="arbflow-bench-deliver-"))
    redis_server = EmbeddedRedis(tmp / "redis").start()
    results: dict[str, Any] = {}
    several_results: dict[str, Any] = {}
    lat: dict[str, Any] = {}
    fan: dict[str, Any] = {}
    pooled: dict[str, Any] = {}
    ctx = mp.get_context("spawn")
    try:
        for k, rate in enumerate(rates):
            paid = rate > 30
            port = free_port()
            ready = ctx.Event()
            proc = ctx.Process(target=_sandbox, args=(port, rate, paid, ready), daemon=True)
            proc.start()
            ready.wait(30)
            base_url = f"http://127.0.0.1:{port}"
            settings = Settings.model_validate(
                dict(
                    data_dir=tmp / f"var{k}",
                    redis={"url": redis_server.url.replace("/0", f"/{k + 1}")},
                    lake={"url": str(tmp / f"lake{k}"), "flush_seconds": 1.0},
                    ray={"namespace": f"bench-deliver-{k}"},
                    telegram={"token": DEFAULT_TOKEN, "api_base": base_url, "global_rate": rate},
                    distribution={"paid_broadcast": paid} | ({"shards": args.shards} if args.shards else {}),
                )
            )
            if not ray.is_initialized():
                ray_init(settings)
            try:
                results[f"{rate:g}"] = sustained(settings, base_url, rate, seconds, warmup=2.0)
                print(f"rate {rate:g}: {results[f'{rate:g}']}", flush=True)
                several_results[f"{rate:g}"] = several(settings, base_url, rate, seconds, warmup=4.0)
                print(f"several per chat at {rate:g}: {several_results[f'{rate:g}']}", flush=True)
                if k == 0:
                    lat = latency(settings, base_url, samples)
                    print(f"latency: {lat}", flush=True)
                    fan = fanout(settings, args.fanout_users or (100_000 if args.quick else 400_000))
                    print(f"fan-out: {fan}", flush=True)
            finally:
                proc.terminate()
                proc.join(10)
        if args.pool > 1:
            k = len(rates)
            tokens = sandbox_tokens(args.pool)
            port = free_port()
            ready = ctx.Event()
            proc = ctx.Process(target=_sandbox, args=(port, 30.0, False, ready, tokens), daemon=True)
            proc.start()
            ready.wait(30)
            base_url = f"http://127.0.0.1:{port}"
            settings = Settings.model_validate(
                dict(
                    data_dir=tmp / f"var{k}",
                    redis={"url": redis_server.url.replace("/0", f"/{k + 1}")},
                    lake={"url": str(tmp / f"lake{k}"), "flush_seconds": 1.0},
                    ray={"namespace": f"bench-deliver-{k}"},
                    telegram={"tokens": tokens, "api_base": base_url, "global_rate": 30.0},
                    distribution={"shards": args.shards} if args.shards else {},
                )
            )
            if not ray.is_initialized():
                ray_init(settings)
            try:
                pooled = pool(settings, base_url, seconds, warmup=2.0)
                print(f"pool of {args.pool} bots: {pooled}", flush=True)
            finally:
                proc.terminate()
                proc.join(10)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        redis_server.stop()

    ratio = min([r["ratio"] for r in results.values()] + ([pooled["ratio"]] if pooled else []), default=0.0)
    no_429 = all(r["throttled_429"] == 0 for r in [*results.values(), *several_results.values()])
    several_ok = all(r["ratio"] >= 0.9 for r in several_results.values())
    p99 = lat.get("p99")
    fan_ok = fan.get("users_per_s", 0) >= 100_000
    pool_ok = not pooled or (
        pooled["ratio"] >= POOL_TARGET and pooled["throttled_429"] == 0 and pooled["wrong_bot"] == 0
    )
    if args.pool_only:
        ok = bool(pooled) and pool_ok
    else:
        rates_ok = min((r["ratio"] for r in results.values()), default=0.0) >= 0.96
        ok = rates_ok and no_429 and several_ok and p99 is not None and p99 <= 250 and fan_ok and pool_ok
    print(f"{'rate':>8} {'achieved':>10} {'ratio':>7} {'429s':>6} {'min/s':>6} {'max/s':>6}")
    for name, r in results.items():
        print(
            f"{name:>8} {r['achieved']:>10} {r['ratio']:>7} {r['throttled_429']:>6} "
            f"{r['min_second']:>6} {r['max_second']:>6}"
        )
    for name, r in several_results.items():
        print(
            f"several per chat at {name}/s: {r['achieved']}/s of {r['allowed_per_s']} allowed "
            f"(ratio {r['ratio']}; {r['per_chat_per_s']}/s per chat, {r['per_group_per_min']}/min per "
            f"group), {r['throttled_429']} 429s"
        )
    if pooled:
        print(
            f"pool of {pooled['bots']} bots: {pooled['achieved']}/s of {pooled['configured']:g} "
            f"(ratio {pooled['ratio']}), {pooled['throttled_429']} 429s, {pooled['wrong_bot']} through "
            f"another bot; per bot: "
            + ", ".join(
                f"@{n} {b['achieved']}/s (max {b['max_second']} in a second)"
                for n, b in pooled["per_bot"].items()
            )
        )
    print(f"opportunity -> first sendMessage (Premium, empty queue): {lat}")
    print(f"fan-out of one opportunity into the queue shards: {fan}")
    print(
        json.dumps(
            {
                "bench": "deliver",
                "seconds": seconds,
                "shards": args.shards or default_queue_shards(),
                "rates": results,
                "pool": pooled,
                "several": several_results,
                "latency_ms": lat,
                "fanout": fan,
                "ratio": ratio,
                "target": TARGET,
                "ok": ok,
            }
        )
    )
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
