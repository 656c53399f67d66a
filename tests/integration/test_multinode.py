"""Two Ray nodes on one machine (``ray.cluster_utils.Cluster``): the actors spread across
them and the pipeline runs end to end (sim market data → lake, opportunities detected,
the push side up).

The head node carries a ``head`` custom resource, the worker node an ``ingest`` one. The
market-data coordinators are created ahead of :class:`serve.orchestrator.MarketPipeline`
with ``resources={"ingest": 0.01}`` and the queue shards with ``{"head": 0.01}``; the
orchestrator finds them by name (``get_if_exists``), so placement is decided by whoever
creates a named actor first (docs/operations.md, "Placing actors").

The session's other tests share one local Ray in the pytest process, and a process can
be connected to one Ray only: the cluster runs in a child process (this file, run as a
script), which prints one JSON line that the test checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
RESULT = "MULTINODE_RESULT "


def test_actors_spread_over_two_nodes_and_the_pipeline_runs_end_to_end(
    base_settings: Settings, isolated_redis_url: str
) -> None:
    settings = base_settings.model_copy(
        update={
            "redis": base_settings.redis.model_copy(update={"url": isolated_redis_url}),
            "ray": base_settings.ray.model_copy(update={"namespace": "arbflow-multinode", "num_cpus": None}),
            # a cluster's layout: a process per exchange, pinned to the ingest node below
            "market": base_settings.market.model_copy(update={"source": "sim", "coordinator_hosts": 0}),
            "distribution": base_settings.distribution.model_copy(update={"shards": 2}),
            # no users: nothing is pushed, so no Bot API server is needed
            "telegram": base_settings.telegram.model_copy(
                update={"token": "123456:multinode", "api_base": "http://127.0.0.1:9"}
            ),
        }
    )
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, __file__, settings.model_dump_json()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,  # ≈ 25 s on an idle 2-core machine
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = json.loads(lines[-1][len(RESULT) :])

    head, worker = out["head"], out["worker"]
    assert head != worker
    assert out["alive_nodes"] == 2
    nodes = out["placement"]  # actor name → node id
    coords = {n: node for n, node in nodes.items() if n.startswith("md:")}
    shards = {n: node for n, node in nodes.items() if n.startswith("uq:")}
    assert set(coords) == {"md:binance", "md:bybit", "md:okx"}
    assert set(coords.values()) == {worker}  # pinned by the `ingest` resource
    assert set(shards) == {"uq:000", "uq:001"} and set(shards.values()) == {head}
    assert {"sink:lake", "detect:engine", "dist:engine", "ratelimit:global"} <= set(nodes)
    assert any(n.startswith("coord:") for n in nodes)  # the detector's pair coordinators
    assert set(nodes.values()) == {head, worker}

    # end to end: rows handed to the sink are in the lake; opportunities were detected
    assert out["rows"]["quotes"] > 0
    assert out["lake"]["quotes"] == out["rows"]["quotes"]
    assert out["lake"]["order_books"] > 0
    assert out["opened"] > 0
    assert out["lake"]["opportunities"] > 0


# -- the child process ---------------------------------------------------------------------


def _run(settings: Settings) -> dict[str, Any]:
    import ray
    from ray._private import state as ray_state
    from ray.cluster_utils import Cluster

    from actors.detector import get_detector
    from actors.market_data import MarketDataCoordinatorActor, coordinator_name
    from actors.queues import QueueShardActor, shard_name
    from actors.sink import get_sink
    from pipeline.lake import Lake
    from pipeline.query import run_query
    from serve.orchestrator import Distribution, MarketPipeline
    from serve.runtime import ray_init

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"head": 1}, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=2, resources={"ingest": 1})
        cluster.wait_for_nodes()
        settings = settings.model_copy(
            update={"ray": settings.ray.model_copy(update={"address": cluster.address})}
        )
        ray_init(settings)
        alive = [n for n in ray.nodes() if n["Alive"]]
        head = next(n["NodeID"] for n in alive if "head" in n["Resources"])
        worker = next(n["NodeID"] for n in alive if "ingest" in n["Resources"])
        ns = settings.ray.namespace

        # Placement: the first creator of a named actor decides where it runs. (Hold the
        # handles: a non-detached actor goes with its creator's last handle.)
        pinned = []
        for i in range(settings.distribution.shards):
            pinned.append(
                QueueShardActor.options(  # type: ignore[attr-defined]
                    name=shard_name(i), namespace=ns, get_if_exists=True, resources={"head": 0.01}
                ).remote(settings, i)
            )
        dist = Distribution(settings).start()
        detector = get_detector(settings)  # the coordinators subscribe to it when they start
        ray.get(detector.ready.remote())
        pinned += [get_sink(settings), detector]
        for ex in settings.market.exchanges:
            pinned.append(
                MarketDataCoordinatorActor.options(  # type: ignore[attr-defined]
                    name=coordinator_name(ex), namespace=ns, get_if_exists=True, resources={"ingest": 0.01}
                ).remote(settings, ex, "sim", True)
            )
        pipeline = MarketPipeline(settings, "sim").start()

        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            time.sleep(1.0)
            live = pipeline.stats()
            if live.rows.get("order_books") and live.detector.get("events", {}).get("opened"):
                break
        placement = {
            a["Name"]: a["Address"]["NodeID"]
            for a in ray_state.actors().values()
            if a["Name"] and a["State"] == "ALIVE"
        }
        stats = pipeline.stop(before_sink=dist.stop)
        lake = Lake.from_settings(settings.lake)
        counts = {
            ds: int(run_query(lake, f"SELECT count(*) AS n FROM {ds}").column("n")[0].as_py())
            for ds in ("quotes", "order_books", "opportunities")
        }
        return {
            "head": head,
            "worker": worker,
            "alive_nodes": len(alive),
            "placement": placement,
            "rows": stats.rows,
            "opened": stats.detector.get("events", {}).get("opened", 0),
            "lake": counts,
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    result = _run(Settings.model_validate_json(sys.argv[1]))
    print(RESULT + json.dumps(result), flush=True)
