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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from core.accounts import OnboardingStep, Tier, User
from core.settings import Settings

log = logging.getLogger(__name__)

APP_NAME = "arbflow-demo"
SHARDS = 2
SHARD_PREFIX = "demo:bot:shard"
CONCURRENCY = 20
ACTIONS_PER_S = 20.0
"""Budget of bot messages a second the users may cause (the bot may send 30/s)."""
PER_CHAT_GAP_S = 1.05
"""Telegram allows a bot one message a second per chat (burst 3): users wait that long."""
REPLY_TIMEOUT_S = 10.0
POLL_S = 0.3

SCREENS = ("kinds", "exch", "minp", "tz", "hours", "tiers", "keys", "done")
# Where a simulated user stops (index into SCREENS): most finish, the rest drop off on the way.
STOP_WEIGHTS = (14, 9, 7, 6, 5, 4, 5, 50)
TIER_WEIGHTS = {Tier.FREE: 50, Tier.BASIC: 25, Tier.PREMIUM: 15, Tier.ENTERPRISE: 10}
TIMEZONE_WEIGHTS = {
    "UTC": 14,
    "Europe/Berlin": 14,
    "America/New_York": 14,
    "Asia/Tokyo": 10,
    "Asia/Kolkata": 10,
    "Europe/London": 10,
    "America/Los_Angeles": 8,
    "Asia/Singapore": 8,
    "Australia/Sydney": 6,
    "Asia/Dubai": 6,
}
PAYLOADS = (("", 60), ("ref_demo", 28), ("campaign_launch", 12))
LANGS = ("en", "de", "ja", "hi", "es", "fr")
NAMES = ("Ada", "Bo", "Chen", "Dana", "Emeka", "Femi", "Greta", "Hiro", "Ines", "Jon", "Kavya", "Lars")


def _pick(rng: random.Random, weighted: dict[Any, int] | tuple[tuple[Any, int], ...]) -> Any:
    items = list(weighted.items()) if isinstance(weighted, dict) else list(weighted)
    return rng.choices([k for k, _ in items], weights=[w for _, w in items])[0]


@dataclass
class UserPlan:
    """What one simulated user will do (decided up front from the seed)."""

    id: int
    first_name: str
    username: str
    language: str
    tier: Tier
    timezone: str
    payload: str
    stop_at: str
    """The last onboarding screen this user goes to (``done``: finishes)."""
    skip: bool
    """Leave with "Skip setup" at ``stop_at`` instead of stopping there."""
    tweak: bool
    """Change preferences on the screens on the way (kinds, exchanges, min profit, hours)."""
    opportunities: bool


def plan_users(n: int, *, seed: int = 7, base_id: int | None = None) -> list[UserPlan]:
    """``n`` varied users. Ids are unique per run (the embedded Redis keeps earlier runs' users)."""
    rng = random.Random(seed)
    if base_id is None:
        base_id = 6_000_000_000 + (int(time.time()) % 10_000_000) * 10_000
    plans = []
    for i in range(n):
        stop_at = _pick(rng, tuple(zip(SCREENS, STOP_WEIGHTS, strict=True)))
        skip = stop_at != "done" and stop_at != "kinds" and rng.random() < 0.25
        name = rng.choice(NAMES)
        plans.append(
            UserPlan(
                id=base_id + i,
                first_name=name,
                username=f"{name.lower()}_{i}",
                language=rng.choice(LANGS),
                tier=_pick(rng, TIER_WEIGHTS),
                timezone=_pick(rng, TIMEZONE_WEIGHTS),
                payload=_pick(rng, PAYLOADS),
                stop_at=stop_at,
                skip=skip,
                tweak=rng.random() < 0.7,
                opportunities=rng.random() < 0.6,
            )
        )
    return plans


