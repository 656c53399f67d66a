"""``arbflow demo`` as a subprocess with a data dir, lake, port and Ray namespace of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from serve.runtime import free_port

ROOT = Path(__file__).resolve().parents[2]


def run_demo(
    base: Path, *, redis_url: str, duration_s: int, users: int, label: str, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Run ``arbflow demo --no-browser`` under ``base`` (``var/``, ``lake/``); ``redis_url`` ""
    means a private redis-server under the data dir, stopped with the demo."""
    env = {
        **os.environ,
        "ARBFLOW_REDIS__URL": redis_url,
        "ARBFLOW_DATA_DIR": str(base / "var"),
        "ARBFLOW_LAKE__URL": str(base / "lake"),
        "ARBFLOW_HTTP__PORT": str(free_port()),
        "ARBFLOW_RAY__NAMESPACE": f"{label}-{uuid.uuid4().hex[:8]}",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    }
    env.pop("ARBFLOW_RAY__ADDRESS", None)  # its own local Ray, never the suite's
    command = ["demo", "--duration", str(duration_s), "--users", str(users), "--no-browser"]
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
