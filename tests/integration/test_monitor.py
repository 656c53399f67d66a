"""The alert monitor on a real Ray, Redis and the Telegram sandbox, watching a sim pipeline.

A coordinator is stopped: its exchange goes stale, one incident opens and the SuperAdmin
gets exactly one message however many polls follow; the coordinator is restarted: one
"resolved" message. The metrics the monitor exported are read back from Ray's metrics
agent (the node's Prometheus endpoint), as Prometheus would scrape them.
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import ray

from actors.monitor import MONITOR_NAME, get_monitor
from core.alerts import AlertRules
from core.settings import Settings
from serve.orchestrator import MarketPipeline
from tests.support.sandbox_thread import SandboxThread

ADMIN = 424242


def okx(sandbox: SandboxThread) -> list[str]:
    """The SuperAdmin's messages about okx (the exchange this test starves)."""
    return [t for t in sandbox.texts(ADMIN) if "okx" in t]


def wait_for(cond: Callable[[], Any], within: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not met within {within:.0f} s")


def scrape() -> str:
    """Every node's Prometheus endpoint (Ray's metrics agent), concatenated."""
    bodies = []
    for node in ray.nodes():
        port = node.get("MetricsExportPort")
        if node.get("Alive") and port:
            url = f"http://{node['NodeManagerAddress']}:{port}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    bodies.append(resp.read().decode())
            except OSError:
                continue
    return "\n".join(bodies)


def series(body: str, metric: str, **labels: str) -> list[float]:
    """Values of ``metric`` whose labels include ``labels`` (one per reporting worker)."""
    out = []
    for line in body.splitlines():
        m = re.match(rf"^{re.escape(metric)}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            out.append(float(m.group(2)))
    return out


def test_a_stale_exchange_alerts_the_superadmin_once_and_resolves_once(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread
) -> None:
    ns = f"mon-{uuid.uuid4().hex[:8]}"
    settings = base_settings.model_copy(
        update={
            "ray": base_settings.ray.model_copy(update={"namespace": ns}),
            "superadmin_ids": [ADMIN],
            "telegram": base_settings.telegram.model_copy(
                update={"token": sandbox.handle.token, "api_base": sandbox.handle.base_url}
            ),
            "market": base_settings.market.model_copy(
                update={"source": "sim", "exchanges": ["binance", "okx"], "sim_rate": 200}
            ),
        }
    )
    # stale after 4 s (a loaded 2-core machine can hold a healthy feed up for a second or two)
    rules = AlertRules(stale_after_s=4.0, max_lag_s=60.0, clear_after_s=1.0, window_s=30.0)
    pipeline = MarketPipeline(settings, "sim", detect=False).start()
    monitor = get_monitor(settings, interval_s=0.5, rules=rules, key_prefix=f"{ns}:")
    try:
        status = wait_for(lambda: (s := ray.get(monitor.status.remote()))["polls"] >= 4 and s, what="polls")
        assert status["open"] == {}
        assert okx(sandbox) == []

        ray.get(pipeline.coordinators["okx"].stop.remote())
        wait_for(lambda: okx(sandbox), 40, "the alert")
        polls = ray.get(monitor.status.remote())["polls"]
        wait_for(lambda: ray.get(monitor.status.remote())["polls"] >= polls + 6, what="more polls")
        [opened] = okx(sandbox)  # once per incident, not per poll
        assert "Alert: stale market data" in opened and "okx" in opened
        status = ray.get(monitor.status.remote())
        assert "stale_data:okx" in status["open"]
        age = next(
            r["value"] for r in status["readings"] if r["kind"] == "stale_data" and r["subject"] == "okx"
        )
        assert age > rules.stale_after_s

        # What Prometheus would scrape (Ray's agent exports every few seconds).
        def exported() -> bool:
            body = scrape()
            return bool(
                [
                    v
                    for v in series(body, "ray_arbflow_market_data_age_seconds", exchange="okx")
                    if v > rules.stale_after_s
                ]
                and 1.0 in series(body, "ray_arbflow_alert_incidents_open", kind="stale_data")
                and series(body, "ray_arbflow_actor_up", actor="md:binance") == [1.0]
            )

        wait_for(exported, 40, "the metrics on the Prometheus endpoint")
        metrics = ray.get(monitor.metrics.remote())
        assert metrics["arbflow_market_data_age_seconds"]["exchange=okx"] > rules.stale_after_s
        assert metrics["arbflow_market_data_age_seconds"]["exchange=binance"] < rules.stale_after_s
        assert metrics["arbflow_actor_up"]["actor=uq:000"] == 0.0  # no push side: tolerated

        # A monitor restarted by Ray resumes the open incident from Redis: no second alert.
        before = ray.get(monitor.status.remote())["polls"]
        ray.kill(monitor, no_restart=False)
        wait_for(lambda: 0 < _polls(settings) < before, 60, "the restarted monitor")
        wait_for(lambda: _polls(settings) >= 4, 60, "polls of the restarted monitor")
        assert okx(sandbox) == [opened]
        assert "stale_data:okx" in ray.get(monitor.status.remote())["open"]

        # Ray restarts the coordinator (``md:okx``, or the ``md:host:NN`` it shares on a small
        # host); its pump starts again on the next stats call.
        coordinator = pipeline.coordinators["okx"]
        ray.kill(getattr(coordinator, "host", coordinator), no_restart=False)
        texts = wait_for(lambda: len(t := okx(sandbox)) >= 2 and t, 60, "the resolve message")
        time.sleep(2.0)
        assert okx(sandbox) == texts and len(texts) == 2
        assert "Resolved: stale market data" in texts[1] and "okx" in texts[1]
        assert "stale_data:okx" not in ray.get(monitor.status.remote())["open"]
    finally:
        with_handle = _monitor(settings)
        if with_handle is not None:
            ray.get(with_handle.stop.remote())
            ray.kill(with_handle)
        pipeline.stop()


def _monitor(settings: Settings) -> Any:
    try:
        return ray.get_actor(MONITOR_NAME, namespace=settings.ray.namespace)
    except ValueError:
        return None


def _polls(settings: Settings) -> int:
    handle = _monitor(settings)
    try:
        return int(ray.get(handle.status.remote(), timeout=5)["polls"]) if handle else 0
    except (
        ray.exceptions.RayActorError,
        ray.exceptions.ActorUnavailableError,
        ray.exceptions.GetTimeoutError,
    ):
        return 0


def test_the_monitor_sweeps_expired_sessions_into_expired_events(
    ray_session: None, base_settings: Settings, isolated_redis_url: str
) -> None:
    import asyncio
    from datetime import UTC, datetime, timedelta

    import redis.asyncio as aioredis

    from actors.sink import get_sink
    from pipeline.lake import Lake
    from pipeline.query import run_query
    from state.sessions import RedisSessionStore

    ns = f"sweep-{uuid.uuid4().hex[:8]}"
    settings = base_settings.model_copy(
        update={
            "ray": base_settings.ray.model_copy(update={"namespace": ns}),
            "redis": base_settings.redis.model_copy(update={"url": isolated_redis_url}),
        }
    )
    now = datetime.now(UTC)

    async def sessions(action: str) -> int:
        store = RedisSessionStore(aioredis.Redis.from_url(isolated_redis_url))
        try:
            if action == "seed":
                await store.start(501, 501, now - timedelta(days=8))  # expired a day ago
                await store.start(502, 502, now)  # active
                return 2
            return await store.count_active(datetime.now(UTC))
        finally:
            await store.client.aclose()

    asyncio.run(sessions("seed"))
    sink = get_sink(settings)
    monitor = get_monitor(settings, interval_s=0.5, key_prefix=f"{ns}:")
    try:
        # the loop sweeps at once, then once a minute; a direct sweep finds nothing left
        wait_for(lambda: ray.get(monitor.status.remote())["sessions_swept"] == 1, what="sweep")
        assert ray.get(monitor.sweep_sessions.remote()) == 0
        assert asyncio.run(sessions("count")) == 1
    finally:
        ray.get(monitor.stop.remote())
        ray.kill(monitor)
    ray.get(sink.flush.remote())
    rows = run_query(
        Lake.from_settings(settings.lake), "SELECT user_id, event FROM session_events"
    ).to_pylist()
    assert rows == [{"user_id": 501, "event": "expired"}]
    ray.kill(sink)
