"""``ray up cluster.local.yaml`` launches arbflow with Ray's own cluster launcher (its local
provider, over SSH to this machine), ``arbflow run`` goes in as a Ray Job, the bot answers
``/start`` through the webhook, a push arrives, rows reach the lake; ``ray down`` ends it.

The node is this machine seen through an sshd the test starts itself: on a free port (the
launcher has no SSH port option, so ``auth.ssh_proxy_command`` pipes to it), with a key,
a host key and an ``authorized_keys`` of the test's own, in a PID namespace of its own
(``unshare``) so that the launcher's ``ray stop`` (which stops every Ray process it can
see) meets only the node's Ray, never the test session's. Logins get a home of their own
(``SetEnv HOME``, kept between runs: :func:`node_home`) for the node's ``~/arbflow``,
``~/arbflow-venv``, ``~/.local/bin`` and ``~/.bashrc``; Ray's session files go to the
test's temp dir (``RAY_TMPDIR``). The config is ``serve.cluster_config.render("local")``
(what ``cluster.local.yaml`` is) with free ports, that home and the code from ``make
cluster-source``: the setup and start commands ``cluster.yaml`` runs on AWS. Not shown
here: a worker node (``worker_ips`` stays empty) and a public HTTPS URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from cryptography.fernet import Fernet

from core.accounts import Tier, User
from core.settings import Settings
from pipeline.lake import Lake
from pipeline.query import run_query
from serve.cluster_config import render
from serve.runtime import LOCK_FILE, free_port
from state.users import RedisUserStore
from tests.support.sandbox_thread import SandboxThread

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
USER = 7311
pytestmark = pytest.mark.timeout(900)


@dataclass
class Node:
    """This machine as a launcher node: an sshd on ``port`` that logs ``root`` in to ``home``."""

    base: Path
    home: Path
    port: int
    key: Path

    @property
    def data_dir(self) -> Path:
        return self.home / "arbflow-data"  # the data dir cluster/nodes.yaml gives arbflow on a node


def _missing_tools() -> list[str]:
    tools = {"sshd": SSHD, "ssh": "ssh", "ssh-keygen": "ssh-keygen", "rsync": "rsync", "unshare": "unshare"}
    return [name for name, cmd in tools.items() if not shutil.which(cmd)]


def _uv() -> str | None:
    return (
        os.environ.get("UV")
        or shutil.which("uv")
        or next(
            (str(p) for p in (REPO / ".tools/bin/uv", Path("/work/main/.tools/bin/uv")) if p.exists()), None
        )
    )


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited ({proc.returncode}):\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"sshd did not listen on {port}:\n{log.read_text()}")


NODE_CACHE_LOCK = ".in-use"


@contextlib.contextmanager
def node_home() -> Iterator[Path]:
    """The node's home: kept between runs under the system temp dir, keyed by uv.lock and
    pyproject.toml, so that ``make venv`` on the node finds its venv built (an image with
    the venv baked in); the first run builds it (≈ 1 min). One run at a time uses it (a
    lock); a concurrent run gets a fresh one. What a launch leaves (the settings in
    ``~/.bashrc``, ``~/.local/bin``, the data dir) is cleared first."""
    key = hashlib.sha256(b"".join((REPO / n).read_bytes() for n in ("uv.lock", "pyproject.toml")))
    cached = Path(tempfile.gettempdir()) / f"arbflow-node-{key.hexdigest()[:12]}"
    cached.mkdir(exist_ok=True)
    with (cached / NODE_CACHE_LOCK).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fresh = Path(tempfile.mkdtemp(prefix="arbflow-node-"))
            try:
                yield fresh
            finally:
                shutil.rmtree(fresh, ignore_errors=True)
            return
        for stale in Path(tempfile.gettempdir()).glob("arbflow-node-*"):
            if stale != cached and (stale / NODE_CACHE_LOCK).exists():
                _remove_if_unused(stale)
        for left in (".bashrc", ".bashrc.new", ".profile", "arbflow.env", ".local", ".ray", "arbflow-data"):
            path = cached / left
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        yield cached


def _remove_if_unused(home: Path) -> None:
    with (home / NODE_CACHE_LOCK).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def node() -> Iterator[Node]:
    missing = _missing_tools()
    if missing:
        pytest.skip(f"`make` installs them: {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("sshd and the PID namespace need root (make test runs as root)")
    uv = _uv()
    if uv is None:
        pytest.skip("no uv to build the node's venv with")
    namespace = ["unshare", "--pid", "--fork", "--mount-proc"]
    probe = subprocess.run([*namespace, "true"], capture_output=True, text=True)
    if probe.returncode != 0:  # a container without CAP_SYS_ADMIN
        pytest.skip(f"no PID namespace here (the launcher's `ray stop` would stop every Ray): {probe.stderr}")
    uv_cache = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    # short: Ray's unix sockets live under RAY_TMPDIR (a path of at most 107 bytes)
    base = Path(tempfile.mkdtemp(prefix="arbc-", dir="/tmp"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        home = stack.enter_context(node_home())
        for name in ("host_key", "id"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True
            )
        shutil.copy(base / "id.pub", base / "authorized_keys")
        # The node's "image": a login shell puts ~/.local/bin on the PATH (as Ubuntu's
        # ~/.profile does), finds uv and this machine's package cache (offline: every package
        # is in it), Python as the test's venv has it, and keeps Ray's session files in the
        # node's own temp dir.
        python = Path(sys.base_prefix) / "bin" / "python3"
        (home / ".profile").write_text(
            'if [ -d "$HOME/.local/bin" ]; then PATH="$HOME/.local/bin:$PATH"; fi\n'
            f'export PATH="$PATH:{Path(uv).parent}"\n'
            f"export UV_CACHE_DIR={uv_cache} UV_OFFLINE=1 UV_PYTHON={python}\n"
            "export UV_PYTHON_DOWNLOADS=never RAY_ENABLE_UV_RUN_RUNTIME_ENV=0 RAY_USAGE_STATS_ENABLED=0\n"
            f"export RAY_TMPDIR={base / 'rt'} RAY_AUTH_MODE=disabled\n"
        )
        (home / ".bashrc").write_text("")
        (base / "rt").mkdir()
        port = free_port()
        config = base / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {base / 'host_key'}\n"
            f"AuthorizedKeysFile {base / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PidFile none\nMaxStartups 50\nSetEnv HOME={home}\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        log = base / "sshd.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    "unshare",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--kill-child",
                    SSHD,
                    "-D",
                    "-e",
                    "-f",
                    str(config),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        stack.callback(_end_namespace, proc)
        _wait_port(port, proc, log)
        yield Node(base=base, home=home, port=port, key=base / "id")


def _end_namespace(proc: subprocess.Popen[bytes]) -> None:
    """Stop sshd, the namespace's init: the kernel then kills every process left in it."""
    import psutil

    try:
        for child in psutil.Process(proc.pid).children():
            child.send_signal(signal.SIGKILL)
    except psutil.Error:
        pass
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _launcher(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RAY), *cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s
    )


