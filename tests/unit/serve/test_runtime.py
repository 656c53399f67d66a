from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import DependencyMissing
from serve.runtime import REDIS_INSTALL_HINT, find_redis_server


def test_missing_redis_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(Path, "exists", lambda self: False)
    with pytest.raises(DependencyMissing, match="apt-get install -y redis-server"):
        find_redis_server()


def test_cli_reports_missing_redis_in_one_line(tmp_path: Path) -> None:
    """No traceback: one line saying how to install it, and a non-zero exit."""
    script = (
        "import serve.runtime as r, sys\n"
        "r.find_redis_server = lambda: (_ for _ in ()).throw(r.DependencyMissing(r.REDIS_INSTALL_HINT))\n"
        "sys.argv = ['arbflow', 'run', '--source', 'sim', '--duration', '1']\n"
        "from serve.cli import main\n"
        "main()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "ARBFLOW_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert REDIS_INSTALL_HINT.split(":")[0] in lines[0]
