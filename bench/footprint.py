"""Benchmark: the footprint of ``arbflow run`` on embedded defaults — memory and processes.

``arbflow run --source sim`` is started as a subprocess (its own ``redis-server`` and local
Ray under a temporary data dir, the Telegram sandbox of this process as its Bot API, so the
bot and the push side run too: the whole system). Once it printed its ``started`` line, its
Serve app answers ``/healthz`` (everything up) and it ran ``--settle`` seconds more, every
process under it is sampled a few times with psutil:

- ``workers``: Ray worker processes (actors, Serve's controller, proxy and replica, idle
  pooled workers) — what the defaults decide;
- ``rss_mb``: the resident memory of all of them together with the command itself,
  ``redis-server`` and Ray's own daemons (GCS, raylet, agents); ``pss_mb`` the same as
  proportional set size where the kernel gives it (shared pages counted once in all).

Targets (issue 14): 2,500 MB and ``workers`` ≤ 12 on 2 cores. The memory judged
(``memory_mb``) is the PSS where the kernel gives it (RSS counts the pages all these Python
processes share — the interpreter, Ray's libraries — once per process), else the RSS; both
are printed. ``ratio`` is 2,500 MB ÷ ``memory_mb`` (above 1: under the target).

    uv run python bench/footprint.py [--quick] [--settle S]

Last line: ``{"bench": "footprint", "rss_mb": ..., "pss_mb": ..., "workers": ..., "ratio": ...,
"target": "...", "ok": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = "whole `arbflow run` <= 2,500 MB (PSS, else RSS) and <= 12 Ray worker processes on 2 cores"
RSS_TARGET_MB = 2500.0
WORKERS_TARGET = 12


@dataclass
class Footprint:
    """One sample of the processes under a command."""

    rss_mb: float = 0.0
    pss_mb: float | None = None
    workers: int = 0
    idle: int = 0
    """Of the workers, idle pooled ones (Ray keeps up to one per CPU for later tasks)."""
    processes: int = 0
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per kind (``ray::DetectorActor``, ``raylet``, ``redis-server``, …): count and RSS MB."""


def _kind(cmdline: list[str], name: str) -> tuple[str, bool]:
    """``(kind, is a Ray worker)`` of a process from its command line."""
    head = cmdline[0] if cmdline else name
    if head.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent")):  # Ray's per-node agents
        return head.split()[0], False
    if head.startswith("ray::"):
        return head.split()[0].split(".")[0], True
    text = " ".join(cmdline)
    exe = Path(head).name
    if exe in ("raylet", "gcs_server", "redis-server"):  # the raylet's flags name default_worker.py
        return exe, False
    if "default_worker.py" in text:
        return "ray::IDLE", True
    daemons = {
        "gcs_server": "gcs_server",
        "raylet": "raylet",
        "redis-server": "redis-server",
        "log_monitor": "ray log monitor",
        "autoscaler/_private/monitor.py": "ray autoscaler monitor",
        "dashboard/dashboard.py": "ray dashboard head",
        "dashboard/agent.py": "ray::DashboardAgent",
        "runtime_env/agent": "ray::RuntimeEnvAgent",
    }
    for known, kind in daemons.items():
        if known in text:
            return kind, False
    if "serve.cli" in text:
        return "arbflow (driver)", False
    return Path(head).name or name, False


def sample(pid: int) -> Footprint:
    """The processes of ``pid`` and its descendants: Ray workers, RSS, PSS."""
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    out = Footprint()
    pss_total = 0.0
    pss_ok = True
    counts: Counter[str] = Counter()
    rss_by: Counter[str] = Counter()
    for proc in procs:
        try:
            cmdline = proc.cmdline()
            mem = proc.memory_info()
            kind, worker = _kind(cmdline, proc.name())
            try:
                pss_total += float(proc.memory_full_info().pss)
            except (psutil.AccessDenied, AttributeError):
                pss_ok = False
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        out.processes += 1
        out.workers += int(worker)
        out.idle += int(kind == "ray::IDLE")
        out.rss_mb += mem.rss / 1e6
        counts[kind] += 1
        rss_by[kind] += mem.rss / 1e6
    out.pss_mb = round(pss_total / 1e6, 1) if pss_ok else None
    out.rss_mb = round(out.rss_mb, 1)
    out.by_kind = {k: {"n": counts[k], "rss_mb": round(rss_by[k], 1)} for k in sorted(counts)}
    return out


def worker_names(pid: int) -> list[str]:
    """The kinds of the Ray worker processes under ``pid`` (one entry per process)."""
    import psutil

    names = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            kind, worker = _kind(proc.cmdline(), proc.name())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if worker:
            names.append(kind)
    return sorted(names)


