"""Benchmark: the Telegram webhook on Ray Serve vs an empty Serve endpoint vs bare aiohttp.

One run starts a private ``redis-server``, a local Ray and Ray Serve once, and deploys
side by side (``serve.run_many``):

- ``webhook`` at ``/`` — our app (``serve.app.build_app``): secret check, size limit,
  JSON + aiogram ``Update`` validation, ``update_id`` dedup in Redis, enqueue on the
  bot shard actor (awaited), ``{"ok": true}``; the shard's handler is a no-op
  (``serve.dispatch:noop_handler_factory``), so the bot's own work is not measured;
- ``empty`` at ``/empty`` — a FastAPI ingress that only parses the JSON body (the
  baseline the issue names), same ``max_ongoing_requests``;
- a bare aiohttp server doing the same parse, in its own process.

An aiohttp client posts the same real update (``teloxide_private_text_message.json``,
a fresh ``update_id`` each time, so every request passes dedup and is enqueued) at 1,
10 and 40 concurrent connections, for a fixed time per level, the three targets
interleaved level by level.

    uv run python bench/webhook.py [--quick] [--seconds S] [--levels 1,10,40]

Last line: ``{"bench": "webhook", "levels": {...}, "ratio": min over levels of
webhook/empty_serve, "ratio_vs_aiohttp": {...}, "target": ..., "ok": ...}``.
"""

# No `from __future__ import annotations`: the FastAPI view below needs real annotations.

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = ">= 0.8x empty Serve at every level; >= 0.5x bare aiohttp at 1 and 10"
FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "fixtures"
    / "telegram"
    / "updates"
    / "teloxide_private_text_message.json"
)
SECRET = "bench-secret"
PATH = "/telegram/webhook"


# -- the baselines ---------------------------------------------------------------------------


def empty_serve_app() -> Any:
    """A FastAPI ingress on Serve that parses the JSON body and answers ``{"ok": true}``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from ray import serve

    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @serve.deployment(name="EmptyIngress", max_ongoing_requests=64)
    @serve.ingress(api)
    class EmptyIngress:
        @api.post(PATH)
        async def webhook(self, request: Request) -> Response:
            json.loads(await request.body())
            return Response(b'{"ok":true}', media_type="application/json")

    return EmptyIngress.bind()  # type: ignore[attr-defined]


def run_bare_aiohttp(port: int, ready: Any) -> None:
    """The bare aiohttp server (own process): parse the JSON body, answer ``{"ok": true}``."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post(PATH, handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the client ------------------------------------------------------------------------------


class Ids:
    def __init__(self) -> None:
        self.next = int(time.time() * 1000) % 1_000_000_000 * 10

    def take(self) -> int:
        self.next += 1
        return self.next


async def measure(url: str, body_template: bytes, conc: int, seconds: float, ids: Ids) -> dict[str, Any]:
    import aiohttp

    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET}
    lat: list[int] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=conc, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(deadline: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                body = body_template.replace(b"__ID__", str(ids.take()).encode())
                t0 = time.perf_counter_ns()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    ok = resp.status == 200
                if record:
                    if ok:
                        lat.append(time.perf_counter_ns() - t0)
                    else:
                        errors += 1

        warm = min(0.5, seconds / 4)
        await asyncio.gather(*(worker(time.perf_counter() + warm, False) for _ in range(conc)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + seconds, True) for _ in range(conc)))
        wall = time.perf_counter() - started
    arr = np.asarray(lat, dtype=np.float64) / 1e6 if lat else np.asarray([np.nan])
    return {
        "rps": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "n": len(lat),
        "errors": errors,
    }