def _wait(what: str, check: Callable[[], Any], timeout_s: float, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n{logs()[-6000:]}")


def test_ray_up_runs_arbflow_as_a_ray_job_and_ray_down_ends_it(
    node: Node, sandbox: SandboxThread, isolated_redis_url: str, tmp_path: Path
) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    t0 = time.monotonic()
    ports = {
        name: free_port()
        for name in ("gcs_port", "dashboard_port", "metrics_port", "client_port", "agent_port")
    }
    http_port = free_port()
    base_url = f"http://127.0.0.1:{http_port}"
    env_file = tmp_path / ".env"  # the operator's git-ignored secrets
    env_file.write_text(
        f"ARBFLOW_TELEGRAM__TOKEN={sandbox.handle.token}\n"
        f"ARBFLOW_TELEGRAM__API_BASE={sandbox.handle.base_url}\n"
        f"ARBFLOW_TELEGRAM__PUBLIC_URL={base_url}\n"
        f"ARBFLOW_SECRET_KEY={Fernet.generate_key().decode()}\n"
        f"ARBFLOW_REDIS__URL={isolated_redis_url}\n"
        f"ARBFLOW_HTTP__PORT={http_port}\n"
        "ARBFLOW_LAKE__FLUSH_SECONDS=1\n"
        f"ARBFLOW_RAY__NAMESPACE=cluster-{uuid.uuid4().hex[:8]}\n"
    )
    source = tmp_path / "source"  # what `make cluster-source` makes, here out of the checkout
    made = subprocess.run(
        ["make", "-s", "-C", str(REPO), "cluster-source", f"CLUSTER_SOURCE={source}"],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    text = render("local", home=node.home, code_source=source, env_file=env_file, **ports)
    config = yaml.safe_load(text)
    committed = yaml.safe_load((REPO / "cluster.local.yaml").read_text())
    assert config["setup_commands"] == committed["setup_commands"]  # what cluster.local.yaml runs
    config["cluster_name"] = f"arbflow-test-{uuid.uuid4().hex[:6]}"
    config["auth"] = {
        "ssh_user": "root",
        "ssh_private_key": str(node.key),
        "ssh_proxy_command": f"{sys.executable} {REPO / 'tests/support/tcp_pipe.py'} 127.0.0.1 {node.port}",
    }
    config_path = tmp_path / "cluster.local.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    launcher_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "ARBFLOW_", "VIRTUAL_ENV"))
    }
    launcher_env["RAY_TMPDIR"] = str(node.base / "launcher")  # the launcher's state files
    (node.base / "launcher").mkdir()
    sandbox.call(_add_user(sandbox))

    up = _launcher(["up", "-y", "--no-config-cache", str(config_path)], launcher_env, tmp_path, 300)
    t_up = time.monotonic() - t0
    try:
        assert up.returncode == 0, up.stdout[-6000:] + up.stderr[-3000:]
        assert (node.home / "arbflow-venv" / "bin" / "arbflow").exists()
        assert not (node.home / "arbflow" / ".env").exists()  # git-ignored files stay off the node
        dashboard = f"http://127.0.0.1:{ports['dashboard_port']}"
        submission = f"arbflow-run-{uuid.uuid4().hex[:6]}"
        submit = _launcher(
            [
                "job",
                "submit",
                "--address",
                dashboard,
                "--submission-id",
                submission,
                "--no-wait",
                "--",
                "arbflow",
                "run",
                "--source",
                "sim",
            ],
            {**launcher_env, "RAY_AUTH_MODE": "disabled"},
            tmp_path,
            60,
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
        jobs = JobSubmissionClient(dashboard)

        def logs() -> str:
            return str(jobs.get_job_logs(submission))

        def lock() -> dict[str, Any] | None:
            status = jobs.get_job_status(submission)
            if status.is_terminal():
                pytest.fail(f"the job ended ({status}):\n{logs()[-6000:]}")
            try:
                return dict(json.loads((node.data_dir / LOCK_FILE).read_text()))
            except (OSError, ValueError):
                return None

        info = _wait("the system lock", lock, 120, logs)
        assert info["command"] == "run" and info["redis_url"] == isolated_redis_url
        asyncio.run(enterprise_user(isolated_redis_url, USER))

        def ready() -> bool:
            lock()  # fails on a dead job
            try:
                return httpx.get(f"{base_url}/readyz", timeout=3).status_code == 200
            except httpx.HTTPError:
                return False

        _wait("/readyz 200", ready, 150, logs)
        hook = httpx.get(f"{sandbox.handle.base_url}/sandbox/webhook").json()["webhook"]["url"]
        assert hook == f"{base_url}/telegram/webhook"
        httpx.post(f"{sandbox.handle.base_url}/sandbox/send", json={"user_id": USER, "text": "/start"})
        replies = _wait("the reply to /start", lambda: sandbox.texts(USER), 60, logs)
        _wait("a push", lambda: len(sandbox.texts(USER)) > len(replies) + 1, 240, logs)

        jobs.stop_job(submission)  # SIGTERM: the ordered stop, waited for (RAY_JOB_STOP_WAIT_TIME_S)
        _wait("the job to stop", lambda: jobs.get_job_status(submission).is_terminal(), 120, logs)
        assert jobs.get_job_status(submission) == JobStatus.STOPPED
        out = logs()
        assert "stopped in" in out and "flush the lake" in out, out[-6000:]
        assert "sent" in {r["status"] for r in deliveries(node.data_dir / "lake", USER)}
        assert any((node.data_dir / "lake" / "market-data" / "quotes").rglob("*.parquet"))
    finally:
        down = _launcher(["down", "-y", str(config_path)], launcher_env, tmp_path, 120)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert not _node_ray_running(node), "ray down left the node's Ray running"
    print(f"ray up {t_up:.0f} s, whole launch {time.monotonic() - t0:.0f} s")


def _node_ray_running(node: Node) -> bool:
    """Any process whose command line names the node's Ray temp dir (gcs_server, raylet, …)."""
    import psutil

    marker = str(node.base / "rt")
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                return True
        except psutil.Error:
            continue
    return False


async def enterprise_user(redis_url: str, uid: int) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await RedisUserStore(client).create(User.new(uid, datetime.now(UTC), tier=Tier.ENTERPRISE))
    await client.aclose()


def deliveries(lake_dir: Path, chat: int) -> list[dict[str, Any]]:
    lake = Lake.from_settings(Settings(lake={"url": str(lake_dir)}).lake)
    try:
        return list(run_query(lake, f"SELECT status FROM deliveries WHERE chat_id = {chat}").to_pylist())
    except Exception:
        return []


async def _add_user(sandbox: SandboxThread) -> None:
    sandbox.handle.sandbox.add_user(USER, "Ada", username="ada")
