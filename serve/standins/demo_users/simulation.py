"""The demo's Telegram side: the sandbox, the bot on Ray Serve, and simulated users.

:class:`TelegramDemo` runs next to the market pipeline inside the same embedded
runtime (same Ray, same Redis):

1. the Telegram sandbox in-process (its own thread and event loop) on a free port,
   with its default token; ``settings.telegram.api_base``/``token`` point at it;
2. the Ray Serve app (:func:`serve.app.build_app`, the real aiogram handler on bot
   shards) on ``settings.http`` (a free port when that one is taken), and the
   sandbox's ``setWebhook`` pointed at it with the webhook secret;
3. ``N`` simulated users, seeded: a tier each (set in Redis with
   ``RedisUserStore.set_tier``), a time zone, a deep link for some; each sends
   ``/start`` through the sandbox and walks part of the onboarding by pressing the
   real buttons of the bot's messages (a funnel where not everyone finishes); some
   send ``/opportunities`` once opportunities are open.

Users act at most ~20 times a second in total (20 at a time, a second apart per
chat) so the bot's replies stay under the sandbox's flood limits (30 msg/s per bot,
1/s per chat with a burst of 3). Everything stops at the deadline; what the users
reached by then is what the summary shows. Any failure is caught and reported: the
market side of the demo never depends on this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import threading
import time
import warnings
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from core.accounts import OnboardingStep
from core.settings import Settings
from serve.standins.demo_users.plan import UserPlan, plan_users
from serve.standins.demo_users.report import TelegramReport
from serve.standins.demo_users.users import ACTIONS_PER_S, CONCURRENCY, SimulatedUsers, _Deadline, _Pacer

log = logging.getLogger(__name__)

APP_NAME = "arbflow-demo"
SHARDS = 2
SHARD_PREFIX = "demo:bot:shard"


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class TelegramDemo(SimulatedUsers):
    """Start with :meth:`start` (returns at once), :meth:`stop` to end the users and collect
    the report, :meth:`shutdown` to stop Serve, the bot shards and the sandbox."""

    def __init__(
        self, settings: Settings, users: int, duration_s: float, console: Console, *, seed: int = 7
    ) -> None:
        self.settings = settings
        self.n = users
        self.duration_s = duration_s
        self.console = console
        self.seed = seed
        self.report = TelegramReport(users=users)
        self.plans: list[UserPlan] = []
        self.experiments = list(settings.experiments)
        self._press_rngs: dict[int, random.Random] = {}
        self._last_message: dict[int, float] = {}
        self.stop_event = threading.Event()
        self.began = time.monotonic()
        self.deadline = 0.0
        self.started_at = datetime.now(UTC)
        self._thread: threading.Thread | None = None
        self._sandbox_loop: asyncio.AbstractEventLoop | None = None
        self._sandbox_thread: threading.Thread | None = None
        self._sandbox: Any = None
        self._serve_started = False
        self._bot_settings: Settings | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> TelegramDemo:
        self.deadline = math.inf  # set by arm(): the clock starts with the market run
        self.started_at = datetime.now(UTC)
        self._thread = threading.Thread(target=self._main, name="demo-telegram", daemon=True)
        self._thread.start()
        return self

    def arm(self) -> None:
        """Start the clock: the users stop a second before ``duration_s`` from now."""
        self.deadline = time.monotonic() + self.duration_s - 1.0

    def _main(self) -> None:
        self.began = time.monotonic()
        try:
            self._start_sandbox()
            self._phase("sandbox")
            self._start_serve()
            asyncio.run(self._simulate())
        except Exception as exc:
            log.debug("demo telegram side failed", exc_info=True)
            self.report.errors.append(f"{type(exc).__name__}: {exc}"[:300])

    def stop(self, timeout_s: float = 15.0) -> TelegramReport:
        """End the users (at once), wait for the bot to finish, and collect the figures."""
        self.stop_event.set()
        t0 = time.monotonic()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self.report.errors.append("the user simulation did not stop in time")
        t1 = time.monotonic()
        if self._serve_started:
            with contextlib.suppress(Exception):
                self._shards().drain(5.0)
        t2 = time.monotonic()
        try:
            asyncio.run(self._collect())
        except Exception as exc:
            self.report.errors.append(f"collecting the figures: {type(exc).__name__}: {exc}"[:300])
        log.debug(
            "demo telegram stop: join %.2f s, drain %.2f s, collect %.2f s",
            t1 - t0,
            t2 - t1,
            time.monotonic() - t2,
        )
        return self.report

    def shutdown(self) -> None:
        """Stop Serve (the demo's app), the bot shards and the sandbox; errors are only logged."""
        if self._serve_started:
            try:
                from ray import serve as ray_serve

                # Only the demo's app: the Serve controller and proxy go with the embedded Ray
                # (serve.shutdown() kills the controller mid-call and Ray prints that).
                ray_serve.delete(APP_NAME)
            except Exception as exc:
                log.warning("demo: stopping Serve: %s", exc)
            with contextlib.suppress(Exception):
                self._shards().shutdown(5.0)
        loop, handle = self._sandbox_loop, self._sandbox
        if loop is not None:
            if handle is not None:
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(handle.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            if self._sandbox_thread is not None:
                self._sandbox_thread.join(10)

    def _shards(self) -> Any:
        from serve.dispatch import UpdateShards

        return UpdateShards.attach(self._bot_settings or self.settings, SHARDS, prefix=SHARD_PREFIX)

    # -- setup ---------------------------------------------------------------------------

    def _start_sandbox(self) -> None:
        from serve.standins.sandbox import sandbox_tokens, start_sandbox

        # a pool of bots (``arbflow demo --bots N`` or ARBFLOW_TELEGRAM__TOKENS): as many sandbox
        # bots, the users spread over them (docs/bot-pool.md)
        tokens = sandbox_tokens(max(1, len(self.settings.telegram.tokens)))
        self.bot_tokens = tokens
        loop = asyncio.new_event_loop()
        self._sandbox_loop = loop
        self._sandbox_thread = threading.Thread(target=loop.run_forever, name="demo-sandbox", daemon=True)
        self._sandbox_thread.start()
        self._sandbox = asyncio.run_coroutine_threadsafe(
            start_sandbox(0, "127.0.0.1", tokens=tokens), loop
        ).result(30)
        self.report.sandbox_url = self._sandbox.base_url
        tg = self.settings.telegram.model_copy(
            update={
                "api_base": self._sandbox.base_url,
                "token": self._sandbox.token,
                "tokens": tokens if len(tokens) > 1 else [],
                "public_url": "",
            }
        )
        self._bot_settings = self.settings.model_copy(update={"telegram": tg})

    def bot_settings(self, timeout_s: float = 30.0) -> Settings | None:
        """The settings pointed at the demo's sandbox, once it is up (None if it never came)."""
        deadline = time.monotonic() + timeout_s
        while self._bot_settings is None and time.monotonic() < deadline and not self.report.errors:
            time.sleep(0.05)
        return self._bot_settings

    def _phase(self, name: str) -> None:
        self.report.phases[name] = round(time.monotonic() - self.began, 1)

    def _wait_for_sink(self, settings: Settings, timeout_s: float = 120.0) -> None:
        import ray

        from actors.sink import SINK_NAME

        give_up = time.monotonic() + timeout_s
        while True:
            try:
                ray.get_actor(SINK_NAME, namespace=settings.ray.namespace)
                return
            except ValueError:
                if self.stop_event.is_set() or time.monotonic() > give_up:
                    raise RuntimeError("the pipeline's lake sink did not come up") from None
                time.sleep(0.2)

    def _start_serve(self) -> None:
        from serve.dispatch import UpdateShards
        from serve.runtime import free_port
        from serve.webhook import webhook_secret

        assert self._bot_settings is not None
        http = self._bot_settings.http
        port = http.port if _port_free(http.host, http.port) else free_port(http.host)
        settings = self._bot_settings.model_copy(update={"http": http.model_copy(update={"port": port})})
        self._bot_settings = settings
        with warnings.catch_warnings():  # Ray Serve's pydantic models warn at import
            warnings.simplefilter("ignore", DeprecationWarning)
            from ray import serve as ray_serve

            from serve.app import build_app
        for name in ("ray.serve", "ray"):  # Serve logs INFO lines to the driver's stderr
            logging.getLogger(name).setLevel(logging.WARNING)
        self.secret = webhook_secret(settings.telegram.webhook_secret, settings.data_dir)
        ray_serve.start(http_options={"host": settings.http.host, "port": port})
        self._serve_started = True
        self._phase("serve")
        # The bot writes its session events through the pipeline's sink: let the pipeline
        # create it first, then start the shards now (building aiogram takes seconds) so they
        # come up while Serve starts its replica (which finds them by name).
        self._wait_for_sink(settings)
        self._phase("sink")
        UpdateShards(settings, SHARDS, prefix=SHARD_PREFIX).start()
        ray_serve.run(
            build_app(
                {
                    "settings": settings,
                    "shards": SHARDS,
                    "shard_prefix": SHARD_PREFIX,
                    "webhook_secret": self.secret,
                    "set_webhook": False,
                    "require": ["redis", "shards"],
                }
            ),
            name=APP_NAME,
            route_prefix="/",
            blocking=False,
        )
        self.report.serve_url = f"http://{settings.http.host}:{port}"
        self._phase("app")

    async def _simulate(self) -> None:
        import httpx

        from core.bots import bot_id, bot_secret
        from serve.webhook import set_webhook
        from state.redis import redis_client
        from state.users import RedisUserStore

        assert self._bot_settings is not None
        tg = self._bot_settings.telegram
        self.plans = plan_users(self.n, seed=self.seed)
        self.redis = redis_client(self._bot_settings.redis.url)
        self.users = RedisUserStore(self.redis)
        self.pacer = _Pacer(ACTIONS_PER_S)
        self.deferred: list[tuple[UserPlan, int]] = []
        try:
            async with httpx.AsyncClient(base_url=self.report.sandbox_url, timeout=30) as client:
                self.http = client
                await self._wait_ready()
                self.report.setup_s = time.monotonic() - self.began
                self._phase("ready")
                await set_webhook(tg.api_base, tg.token, self.report.serve_url, self.secret)
                for token in tg.pool[1:]:  # the other bots of a pool: each its path and secret
                    bot = bot_id(token)
                    await set_webhook(
                        tg.api_base, token, self.report.serve_url, bot_secret(self.secret, bot), bot=bot
                    )
                self.console.print(
                    f"Telegram: {self.n} simulated users via the sandbox "
                    f"(chat page {self.report.sandbox_url}/chat while the demo runs), "
                    f"bot webhook on Ray Serve {self.report.serve_url}"
                )
                created = await client.post(
                    "/sandbox/users",
                    json={
                        "users": [
                            {
                                "id": p.id,
                                "first_name": p.first_name,
                                "username": p.username,
                                "language_code": p.language,
                            }
                            for p in self.plans
                        ]
                    },
                )
                created.raise_for_status()
                self.report.created = len(created.json()["users"])
                queue: asyncio.Queue[UserPlan] = asyncio.Queue()
                for plan in self.plans:
                    queue.put_nowait(plan)
                # the users read their pushes and press some (their variant's chance) all along
                presser = asyncio.create_task(self._press_pushes())
                workers = [asyncio.create_task(self._worker(queue)) for _ in range(CONCURRENCY)]
                await asyncio.gather(*workers)
                self.report.not_reached = queue.qsize()
                self.report.opp_deferred_left = len(self.deferred)
                await presser  # until the deadline
        finally:
            await self.redis.aclose()

    async def _wait_ready(self) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=self.report.serve_url, timeout=5) as serve_http:
            last = ""
            while True:
                try:
                    self._check()
                except _Deadline:
                    raise RuntimeError(f"the bot was not ready before the end of the demo ({last})") from None
                with contextlib.suppress(httpx.HTTPError):
                    resp = await serve_http.get("/readyz")
                    if resp.status_code == 200:
                        return
                    last = f"readyz {resp.status_code}"
                await asyncio.sleep(0.5)

    # -- figures ---------------------------------------------------------------------------

    async def _collect(self) -> None:
        import httpx

        from pipeline.open_set import RedisOpportunityStore
        from state.redis import redis_client
        from state.sessions import RedisSessionStore
        from state.users import RedisUserStore

        report = self.report
        if report.sandbox_url:
            async with httpx.AsyncClient(base_url=report.sandbox_url, timeout=10) as client:
                stats = (await client.get("/sandbox/stats")).json()
            report.too_many = int(stats.get("too_many_requests", 0))
            report.bot_requests = int(stats.get("requests", 0))
            for bot in stats.get("bots", {}).values():
                report.deliveries_ok += int(bot.get("delivered", 0))
                report.deliveries_failed += int(bot.get("failed", 0))
        if not self.plans:
            return
        rclient = redis_client((self._bot_settings or self.settings).redis.url)
        try:
            now = datetime.now(UTC)
            users = await RedisUserStore(rclient).get_many([p.id for p in self.plans])
            sessions = RedisSessionStore(rclient)
            report.sessions_active_all = await sessions.count_active(now)
            active = 0
            for uid in users:
                if await sessions.get_active(uid, now) is not None:
                    active += 1
            report.sessions_active = active
            report.opps_open = await RedisOpportunityStore(rclient).count()
        finally:
            await rclient.aclose()
        funnel: Counter[str] = Counter()
        for plan in self.plans:
            found = users.get(plan.id)
            if found is None:
                continue
            step = found.onboarding_step.value
            funnel[step] += 1
            tier = report.by_tier.setdefault(plan.tier.value, Counter())
            tier["users"] += 1
            if found.onboarding_step is not OnboardingStep.NEW:
                tier["started"] += 1
            if found.onboarding_step is OnboardingStep.DONE:
                tier["finished"] += 1
            report.timezones[found.preferences.timezone] += 1
        report.funnel = dict(funnel)


# -- summary -------------------------------------------------------------------------------