@dataclass
class TelegramReport:
    users: int
    created: int = 0
    started: int = 0
    """Users whose /start got the onboarding screen."""
    stalled: int = 0
    """Users whose bot reply did not come within the timeout."""
    not_reached: int = 0
    """Users the deadline came before."""
    interrupted: int = 0
    """Users the deadline stopped half-way (onboarding or /opportunities)."""
    referrals: int = 0
    presses: int = 0
    sessions_active: int = 0
    """Of the demo's users: an active session in Redis."""
    sessions_active_all: int = 0
    """``RedisSessionStore.count_active``: every active session in this Redis."""
    session_events: dict[str, int] = field(default_factory=dict)
    too_many: int = 0
    bot_requests: int = 0
    deliveries_ok: int = 0
    deliveries_failed: int = 0
    opp_sent: int = 0
    opp_answered: int = 0
    opp_listed: int = 0
    """Of the answers: a page of opportunities (not "nothing matches" or a quota message)."""
    opps_open: int = 0
    opp_deferred_left: int = 0
    """Users still waiting for a first opportunity to ask about at the deadline."""
    funnel: dict[str, int] = field(default_factory=dict)
    by_tier: dict[str, Counter[str]] = field(default_factory=dict)
    timezones: Counter[str] = field(default_factory=Counter)
    setup_s: float = 0.0
    """From the demo's start until the webhook's /readyz said ready (the bot shards built)."""
    phases: dict[str, float] = field(default_factory=dict)
    reply_s: list[float] = field(default_factory=list)
    """User action → the bot's reply seen in the chat (includes up to one poll interval)."""
    webhook_s: list[float] = field(default_factory=list)
    """User action → the webhook's 200 (the sandbox delivers one update at a time)."""
    serve_url: str = ""
    sandbox_url: str = ""
    errors: list[str] = field(default_factory=list)


