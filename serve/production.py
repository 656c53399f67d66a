"""``arbflow run``: the whole production system in one process, one Redis, one Ray.

What ``arbflow demo`` runs, minus the simulated users: market data (live by default),
detection, distribution (with a bot token), the Ray Serve app (webhook, API, dashboard),
the alert monitor. With a token, Telegram's updates arrive through the webhook when
``ARBFLOW_TELEGRAM__PUBLIC_URL`` is set (the app calls ``setWebhook``), else by long
polling (:mod:`serve.polling`); either way they go through the same bot shards.

Start (:meth:`ProductionSystem.start`) brings the bot up first (a cold start answers an
update within seconds, docs/performance.md):

1. the bot shards (their aiogram handler builds in their own processes), the lake sink and
   the rate limiter the bot's replies use (their processes start alongside) and, when
   polling, the poller — they need only Ray and Redis;
2. polling: the rest waits until the shards are ready and have answered what waited in
   Telegram (:meth:`ProductionSystem.wait_bot`, at most ``BOT_FIRST_S``), so on a small host
   the bot has the cores to itself; webhook: the Serve app is on the answer's path and
   starts at once, concurrently with the shards' builds;
3. the Serve app (its controller, proxy and replica take the longest);
4. the push side, the monitor, then the market pipeline (pair coordinators find
   ``dist:engine`` at start).

Stop (:meth:`ProductionSystem.stop`, on SIGTERM / Ctrl-C / the end of a replay file)
runs :meth:`ProductionSystem.stop_steps` in order, each bounded, and reports each. The
foreground command around it (start lines, the wait, signals, summaries):
:mod:`serve.foreground`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import ConfigError
from core.settings import MarketSourceName, Settings

log = logging.getLogger(__name__)

APP_NAME = "arbflow"
BotMode = Literal["webhook", "polling", "off"]
SERVE_START_S = 120.0
"""How long the rest waits for the Serve app before starting anyway."""
BOT_FIRST_S = 120.0
"""Polling: how long the rest of the system waits for the bot to be ready and to answer
what waited in Telegram before it starts anyway."""
STOP_BUDGET_S = 90.0
"""The whole stop sequence; each step has its own bound within it."""


def bot_mode(settings: Settings) -> BotMode:
    """``webhook`` with a token and a public URL, ``polling`` with a token only, else ``off``."""
    tg = settings.telegram
    if not tg.token:
        return "off"
    return "webhook" if tg.public_url else "polling"


def default_bot_shards() -> int:
    """Bot shard actors for this host: each is a process that imports aiogram (≈ 4 s of CPU
    at start, ≈ 150 MB), so a small host gets few; updates of one chat go to one shard."""
    import os

    return max(1, min(4, (os.cpu_count() or 2) // 2))


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"HTTP port {host}:{port} is taken ({exc.strerror}): set ARBFLOW_HTTP__PORT to a free one"
            ) from None


@dataclass
class StopStep:
    """One step of the stop sequence: ``action`` returns a line saying what it did."""

    name: str
    action: Callable[[], str]
    timeout_s: float = 30.0


@dataclass
class StepOutcome:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class StartTimes:
    """Seconds since the command started at which each part was up (docs/performance.md)."""

    marks: dict[str, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self.t0, 2)


def run_steps(steps: list[StopStep], budget_s: float = STOP_BUDGET_S) -> list[StepOutcome]:
    """Run the steps in order, each in a thread bounded by its timeout (and what is left of
    ``budget_s``); a step that fails or times out is reported and the next one runs."""
    outcomes: list[StepOutcome] = []
    deadline = time.monotonic() + budget_s
    for step in steps:
        left = max(1.0, min(step.timeout_s, deadline - time.monotonic()))
        box: dict[str, Any] = {}

        def work(step: StopStep = step, box: dict[str, Any] = box) -> None:
            try:
                box["detail"] = step.action()
            except Exception as exc:
                box["error"] = f"{type(exc).__name__}: {exc}"[:300]

        started = time.monotonic()
        thread = threading.Thread(target=work, name=f"stop-{step.name}", daemon=True)
        thread.start()
        thread.join(left)
        took = time.monotonic() - started
        if thread.is_alive():
            outcomes.append(StepOutcome(step.name, False, f"timed out after {left:.0f} s", took))
        elif "error" in box:
            outcomes.append(StepOutcome(step.name, False, box["error"], took))
        else:
            outcomes.append(StepOutcome(step.name, True, str(box.get("detail") or "done"), took))
    return outcomes


class ProductionSystem:
    """Everything ``arbflow run`` starts, on an already initialised Ray (``serve.runtime.embedded``)."""

    def __init__(
        self,
        settings: Settings,
        source: MarketSourceName,
        *,
        shards: int | None = None,
        replicas: int = 1,
        serve_http: bool = True,
        times: StartTimes | None = None,
    ) -> None:
        from serve.dispatch import SHARD_PREFIX

        self.settings = settings
        self.source = source
        self.mode = bot_mode(settings)
        self.n_shards = shards or default_bot_shards()
        self.shard_prefix = SHARD_PREFIX
        self.replicas = replicas
        self.serve_http = serve_http
        self.times = times or StartTimes()
        self.bot_shards: Any = None
        self.sink: Any = None
        self.limiter: Any = None
        self.poller: Any = None
        self.pool_pollers: list[Any] = []
        """Polling with a pool of bots: one poller per other bot (docs/bot-pool.md)."""
        self.handover: Any = None
        """Polling: :class:`serve.first_answers.HandoverShards` (this process, then the actors)."""
        self.distribution: Any = None
        self.monitor: Any = None
        self.pipeline: Any = None
        self.serve_started = False
        self.serve_error: str | None = None
        self.push_stats: dict[str, Any] | None = None
        self.pipeline_stats: Any = None
        self.shard_stats: list[dict[str, Any]] = []
        self._serve_thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.http.host}:{self.settings.http.port}"

    # -- start ---------------------------------------------------------------------------

    def start(self, stop: threading.Event | None = None) -> ProductionSystem:
        """Bring everything up; a set ``stop`` (a signal while starting) cuts it short."""
        from serve.orchestrator import Distribution, MarketPipeline, get_monitor

        if self.serve_http:
            check_port_free(self.settings.http.host, self.settings.http.port)
        self.start_bot()
        if self.mode == "polling":
            # Polling answers without Serve: the bot's processes get the two cores first, and
            # Serve (three processes importing FastAPI, Ray Serve) starts once an update
            # waiting in Telegram has been answered (docs/performance.md, "cold start").
            self.wait_bot(BOT_FIRST_S, stop=stop)
        if self.serve_http and not (stop is not None and stop.is_set()):
            self._serve_thread = threading.Thread(target=self._start_serve, name="serve-start", daemon=True)
            self._serve_thread.start()
            # The rest (some twenty actor processes) waits for Serve: on a small host, starting
            # them alongside would starve Serve's proxy past its readiness checks.
            self.wait_serve(SERVE_START_S, stop=stop)
        if stop is not None and stop.is_set():
            return self
        if self.mode != "off":  # pushes start before the market, so nothing is missed
            self.distribution = Distribution(self.settings).start()
            self.settings = self.distribution.settings  # its shard count covers what Redis holds
            self.times.mark("distribution up")
        self.monitor = get_monitor(self.settings)
        self.pipeline = MarketPipeline(self.settings, self.source).start()
        self.times.mark("market pipeline up")
        return self

    def start_bot(self) -> None:
        """The sink (a name lookup away for the bot's lake events), the bot shards, the poller.

        Polling: the bot shard actors start only once the first updates are answered; until
        they are ready, a shard in this process answers (:mod:`serve.first_answers`: the
        command imported the bot while Ray started, so the first answer does not wait for
        a new process to import aiogram)."""
        from actors.sink import get_sink
        from serve.dispatch import UpdateShard, UpdateShards

        if self.mode != "polling":
            self.bot_shards = UpdateShards(
                self.settings, self.n_shards, handler=self._handler(), prefix=self.shard_prefix
            ).start()
        self.sink = get_sink(self.settings)  # the shards find it by name when they build
        if self.mode != "off":
            from actors.ratelimit import get_rate_limiter

            # the bot's replies are paced by ``ratelimit:global``: its process starts while
            # the shards build their handlers, not when the first reply waits for it
            self.limiter = get_rate_limiter(self.settings)
        if self.mode == "polling":
            from serve.first_answers import HandoverShards
            from serve.polling import UpdatePoller

            self.handover = HandoverShards(UpdateShard(self.settings, 0, handler=self._handler()))
            self.poller = UpdatePoller(self.settings, self.handover).start()
            self.pool_pollers = [
                UpdatePoller(self.settings, self.handover, token=token).start()
                for token in self.settings.telegram.pool[1:]
            ]
            self.times.mark("poller started")
        else:
            self.times.mark("bot shards created")

    def start_bot_shards(self) -> None:
        """Polling: the shard actors, which take over from this process's shard once ready."""
        from serve.dispatch import UpdateShards

        if self.handover is None or self.bot_shards is not None:
            return
        self.bot_shards = UpdateShards(
            self.settings, self.n_shards, handler=self._handler(), prefix=self.shard_prefix
        ).start()
        self.handover.attach(self.bot_shards)
        self.times.mark("bot shards created")

    def wait_bot(self, timeout_s: float = BOT_FIRST_S, stop: threading.Event | None = None) -> bool:
        """Until the bot has built its handler and handled what it received so far (an
        update that waited in Telegram is answered), ``timeout_s`` or ``stop``. Polling:
        the shard in this process; then the shard actors are started."""
        import ray

        deadline = time.monotonic() + timeout_s

        def waiting() -> bool:
            return time.monotonic() < deadline and not (stop is not None and stop.is_set())

        handover = self.handover
        if handover is not None:

            def states() -> list[dict[str, Any]]:
                return [handover.ready()]

            def counts() -> list[dict[str, Any]]:
                return [handover.stats()]
        elif self.bot_shards is not None:
            actors = self.bot_shards.actors

            def states() -> list[dict[str, Any]]:
                return list(ray.get([a.ready.remote(0.0) for a in actors], timeout=30))

            def counts() -> list[dict[str, Any]]:
                return list(ray.get([a.stats.remote() for a in actors], timeout=30))
        else:
            return False
        try:
            ready = False
            while waiting():  # ``ready(0)`` does not hold the shard: the poller's hand-over goes first
                answers = states()
                if all(s.get("ready") for s in answers):
                    ready = True
                    break
                if any(s.get("error") for s in answers):  # a failed build: the rest starts anyway
                    break
                time.sleep(0.05)
            if not ready:
                return False
            self.times.mark("bot ready")
            # The poller hands over what waited in Telegram with its first getUpdates: let the
            # bot answer it before the rest of the system competes for the CPUs.
            if self.poller is not None:
                self.poller.first_batch.wait(max(0.0, deadline - time.monotonic()))
            while waiting():
                stats = counts()
                if all(s.get("handled", 0) + s.get("errors", 0) >= s.get("received", 0) for s in stats):
                    if any(s.get("received") for s in stats):
                        self.times.mark("waiting updates answered")
                    break
                time.sleep(0.05)
            return True
        finally:
            self.start_bot_shards()

    def _handler(self) -> str:
        from serve.dispatch import DEFAULT_HANDLER

        # No token, no bot: the webhook still validates and acks, the API and dashboard work.
        return DEFAULT_HANDLER if self.mode != "off" else "serve.handlers:noop_handler_factory"

    def _required(self) -> list[str]:
        if self.mode == "polling":
            return ["redis", "shards", "poller"]
        if self.mode == "webhook":
            return ["redis", "shards"]
        return ["redis", "lake"]

    def _start_serve(self) -> None:
        import warnings

        import ray

        try:
            with warnings.catch_warnings():  # Ray Serve's pydantic models warn at import
                warnings.simplefilter("ignore", DeprecationWarning)
                from ray import serve as ray_serve

                from serve.app import build_app
            http = self.settings.http
            ray_serve.start(http_options={"host": http.host, "port": http.port})
            self.serve_started = True
            app = build_app(
                {
                    "settings": self.settings,
                    "num_replicas": self.replicas,
                    "shards": self.n_shards,
                    "shard_prefix": self.shard_prefix,
                    "handler": self._handler(),
                    "require": self._required(),
                    "set_webhook": self.mode == "webhook",
                }
            )
            for attempt in range(3):
                try:
                    ray_serve.run(app, name=APP_NAME, route_prefix="/")
                    break
                except ray.exceptions.RayActorError as exc:
                    # a proxy that started too slowly is restarted by the controller: wait again
                    if attempt == 2:
                        raise
                    log.warning("Serve: %s; waiting for the restarted proxy", str(exc).splitlines()[0])
            self.times.mark("serve app running")
        except Exception as exc:
            self.serve_error = f"{type(exc).__name__}: {exc}"[:500]
            log.error("the Serve app did not start: %s", self.serve_error)

    def wait_serve(self, timeout_s: float = SERVE_START_S, stop: threading.Event | None = None) -> bool:
        """Until the Serve app runs (True), failed, ``timeout_s`` or ``stop`` is set."""
        thread = self._serve_thread
        if thread is None:
            return False
        deadline = time.monotonic() + timeout_s
        while thread.is_alive() and time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                break
            thread.join(0.2)
        return not thread.is_alive() and self.serve_error is None

    # -- stop ----------------------------------------------------------------------------

    def stop_steps(self) -> list[StopStep]:
        """The stop sequence, in order. Each step says what it did; see :func:`run_steps`."""
        return [
            # 1. stop intake: no new updates, no new market data
            StopStep("stop polling", self._stop_poller, 15.0),
            StopStep("stop the webhook (Serve app)", self._stop_serve, 30.0),
            StopStep("stop market data", self._stop_market, 30.0),
            # 2. drain: the bot answers what it took; the last events reach the push side;
            #    what is still queued for users stays in Redis for the next start
            StopStep("drain the bot shards", self._drain_bot, 20.0),
            StopStep("drain detection", self._drain_detection, 20.0),
            # 3. close the open opportunity set while the sink takes rows and the push side
            #    listens (its closes expire what is queued for those opportunities)
            StopStep("close the open opportunity set", self._close_open_set, 30.0),
            StopStep("stop the monitor", self._stop_monitor, 15.0),
            StopStep("drain the push queues to Redis", self._stop_distribution, 60.0),
            # 4. flush the lake and end the actors
            StopStep("flush the lake", self._flush_lake, 60.0),
        ]

    def stop(self, budget_s: float = STOP_BUDGET_S) -> list[StepOutcome]:
        return run_steps(self.stop_steps(), budget_s)

    def _stop_poller(self) -> str:
        if self.poller is None:
            return "not polling"
        stats = self.poller.stop(10.0)
        forwarded = stats["forwarded"] + sum(p.stop(5.0)["forwarded"] for p in self.pool_pollers)
        bots = f" ({1 + len(self.pool_pollers)} bots)" if self.pool_pollers else ""
        return f"{stats['polls']} polls, {forwarded} updates handed to the bot{bots}"

    def _stop_serve(self) -> str:
        if not self.serve_started:
            return "not started"
        from ray import serve as ray_serve

        if self._serve_thread is not None:
            self._serve_thread.join(20.0)
        # The app only: replicas drain their forwarders to the shards (ArbflowIngress.__del__);
        # the controller and proxy end with Ray (serve.shutdown() would be killed mid-call).
        ray_serve.delete(APP_NAME)
        return f"app {APP_NAME!r} deleted, {self.base_url} closed"

    def _stop_market(self) -> str:
        if self.pipeline is None:
            return "not started"
        self.pipeline.stop_sources()
        return f"{len(self.pipeline.coordinators)} coordinators stopped"

    def _drain_bot(self) -> str:
        first = ""
        if self.handover is not None:
            local = self.handover.close(10.0)
            if local:
                first = f"; {int(local.get('handled', 0))} answered by the first responder"
                self.shard_stats.append(local)
        if self.bot_shards is None:
            return "not started" + first
        import warnings

        with warnings.catch_warnings():  # Ray Serve's pydantic models warn at import
            warnings.simplefilter("ignore", DeprecationWarning)
            from serve.app import shutdown_shards

        stats = shutdown_shards(self.settings, self.n_shards, self.shard_prefix)
        handled = sum(int(s.get("handled", 0)) for s in stats)
        self.shard_stats += stats
        return f"{len(stats)} shards closed, {handled} updates handled{first}"

    def _drain_detection(self) -> str:
        if self.pipeline is None:
            return "not started"
        self.pipeline.drain_detection()
        return "last opportunity events handed on"

    def _stop_monitor(self) -> str:
        if self.monitor is None:
            return "not started"
        from serve.orchestrator import stop_monitor

        stop_monitor(self.monitor)
        self.monitor = None
        return "alerts:monitor stopped"

    def _stop_distribution(self) -> str:
        if self.distribution is None:
            return "no pushes (no bot token)"
        self.push_stats = self.distribution.stop()
        pending = sum(int(s.get("pending", 0) or 0) for s in self.push_stats.get("shards", []))
        n = len(self.push_stats.get("shards", []))
        return f"distributor and {n} queue shards stopped, {pending} queued in Redis"

    def _close_open_set(self) -> str:
        if self.pipeline is None:
            return "not started"
        closed = self.pipeline.close_open_set()
        return f"{closed} open opportunities closed (lake, Redis, queued pushes expired)"

    def _flush_lake(self) -> str:
        if self.pipeline is None:
            if self.sink is None:
                return "not started"
            import ray

            total = dict(ray.get(self.sink.shutdown.remote(), timeout=50)).get("total", {})
            return f"sink flushed: {total.get('files', 0)} files written"
        self.pipeline_stats = self.pipeline.finish()
        total = self.pipeline_stats.sink.get("total", {})
        return f"sink flushed: {total.get('files', 0)} files written in this run"


__all__ = [
    "APP_NAME",
    "ProductionSystem",
    "StartTimes",
    "StepOutcome",
    "StopStep",
    "bot_mode",
    "run_steps",
]
