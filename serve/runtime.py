"""Embedded runtime: a private redis-server and a local (or joined) Ray.

``arbflow demo`` and ``arbflow run`` work on one machine with no configuration:
when ``ARBFLOW_REDIS__URL`` is empty a private ``redis-server`` is spawned with AOF
on under ``ARBFLOW_DATA_DIR/redis`` and stopped cleanly with the process; when
``ARBFLOW_RAY__ADDRESS`` is empty a local Ray starts with its dashboard off.

One system per data dir: the process that brings the system up holds
``<data_dir>/system.lock`` (JSON: its pid, command, Redis URL, Ray address, HTTP URL).
A second ``arbflow run`` / ``demo`` on the same data dir refuses; ``arbflow serve``
attaches to the owner's Redis and Ray (or refuses when the owner serves HTTP itself);
a lock left by a dead process is taken over. So two processes never start two
``redis-server`` on one data dir (:class:`SystemLock`, :func:`embedded`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.errors import ConfigError, DependencyMissing, StoreUnavailable
from core.settings import Settings

log = logging.getLogger(__name__)

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


LOCK_FILE = "system.lock"
Role = Literal["owner", "attach"]


class DataDirInUse(ConfigError):
    """Another live process runs the system on this data dir."""


def log_level(settings: Settings) -> int:
    """``ARBFLOW_LOG_LEVEL`` as a number (WARNING when not a level name)."""
    level = logging.getLevelName(settings.log_level.upper())
    return level if isinstance(level, int) else logging.WARNING


QUIET_LIBRARIES = (
    "ray",
    "ray.serve",
    "ray.data",
    "filelock",
    "asyncio",
    "httpx",
    "httpcore",
    "aiohttp",
    "aiogram",
    "ccxt",
    "urllib3",
    "botocore",
    "s3fs",
    "fsspec",
    "numba",
)
"""Loggers that print at WARNING and above only, whatever ``ARBFLOW_LOG_LEVEL`` says."""


def configure_logging(level: int | str = logging.WARNING) -> int:
    """Our commands' logging: ``LEVEL name: message`` on stderr at ``level`` (``ARBFLOW_LOG_LEVEL``),
    libraries at WARNING and above (Ray's own logger at ERROR: its start-up chatter)."""
    if isinstance(level, str):
        found = logging.getLevelName(level.upper())
        level = found if isinstance(found, int) else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    logging.getLogger("ray").setLevel(max(level, logging.ERROR))
    # ray.init's LoggingConfig opens the "ray" logger for a moment: its token-auth notice
    logging.getLogger("ray._private.authentication").setLevel(max(level, logging.ERROR))
    return level


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass
class LockInfo:
    """What ``<data_dir>/system.lock`` says about the process that owns the data dir."""

    pid: int
    command: str
    redis_url: str = ""
    ray_address: str = ""
    http_url: str = ""
    started_at: float = field(default_factory=time.time)

    def describe(self) -> str:
        parts = [f"arbflow {self.command} (pid {self.pid})"]
        if self.redis_url:
            parts.append(f"Redis {self.redis_url}")
        if self.ray_address:
            parts.append(f"Ray {self.ray_address}")
        if self.http_url:
            parts.append(f"serving {self.http_url}")
        return ", ".join(parts)


class SystemLock:
    """``<data_dir>/system.lock``: created atomically (``O_EXCL``) by the owner, removed at exit.

    A lock whose pid is gone (a crash, ``kill -9``) is stale and taken over. The owner
    fills in its Redis URL, Ray address and HTTP URL as they come up (:meth:`update`), so
    a process that joins (``arbflow serve``) finds them.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir).resolve() / LOCK_FILE
        self.info: LockInfo | None = None

    def read(self) -> LockInfo | None:
        """The live owner, or None (no lock, an unreadable one, or a dead pid)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            info = LockInfo(**{k: raw[k] for k in raw if k in LockInfo.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("%s is unreadable (%s): treating it as stale", self.path, exc)
            return None
        return info if pid_alive(info.pid) else None

    def acquire(self, command: str) -> LockInfo | None:
        """Take the lock; returns None when taken, else the live owner (the lock is not ours)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            info = LockInfo(pid=os.getpid(), command=command)
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                owner = self.read()
                if owner is not None:
                    return owner
                stale = self.path.with_name(f".{LOCK_FILE}.{os.getpid()}.stale")
                with contextlib.suppress(FileNotFoundError):  # one taker wins the rename
                    os.replace(self.path, stale)
                    log.warning("taking over a stale %s", self.path)
                    stale.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(asdict(info), fh)
            self.info = info
            return None
        owner = self.read()
        if owner is None:
            raise DataDirInUse(f"could not take {self.path}: another process keeps replacing it")
        return owner

    def update(self, **fields: str) -> None:
        if self.info is None:
            return
        for key, value in fields.items():
            setattr(self.info, key, value)
        tmp = self.path.with_name(f".{LOCK_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self.info)), encoding="utf-8")
        os.replace(tmp, self.path)

    def release(self) -> None:
        if self.info is None:
            return
        owner = None
        with contextlib.suppress(OSError, ValueError):
            owner = json.loads(self.path.read_text(encoding="utf-8")).get("pid")
        if owner == self.info.pid:
            self.path.unlink(missing_ok=True)
        self.info = None


def _refusal(owner: LockInfo, command: str, data_dir: Path) -> str:
    return (
        f"{owner.describe()} already runs on the data dir {Path(data_dir).resolve()}: "
        f"a second `arbflow {command}` there would start a second system on the same Redis and lake. "
        f"Stop it first, or give this one its own ARBFLOW_DATA_DIR."
    )


ACTOR_LOGGER = "arbflow.actors"
_ATTRS = re.compile(
    r"\s+(?:name|job_id|worker_id|node_id|actor_id|task_id|task_name|task_func_name|actor_name|timestamp_ns)=\S*"
)
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+\s+(?P<level>[A-Z]+) (?P<where>\S+) -- (?P<msg>.*)$")
_RAY_NOISE = ("PYTHON worker processes have been started",)
"""Raylet messages our commands do not print (docs/operations.md, "Output")."""


def parse_worker_line(line: str) -> tuple[int, str, str] | None:
    """``(level, where, message)`` of the first line of a log record of a Ray worker
    (LoggingConfig TEXT), or None for anything else (prints, traceback lines, library noise)."""
    m = _RECORD.match(line)
    if m is None:
        return None
    level = logging.getLevelName(m["level"])
    if not isinstance(level, int):
        return None
    return level, m["where"], m["msg"]


def _attr(text: str, key: str) -> str | None:
    found = re.search(rf"\s{key}=(\S+)", text)
    return found[1] if found else None


class ActorLogForwarder:
    """Log records of our actors at ``level`` and above → the driver's logging, with the actor's name.

    Stands in for Ray's own printer of worker output (which prints everything, prefixed with
    pids): a record (its first line and the lines that follow it, a traceback) is re-logged
    on ``arbflow.actors`` as ``(md:binance) actors.market_data: …`` without Ray's context
    attributes; everything else (prints, Ray's and libraries' chatter) stays in the
    session's log files.
    """

    def __init__(self, level: int) -> None:
        self.level = level
        self.log = logging.getLogger(ACTOR_LOGGER)

    def __call__(self, data: dict[str, Any]) -> None:
        record: list[str] = []
        level = 0
        for line in data.get("lines") or []:
            parsed = parse_worker_line(line)
            if parsed is not None:
                self._emit(data, level, record)
                level, where, msg = parsed
                record = [f"{where} -- {msg}"] if level >= self.level else []
            elif record:
                record.append(line)
        self._emit(data, level, record)

    def _emit(self, data: dict[str, Any], level: int, lines: list[str]) -> None:
        if not lines:
            return
        text = "\n".join(lines)
        who = _attr(text, "actor_name") or data.get("actor_name") or data.get("task_name") or "worker"
        name = _attr(text, "name")
        where, _, msg = _ATTRS.sub("", text).partition(" -- ")
        self.log.log(level, "(%s) %s: %s", who, name or where, msg.rstrip())


def _quiet_raylet_messages() -> None:
    """Drop the raylet's worker-count warnings that Ray prints to the driver's stdout."""
    from ray._private import worker

    original = worker.print_to_stdstream
    if getattr(original, "_arbflow", False):
        return

    def filtered(data: dict[str, Any], ignore_prefix: bool) -> None:
        lines = [ln for ln in data.get("lines") or [] if not any(n in ln for n in _RAY_NOISE)]
        if lines:
            original({**data, "lines": lines}, ignore_prefix)

    filtered._arbflow = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = filtered


def ray_init(settings: Settings, *, actor_logs: int | None = None, **extra: Any) -> None:
    """Join ``settings.ray.address`` or start a local Ray (dashboard off unless asked).

    ``actor_logs``: forward our actors' log records at this level and above to the driver's
    logging with the actor's name (:class:`ActorLogForwarder`); None: worker output stays in
    Ray's log files. Either way Ray's own chatter is not printed.
    """
    import ray

    # Under `uv run` Ray would package the working dir and rebuild the venv in every
    # worker; workers already share our venv. Ray reads the flag at import: set both.
    if os.environ.get("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0").lower() in ("0", "false", ""):
        from ray._private import ray_constants

        os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
        ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Serve's controller kills a proxy not ready within 5 s (then restarts it): on a busy
    # small host a cold proxy takes longer. Read by the controller: before ray.init.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    # A raylet gives up when its agents are slow to start (seen here with a loaded host,
    # their imports take 30 s): give it longer.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "namespace": settings.ray.namespace,
        "log_to_driver": extra.pop("log_to_driver", actor_logs is not None),
        "logging_level": extra.pop("logging_level", logging.ERROR),
    }
    if actor_logs is not None:
        kwargs["logging_config"] = ray.LoggingConfig(
            encoding="TEXT",
            log_level=logging.getLevelName(actor_logs),
            additional_log_standard_attrs=["name"],
        )
    if settings.ray.address:
        kwargs["address"] = settings.ray.address
    else:  # always our own: never attach to some other local cluster that happens to run
        kwargs["address"] = "local"
        kwargs["include_dashboard"] = settings.ray.include_dashboard
        if settings.ray.num_cpus:
            kwargs["num_cpus"] = settings.ray.num_cpus
    kwargs.update(extra)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    for attempt in range(3 if kwargs["address"] == "local" else 1):
        try:
            ray.init(**kwargs)
            break
        except Exception as exc:
            root.handlers[:] = handlers
            # Two local Rays starting at once on one host race for the agent's fixed port
            # (52365) and the loser's raylet gives up: start again.
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise
            log.warning("local Ray did not start (%s): starting it again", str(exc).split(".")[0])
            ray.shutdown()
    _quiet_raylet_messages()
    if actor_logs is not None:
        # LoggingConfig set up the driver's root logger too: ours comes back.
        root.handlers[:] = handlers
        root.setLevel(level)
        from ray._private.worker import global_worker_stdstream_dispatcher as dispatcher

        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler("arbflow_actor_logs", ActorLogForwarder(actor_logs))


def ray_address() -> str:
    """The GCS address of the Ray this process is connected to ("" when none)."""
    import ray

    if not ray.is_initialized():
        return ""
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:
        return ""


def check_cluster_secrets(settings: Settings) -> None:
    """On a cluster (``ARBFLOW_RAY__ADDRESS`` set) ``ARBFLOW_SECRET_KEY`` must be set: each node
    would otherwise generate its own key under its own data dir, and users' API keys encrypted
    on one node could not be read on another."""
    if settings.ray.address and not settings.secret_key:
        raise ConfigError(
            f"ARBFLOW_RAY__ADDRESS={settings.ray.address} joins a cluster, but ARBFLOW_SECRET_KEY "
            "is not set: every node would generate a key of its own. Set it on every node (the cluster's env "
            "file, docs/operations.md), e.g. to the output of "
            '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.'
        )


@contextlib.contextmanager
def embedded(
    settings: Settings,
    *,
    start_ray: bool = True,
    command: str = "run",
    role: Role = "owner",
    serves_http: bool = False,
) -> Iterator[Settings]:
    """Bring up what the settings leave to us; yield settings with the real Redis URL.

    ``role="owner"`` (``run``, ``demo``, ``bot``): take ``<data_dir>/system.lock``; when a
    live process holds it, refuse (:class:`DataDirInUse`). ``role="attach"`` (``serve``):
    when a live owner holds it and the settings leave Redis (and Ray) to us, use the
    owner's — unless ``serves_http`` and the owner serves HTTP already, then refuse; with
    no owner, become one. ``serves_http``: this process will serve HTTP on
    ``settings.http`` (recorded in the lock).
    """
    check_cluster_secrets(settings)
    lock = SystemLock(settings.data_dir)
    owner = lock.acquire(command)
    if owner is not None:
        if role == "owner":
            raise DataDirInUse(_refusal(owner, command, settings.data_dir))
        if serves_http and owner.http_url:
            raise DataDirInUse(
                f"{owner.describe()} runs on the data dir {Path(settings.data_dir).resolve()} and "
                f"serves the webhook, API and dashboard itself: `arbflow {command}` has nothing to add. "
                f"To deploy the Serve app onto that system anyway, set ARBFLOW_RAY__ADDRESS="
                f"{owner.ray_address or '<its Ray>'} and "
                f"ARBFLOW_REDIS__URL={owner.redis_url or '<its Redis>'}."
            )
        update: dict[str, Any] = {}
        if not settings.redis.url:
            if not owner.redis_url:
                raise DataDirInUse(f"{owner.describe()} holds the data dir but has no Redis up yet: retry")
            update["redis"] = settings.redis.model_copy(update={"url": owner.redis_url})
        if start_ray and not settings.ray.address and owner.ray_address:
            update["ray"] = settings.ray.model_copy(update={"address": owner.ray_address})
        settings = settings.model_copy(update=update)
        log.info("attached to %s", owner.describe())
    redis: EmbeddedRedis | None = None
    ray_ours = False
    try:
        if not settings.redis.url:
            redis = EmbeddedRedis(settings.data_dir / "redis").start()
            settings = settings.model_copy(
                update={"redis": settings.redis.model_copy(update={"url": redis.url})}
            )
        lock.update(redis_url=settings.redis.url)
        if start_ray:
            import ray

            ray_ours = not ray.is_initialized()
            ray_init(settings, actor_logs=log_level(settings))
            lock.update(ray_address=ray_address())
        if serves_http:
            lock.update(http_url=f"http://{settings.http.host}:{settings.http.port}")
        yield settings
    finally:
        try:
            if ray_ours:
                import ray

                if ray.is_initialized():  # stops a local Ray; only disconnects from one we joined
                    ray.shutdown()
            if redis is not None:
                redis.stop()
        finally:
            lock.release()