def run_env(tmp: str, port: int, token: str, api_base: str) -> dict[str, str]:
    env = {
        **os.environ,
        "ARBFLOW_DATA_DIR": f"{tmp}/var",
        "ARBFLOW_LAKE__URL": f"{tmp}/lake",
        "ARBFLOW_REDIS__URL": "",
        "ARBFLOW_HTTP__PORT": str(port),
        "ARBFLOW_RAY__NAMESPACE": f"bench-footprint-{uuid.uuid4().hex[:6]}",
        "ARBFLOW_TELEGRAM__TOKEN": token,
        "ARBFLOW_TELEGRAM__API_BASE": api_base,
        "ARBFLOW_TELEGRAM__PUBLIC_URL": "",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    }
    for key in (
        "ARBFLOW_RAY__ADDRESS",
        "ARBFLOW_DISTRIBUTION__SHARDS",
        "ARBFLOW_OPPORTUNITIES__COORDINATOR_HOSTS",
    ):
        env.pop(key, None)
    return env


def wait_started(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        text = log.read_text(errors="replace")
        if any(ln.strip().startswith("started") for ln in text.splitlines()):
            return True
        time.sleep(0.25)
    return False


def wait_serving(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Until the Serve app answers ``/healthz``: with the bot polling, ``started`` comes as soon
    as the bot answers and the Serve app (controller, proxy, replica) may still be starting —
    sampled then, its replica was missing from the count (11 workers, 250 MB less)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(settle_s: float, samples: int, timeout_s: float) -> dict[str, Any]:
    from bench.startup import Sandbox
    from serve.runtime import free_port

    sandbox = Sandbox()
    try:
        with tempfile.TemporaryDirectory(prefix="arbflow-bench-footprint-") as tmp:
            port = free_port()
            env = run_env(tmp, port, sandbox.handle.token, sandbox.handle.base_url)
            log_path = Path(tmp) / "run.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "serve.cli", "run", "--source", "sim"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                try:
                    if not wait_started(proc, log_path, timeout_s) or not wait_serving(port, proc, timeout_s):
                        return {"error": "not started", "tail": log_path.read_text(errors="replace")[-2000:]}
                    time.sleep(settle_s)
                    taken = []
                    for _ in range(samples):
                        taken.append(sample(proc.pid))
                        time.sleep(1.0)
                finally:
                    stop(proc)
            started = next(
                (ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if "started" in ln),
                "",
            )
    finally:
        sandbox.stop()
    worst = max(taken, key=lambda f: f.rss_mb)
    return {
        "rss_mb": worst.rss_mb,
        "pss_mb": max((f.pss_mb for f in taken if f.pss_mb is not None), default=None),
        "workers": max(f.workers for f in taken),
        "idle_workers": max(f.idle for f in taken),
        "processes": max(f.processes for f in taken),
        "by_kind": worst.by_kind,
        "started": started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="settle 5 s, 3 samples")
    parser.add_argument("--settle", type=float, default=None, help="seconds after the start before sampling")
    args = parser.parse_args()
    settle = args.settle if args.settle is not None else (5.0 if args.quick else 30.0)
    got = measure(settle, 3 if args.quick else 10, timeout_s=90 if args.quick else 180)
    if "error" in got:
        print(f"arbflow run did not start: {got['tail']}")
        result: dict[str, Any] = {"bench": "footprint", "ratio": None, "target": TARGET, "ok": False}
        print(json.dumps(result))
        return 1
    print(f"arbflow run on embedded defaults, {os.cpu_count()} CPUs ({got['started']})")
    print(f"{'process':<40} {'n':>3} {'RSS MB':>8}")
    for kind, row in got["by_kind"].items():
        print(f"{kind:<40} {int(row['n']):>3} {row['rss_mb']:>8.0f}")
    print(
        f"total: {got['processes']} processes, {got['workers']} Ray workers "
        f"({got['idle_workers']} of them idle in Ray's pool), "
        f"RSS {got['rss_mb']:.0f} MB, PSS {got['pss_mb']} MB"
    )
    # RSS counts the pages the processes share (Python, Ray's libraries) once per process;
    # PSS splits them, so the sum is what the system holds: judged where the kernel gives it.
    memory = got["pss_mb"] if got["pss_mb"] is not None else got["rss_mb"]
    result = {
        "bench": "footprint",
        "rss_mb": got["rss_mb"],
        "pss_mb": got["pss_mb"],
        "workers": got["workers"],
        "idle_workers": got["idle_workers"],
        "processes": got["processes"],
        "ratio": round(RSS_TARGET_MB / memory, 3) if memory else None,
        "target": TARGET,
        "memory_mb": memory,
        "ok": memory <= RSS_TARGET_MB and got["workers"] <= WORKERS_TARGET,
    }
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