# -- the run ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="~2.5 s per level and target (< 60 s in all)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per level and target (10)")
    parser.add_argument("--levels", default="1,10,40", help="concurrent connections, comma-separated")
    parser.add_argument(
        "--no-await", action="store_true", help="ack once the shard call is submitted, not once enqueued"
    )
    parser.add_argument("--replicas", type=int, default=1, help="replicas of both Serve ingresses")
    opts = parser.parse_args()
    seconds = opts.seconds or (2.5 if opts.quick else 10.0)
    levels = [int(x) for x in opts.levels.split(",")]
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from core.settings import Settings
    from serve.runtime import EmbeddedRedis, free_port, ray_init

    update = json.loads(FIXTURE.read_text())
    update["update_id"] = "__ID__"
    template = json.dumps(update).replace('"__ID__"', "__ID__").encode()

    t_start = time.monotonic()
    ctx = mp.get_context("spawn")
    aio_port = free_port()
    aio_ready = ctx.Event()
    aio_proc = ctx.Process(target=run_bare_aiohttp, args=(aio_port, aio_ready), daemon=True)
    aio_proc.start()
    with (
        tempfile.TemporaryDirectory(prefix="arbflow-bench-webhook-") as tmp,
        EmbeddedRedis(Path(tmp) / "redis") as rs,
    ):
        settings = Settings.model_validate(
            {
                "data_dir": Path(tmp) / "var",
                "redis": {"url": rs.url},
                "lake": {"url": str(Path(tmp) / "lake")},
                "ray": {"namespace": "bench-webhook"},
            }
        )
        ray_init(settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from ray import serve
            from ray.serve.api import RunTarget

            from serve.app import build_app, shutdown_shards
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        ours = build_app(
            {
                "settings": settings,
                "handler": "serve.dispatch:noop_handler_factory",
                "webhook_secret": SECRET,
                "admin_token": "bench",
                "num_replicas": opts.replicas,
                "await_enqueue": not opts.no_await,
            }
        )
        serve.run_many(
            [
                RunTarget(ours, name="webhook", route_prefix="/"),
                RunTarget(empty_serve_app(), name="empty", route_prefix="/empty"),
            ]
        )
        aio_ready.wait(30)
        startup_s = time.monotonic() - t_start
        targets = {
            "webhook": f"http://127.0.0.1:{port}{PATH}",
            "empty_serve": f"http://127.0.0.1:{port}/empty{PATH}",
            "bare_aiohttp": f"http://127.0.0.1:{aio_port}{PATH}",
        }
        ids = Ids()
        results: dict[str, dict[str, Any]] = {}
        try:
            for conc in levels:
                row: dict[str, Any] = {}
                for name, url in targets.items():
                    row[name] = asyncio.run(measure(url, template, conc, seconds, ids))
                    print(
                        f"  {conc:>3} conn  {name:<13} {json.dumps(row[name])}", file=sys.stderr, flush=True
                    )
                results[str(conc)] = row
        finally:
            serve.shutdown()
            shutdown_shards(settings)
            import ray

            ray.shutdown()
            aio_proc.terminate()
            aio_proc.join(5)
    vs_empty = {
        k: round(r["webhook"]["rps"] / r["empty_serve"]["rps"], 3) if r["empty_serve"]["rps"] else 0.0
        for k, r in results.items()
    }
    vs_aio = {
        k: round(r["webhook"]["rps"] / r["bare_aiohttp"]["rps"], 3) if r["bare_aiohttp"]["rps"] else 0.0
        for k, r in results.items()
    }
    ratio = min(vs_empty.values())
    ok_aio = all(v >= 0.5 for k, v in vs_aio.items() if k in ("1", "10"))
    errors = sum(t["errors"] for r in results.values() for t in r.values())
    ok = ratio >= 0.8 and ok_aio and errors == 0
    out = {
        "bench": "webhook",
        "levels": results,
        "ratio": ratio,
        "ratio_vs_empty_serve": vs_empty,
        "ratio_vs_aiohttp": vs_aio,
        "seconds_per_level": seconds,
        "replicas": opts.replicas,
        "await_enqueue": not opts.no_await,
        "ha_proxy": os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "0") == "1",
        "startup_s": round(startup_s, 1),
        "wall_s": round(time.monotonic() - t_start, 1),
        "errors": errors,
        "target": TARGET,
        "ok": ok,
    }
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
