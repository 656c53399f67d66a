"""Embedded runtime: a private redis-server and a local (or joined) Ray.

``arbflow demo`` and ``arbflow run`` work on one machine with no configuration:
when ``ARBFLOW_REDIS__URL`` is empty a private ``redis-server`` is spawned with AOF
on under ``ARBFLOW_DATA_DIR/redis`` and stopped cleanly with the process; when
``ARBFLOW_RAY__ADDRESS`` is empty a local Ray starts with its dashboard off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import DependencyMissing, StoreUnavailable
from core.settings import Settings

REDIS_INSTALL_HINT = (
    "redis-server is not installed: run `make demo` (it installs it), "
    "or `sudo apt-get install -y redis-server`, or set ARBFLOW_REDIS__URL to a running Redis"
)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    path = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if Path(p).exists()), None
    )
    if not path:
        raise DependencyMissing(REDIS_INSTALL_HINT)
    return path


class EmbeddedRedis:
    """A private ``redis-server`` on loopback, AOF on (``appendfsync everysec``)."""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        binary = find_redis_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode(errors="replace")
                log = self.data_dir / "redis.log"
                tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                raise StoreUnavailable(f"redis-server exited at start: {err.strip() or tail.strip()}")
            if self._ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise StoreUnavailable(f"redis-server did not answer on {self.url} within {timeout_s:.0f} s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: redis-server flushes the AOF and exits."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL, for fault tests: no shutdown flush beyond what AOF already holds."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ray_init(settings: Settings, **extra: Any) -> None:
    """Join ``settings.ray.address`` or start a local Ray (dashboard off unless asked)."""
    import ray

    # Under `uv run` Ray would package the working dir and rebuild the venv in every
    # worker; workers already share our venv. Ray reads the flag at import: set both.
    if os.environ.get("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0").lower() in ("0", "false", ""):
        from ray._private import ray_constants

        os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
        ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "namespace": settings.ray.namespace,
        "log_to_driver": extra.pop("log_to_driver", False),
        "logging_level": extra.pop("logging_level", logging.ERROR),
    }
    if settings.ray.address:
        kwargs["address"] = settings.ray.address
    else:  # always our own: never attach to some other local cluster that happens to run
        kwargs["address"] = "local"
        kwargs["include_dashboard"] = settings.ray.include_dashboard
        if settings.ray.num_cpus:
            kwargs["num_cpus"] = settings.ray.num_cpus
    kwargs.update(extra)
    ray.init(**kwargs)


@contextlib.contextmanager
def embedded(settings: Settings, *, start_ray: bool = True) -> Iterator[Settings]:
    """Bring up what the settings leave to us; yield settings with the real Redis URL."""
    redis: EmbeddedRedis | None = None
    if not settings.redis.url:
        redis = EmbeddedRedis(settings.data_dir / "redis").start()
        settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": redis.url})})
    try:
        if start_ray:
            ray_init(settings)
        yield settings
    finally:
        if start_ray:
            import ray

            if ray.is_initialized() and not settings.ray.address:
                ray.shutdown()
        if redis is not None:
            redis.stop()