class _Pacer:
    """At most ``rate`` tokens a second over all users (a /start costs 2: two bot messages)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = 0.0
        self.lock = asyncio.Lock()

    async def take(self, cost: float = 1.0) -> None:
        async with self.lock:
            now = time.monotonic()
            wait = self.next - now
            self.next = max(now, self.next) + self.interval * cost
        if wait > 0:
            await asyncio.sleep(wait)


class _Deadline(Exception):
    pass


class _Stalled(Exception):
    pass


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [
        (b.get("text", ""), b.get("callback_data", "")) for row in rows for b in row if b.get("callback_data")
    ]


def _snapshot(message: dict[str, Any]) -> tuple[str, str]:
    return message.get("text", ""), repr(message.get("reply_markup"))


class TelegramDemo:
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
        from serve.sandbox import DEFAULT_TOKEN, start_sandbox

        loop = asyncio.new_event_loop()
        self._sandbox_loop = loop
        self._sandbox_thread = threading.Thread(target=loop.run_forever, name="demo-sandbox", daemon=True)
        self._sandbox_thread.start()
        self._sandbox = asyncio.run_coroutine_threadsafe(
            start_sandbox(0, "127.0.0.1", tokens=[DEFAULT_TOKEN]), loop
        ).result(30)
        self.report.sandbox_url = self._sandbox.base_url
        tg = self.settings.telegram.model_copy(
            update={"api_base": self._sandbox.base_url, "token": self._sandbox.token, "public_url": ""}
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

    # -- the users -----------------------------------------------------------------------

    def _left(self) -> float:
        return self.deadline - time.monotonic()

    def _check(self) -> None:
        if self.stop_event.is_set() or self._left() <= 0:
            raise _Deadline

    async def _sleep(self, seconds: float) -> None:
        self._check()
        await asyncio.sleep(max(0.0, min(seconds, self._left())))
        self._check()

    async def _simulate(self) -> None:
        import httpx

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
                workers = [asyncio.create_task(self._worker(queue)) for _ in range(CONCURRENCY)]
                await asyncio.gather(*workers)
                self.report.not_reached = queue.qsize()
                self.report.opp_deferred_left = len(self.deferred)
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

    async def _worker(self, queue: asyncio.Queue[UserPlan]) -> None:
        while True:
            later: tuple[UserPlan, int] | None = None
            try:
                self._check()
                plan = queue.get_nowait()
            except _Deadline:
                return
            except asyncio.QueueEmpty:
                if not self.deferred:
                    return
                later = self.deferred.pop(0)
                plan = later[0]
            try:
                if later is not None:
                    await self._opportunities(plan, later[1], deferred=True)
                else:
                    await self._user(plan)
            except _Deadline:
                self.report.interrupted += 1
                return
            except _Stalled:
                self.report.stalled += 1
            except Exception as exc:
                self.report.stalled += 1
                if len(self.report.errors) < 5:
                    self.report.errors.append(f"user {plan.id}: {type(exc).__name__}: {exc}"[:200])

    async def _messages(self, uid: int) -> list[dict[str, Any]]:
        resp = await self.http.get(f"/sandbox/chats/{uid}/messages")
        resp.raise_for_status()
        return list(resp.json()["messages"])

    async def _await_reply(self, uid: int, predicate: Any, sent: float) -> dict[str, Any]:
        """Poll the chat until a bot message satisfies ``predicate`` (then return it)."""
        give_up = time.monotonic() + REPLY_TIMEOUT_S
        while True:
            for msg in reversed(await self._messages(uid)):
                if predicate(msg):
                    self.report.reply_s.append(time.monotonic() - sent)
                    return msg
            if time.monotonic() > give_up:
                raise _Stalled
            await self._sleep(POLL_S)

    async def _send(self, uid: int, text: str, cost: float = 1.0) -> float:
        """Send ``text`` as the user; returns when it was sent (monotonic)."""
        await self.pacer.take(cost)
        self._check()
        sent = time.monotonic()
        resp = await self.http.post("/sandbox/send", json={"user_id": uid, "text": text, "wait": True})
        resp.raise_for_status()
        self.report.webhook_s.append(time.monotonic() - sent)
        return sent

    async def _press(self, plan: UserPlan, message: dict[str, Any], data: str) -> dict[str, Any]:
        """Press ``data`` on ``message``; return the message once the bot changed it (or a new one)."""
        before, mid = _snapshot(message), message["message_id"]
        await self._sleep(PER_CHAT_GAP_S)
        await self.pacer.take()
        self._check()
        sent = time.monotonic()
        resp = await self.http.post(
            "/sandbox/press",
            json={"user_id": plan.id, "message_id": mid, "data": data, "wait": True},
        )
        resp.raise_for_status()
        self.report.webhook_s.append(time.monotonic() - sent)
        self.report.presses += 1
        return await self._await_reply(
            plan.id,
            lambda m: (m["message_id"] == mid and _snapshot(m) != before) or m["message_id"] > mid,
            sent,
        )

    async def _user(self, plan: UserPlan) -> None:
        from notify.texts import HOURS_CHOICES, MIN_PROFIT_CHOICES, TIMEZONES

        rng = random.Random(plan.id)
        user = User.new(plan.id, datetime.now(UTC), username=plan.username, first_name=plan.first_name)
        await self.users.create(user)
        await self.users.set_tier(plan.id, plan.tier)
        text = f"/start {plan.payload}" if plan.payload else "/start"
        sent = await self._send(plan.id, text, cost=2.0)
        screen = await self._await_reply(
            plan.id, lambda m: any(d.startswith("ob:") for _, d in _buttons(m)), sent
        )
        self.report.started += 1
        self.report.referrals += bool(plan.payload)
        last_id = screen["message_id"]
        for name in SCREENS[: SCREENS.index(plan.stop_at) + 1]:
            if name == "done":
                break
            choice = self._preference(plan, name, _buttons(screen), rng, HOURS_CHOICES, MIN_PROFIT_CHOICES)
            if name == "tz":
                index = TIMEZONES.index(plan.timezone) if plan.timezone in TIMEZONES else 0
                choice = next(
                    (
                        d
                        for label, d in _buttons(screen)
                        if d.startswith("sp:") and d.split(":")[3] == str(index) and not label.startswith("•")
                    ),
                    None,
                )
            if choice:
                screen = await self._press(plan, screen, choice)
            if name == plan.stop_at:
                if not plan.skip:
                    break
                nav = "done"
            else:
                nav = SCREENS[SCREENS.index(name) + 1]
            data = next(
                (d for _, d in _buttons(screen) if d.startswith("ob:") and d.endswith(f":{nav}")), None
            )
            if data is None:
                break
            screen = await self._press(plan, screen, data)
            last_id = max(last_id, screen["message_id"])
        if plan.opportunities:
            await self._opportunities(plan, last_id)

    @staticmethod
    def _preference(
        plan: UserPlan,
        screen: str,
        buttons: list[tuple[str, str]],
        rng: random.Random,
        hours: Any,
        min_profit: Any,
    ) -> str | None:
        """A preference button to press on this onboarding screen (None: keep the defaults)."""
        if not plan.tweak:
            return None
        prefs = [(label, d) for label, d in buttons if d.startswith("sp:")]
        if screen == "kinds":  # turn one allowed kind off (kinds the tier lacks are locked)
            allowed = [d for label, d in prefs if not label.startswith("🔒")]
            return rng.choice(allowed) if len(allowed) > 1 and rng.random() < 0.5 else None
        if screen == "exch":  # only some exchanges
            picks = [d for label, d in prefs if not d.endswith(":*:1")]
            return rng.choice(picks) if picks and rng.random() < 0.5 else None
        if screen in ("minp", "hours"):
            picks = [d for label, d in prefs if not label.startswith("•")]
            return rng.choice(picks) if picks else None
        return None

    async def _opportunities(self, plan: UserPlan, after_id: int, *, deferred: bool = False) -> None:
        from pipeline.open_set import RedisOpportunityStore

        store = RedisOpportunityStore(self.redis)
        if not deferred and await store.count() == 0:
            self.deferred.append((plan, after_id))  # none open yet: ask again after the others
            return
        while await store.count() == 0:  # the detector needs a few seconds of quotes
            await self._sleep(1.0)
        await self._sleep(PER_CHAT_GAP_S)
        newest = max([after_id, *(m["message_id"] for m in await self._messages(plan.id))])
        self.report.opp_sent += 1
        sent = await self._send(plan.id, "/opportunities")
        reply = await self._await_reply(plan.id, lambda m: m["message_id"] > newest, sent)
        self.report.opp_answered += 1
        if "Open opportunities" in reply.get("text", ""):
            self.report.opp_listed += 1

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


def session_events(settings: Settings, since: datetime) -> dict[str, int]:
    """``session_events`` rows of this run by event (empty when the dataset is not there)."""
    from pipeline.lake import Lake
    from pipeline.query import run_query

    try:
        rows = run_query(
            Lake.from_settings(settings.lake),
            f"SELECT event, count(*) AS n FROM session_events "
            f"WHERE ts >= TIMESTAMPTZ '{since.isoformat()}' GROUP BY event ORDER BY event",
        ).to_pylist()
    except Exception:
        return {}
    return {str(r["event"]): int(r["n"]) for r in rows}


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _pct(n: int, of: int) -> str:
    return f"{100 * n / of:.0f}%" if of else "-"


def telegram_tables(report: TelegramReport) -> list[Table]:
    tg = Table(title="Telegram (sandbox → Ray Serve webhook → bot shards)", title_justify="left")
    tg.add_column("figure")
    tg.add_column("value", justify="right")
    tg.add_row("users simulated / created in the sandbox", f"{report.users:,} / {report.created:,}")
    tg.add_row("/start answered with onboarding", f"{report.started:,}")
    tg.add_row("stopped half-way by the deadline", f"{report.interrupted:,}")
    tg.add_row("not reached before the deadline", f"{report.not_reached:,}")
    if report.stalled:
        tg.add_row("no reply within the timeout", f"{report.stalled:,}")
    tg.add_row("of them with a deep link (ref/campaign)", f"{report.referrals:,}")
    tg.add_row("sessions active (demo users)", f"{report.sessions_active:,}")
    tg.add_row("sessions active in Redis (count_active)", f"{report.sessions_active_all:,}")
    if report.session_events:
        tg.add_row(
            "session_events in the lake",
            ", ".join(f"{k} {v:,}" for k, v in sorted(report.session_events.items())),
        )
    tg.add_row("button presses", f"{report.presses:,}")
    tg.add_row(
        "/opportunities sent / answered / with a list",
        f"{report.opp_sent:,} / {report.opp_answered:,} / {report.opp_listed:,}",
    )
    tg.add_row("open opportunities at the end", f"{report.opps_open:,}")
    tg.add_row("Bot API requests to the sandbox", f"{report.bot_requests:,}")
    tg.add_row("429s (flood limits)", f"{report.too_many:,}")
    tg.add_row("webhook deliveries ok / failed", f"{report.deliveries_ok:,} / {report.deliveries_failed:,}")
    if report.reply_s:
        tg.add_row(
            "webhook 200 p50 / p95",
            f"{_q(report.webhook_s, 0.5):,.0f} / {_q(report.webhook_s, 0.95):,.0f} ms",
        )
        tg.add_row(
            "bot reply seen p50 / p95", f"{_q(report.reply_s, 0.5):,.0f} / {_q(report.reply_s, 0.95):,.0f} ms"
        )
    tg.add_row("bot ready after", f"{report.setup_s:.1f} s" if report.setup_s else "not ready")
    log.debug("demo telegram setup phases: %s", report.phases)
    for err in report.errors[:5]:
        tg.add_row("[red]error[/]", err)

    started = sum(n for step, n in report.funnel.items() if step != OnboardingStep.NEW.value)
    funnel = Table(title="Onboarding funnel (furthest step per user)", title_justify="left")
    funnel.add_column("step")
    funnel.add_column("stopped here", justify="right")
    funnel.add_column("% of started", justify="right")
    funnel.add_column("reached", justify="right")
    funnel.add_column("% reached", justify="right")
    steps = list(OnboardingStep)
    for i, step in enumerate(steps):
        here = report.funnel.get(step.value, 0)
        reached = sum(report.funnel.get(s.value, 0) for s in steps[i:])
        if step is OnboardingStep.NEW:
            funnel.add_row(step.value, f"{here:,}", "-", "-", "-")
            continue
        funnel.add_row(step.value, f"{here:,}", _pct(here, started), f"{reached:,}", _pct(reached, started))
    funnel.caption = f"{started:,} users started (sent /start and opted in)"

    tiers = Table(title="Demo users by tier", title_justify="left")
    for col in ("tier", "users", "started", "finished onboarding"):
        tiers.add_column(col, justify="left" if col == "tier" else "right")
    for tier in Tier:
        row = report.by_tier.get(tier.value)
        if row:
            tiers.add_row(tier.value, f"{row['users']:,}", f"{row['started']:,}", f"{row['finished']:,}")
    if report.timezones:
        top = ", ".join(f"{tz} {n}" for tz, n in report.timezones.most_common(6))
        tiers.caption = f"time zones: {top}"
    return [tg, funnel, tiers] if report.funnel else [tg]


def try_by_hand_hint(settings: Settings) -> str:
    from serve.sandbox import DEFAULT_TOKEN

    port = settings.http.port
    return (
        "Try the bot by hand (the demo's sandbox and bot stopped with it):\n"
        "  1. [bold]uv run arbflow sandbox[/]   → chat page http://127.0.0.1:8081/chat\n"
        "  2. in another shell:\n"
        "     [bold]export ARBFLOW_TELEGRAM__API_BASE=http://127.0.0.1:8081[/]\n"
        f"     [bold]export ARBFLOW_TELEGRAM__TOKEN={DEFAULT_TOKEN}[/]\n"
        f"     [bold]export ARBFLOW_TELEGRAM__PUBLIC_URL=http://127.0.0.1:{port}[/]\n"
        "     [bold]uv run arbflow serve[/]   (calls setWebhook on the sandbox; docs/bot.md)"
    )
