"""``arbflow …`` as a subprocess with a data dir, lake, port and Ray namespace of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from serve.runtime import free_port

ROOT = Path(__file__).resolve().parents[2]
# the session's one demo run (tests/integration/conftest.py: demo_run)
DEMO_DURATION_S = 25
DEMO_USERS = 20


def cli_env(base: Path, *, redis_url: str, label: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI run under ``base`` (``var/``, ``lake/``): a free HTTP port, a
    Ray namespace ``label-<random>``, its own local Ray; ``redis_url`` "" means a private
    redis-server under the data dir. ``extra``: more ``ARBFLOW_…`` variables."""
    env = {
        **os.environ,
        "ARBFLOW_REDIS__URL": redis_url,
        "ARBFLOW_DATA_DIR": str(base / "var"),
        "ARBFLOW_LAKE__URL": str(base / "lake"),
        "ARBFLOW_HTTP__PORT": str(free_port()),
        "ARBFLOW_RAY__NAMESPACE": f"{label}-{uuid.uuid4().hex[:8]}",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        **extra,
    }
    env.pop("ARBFLOW_RAY__ADDRESS", None)  # its own local Ray, never the suite's
    return env


def run_cli(args: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``python -m serve.cli <args>`` from the repo root; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def run_demo(
    base: Path, *, redis_url: str, duration_s: int, users: int, label: str, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """``arbflow demo --no-browser`` under ``base``."""
    command = ["demo", "--duration", str(duration_s), "--users", str(users), "--no-browser"]
    return run_cli(command, cli_env(base, redis_url=redis_url, label=label), timeout_s)


def start_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m serve.cli <args>`` in the background, stdout and stderr into ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "serve.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
