"""What a simulated user does: ``/start`` and part of the onboarding through the sandbox,
pressing the real buttons of the bot's messages, and ``/opportunities`` once some are open.

:class:`SimulatedUsers` is the users' half of :class:`serve.standins.demo_users.simulation.TelegramDemo`
(which opens the sandbox client, the Redis stores and the pacer before the workers run).
Users act at most :data:`ACTIONS_PER_S` times a second in total and a second apart per chat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.accounts import User
from core.experiments import Experiment, assign
from serve.standins.demo_users.plan import SCREENS, UserPlan, press_chance
from serve.standins.demo_users.report import TelegramReport

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

CONCURRENCY = 20
ACTIONS_PER_S = 20.0
"""Budget of bot messages a second the users may cause (the bot may send 30/s)."""
PER_CHAT_GAP_S = 1.05
"""Telegram allows a bot one message a second per chat (burst 3): users wait that long."""
REPLY_TIMEOUT_S = 10.0
POLL_S = 0.3
PUSH_POLL_S = 1.0
"""How often the users look for new pushes (one read of the sandbox's request log for all)."""
PUSH_READ_S = 1.5
"""A user reads a push this long before pressing its button (the bot's reply and the next push
to the chat stay a second apart)."""
PUSH_PRESS_GAP_S = 2.0
"""A user's presses are at least this far apart (a press waits its turn, it is not dropped)."""
DETAILS_PREFIX = "pu:details:"
CHAT_MESSAGES = frozenset({"sendMessage", "editMessageText"})
"""Bot API methods that count towards a chat's message limit (the sandbox's request log)."""
QUIET_TRIES = 5


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


def _buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [
        (b.get("text", ""), b.get("callback_data", "")) for row in rows for b in row if b.get("callback_data")
    ]


def _push_of(record: dict[str, Any]) -> tuple[int, str] | None:
    """``(message_id, the first details button's data)`` of a push in the sandbox's request log
    (None: another message)."""
    markup = (record.get("params") or {}).get("reply_markup")
    if isinstance(markup, str):
        try:
            markup = json.loads(markup)
        except ValueError:
            return None
    rows = (markup or {}).get("inline_keyboard") or []
    data = next(
        (
            b["callback_data"]
            for row in rows
            for b in row
            if str(b.get("callback_data", "")).startswith(DETAILS_PREFIX)
        ),
        None,
    )
    result = (record.get("response") or {}).get("result") or {}
    if data is None or not isinstance(result, dict) or "message_id" not in result:
        return None
    return int(result["message_id"]), str(data)


def _snapshot(message: dict[str, Any]) -> tuple[str, str]:
    return message.get("text", ""), repr(message.get("reply_markup"))


class SimulatedUsers:
    """The workers and what each user does; the clock is ``deadline`` and ``stop_event``."""

    deadline: float
    stop_event: threading.Event
    report: TelegramReport
    http: httpx.AsyncClient
    redis: Any
    users: Any
    """The ``RedisUserStore`` the simulation opened."""
    pacer: _Pacer
    deferred: list[tuple[UserPlan, int]]
    plans: list[UserPlan]
    experiments: list[Experiment]
    """The experiments the users may be in (the settings'; the demo sets one when none is)."""
    _press_rngs: dict[int, random.Random]
    _last_message: dict[int, float]
    """Each chat's last message from the bot (the sandbox's clock), from its request log."""
    bot_tokens: list[str]
    """The sandbox's bots (a pool of several: each user talks to one, ``bot_for``)."""

    def bot_for(self, uid: int) -> dict[str, str]:
        """The control API's ``token`` of the bot user ``uid`` talks to (users spread over a
        pool in turn); empty with one bot."""
        tokens = getattr(self, "bot_tokens", None) or []
        return {"token": tokens[uid % len(tokens)]} if len(tokens) > 1 else {}

    @property
    def control(self) -> str | None:
        """The control (first) variant of the first experiment: its users press at the base chance."""
        return self.experiments[0].variants[0].name if self.experiments else None

    def variant_of(self, plan: UserPlan) -> str:
        """The user's variant (``-``: in no experiment)."""
        return assign(plan.id, self.experiments).variant or "-"

    def press_rng(self, plan: UserPlan) -> random.Random:
        """The user's own seeded draws for pressing pushes."""
        rng = self._press_rngs.get(plan.id)
        if rng is None:
            rng = self._press_rngs[plan.id] = random.Random(plan.id * 7919 + 1)
        return rng

    def _left(self) -> float:
        return self.deadline - time.monotonic()

    def _check(self) -> None:
        if self.stop_event.is_set() or self._left() <= 0:
            raise _Deadline

    async def _sleep(self, seconds: float) -> None:
        self._check()
        await asyncio.sleep(max(0.0, min(seconds, self._left())))
        self._check()

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
        resp = await self.http.get(f"/sandbox/chats/{uid}/messages", params=self.bot_for(uid))
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
        resp = await self.http.post(
            "/sandbox/send", json={"user_id": uid, "text": text, "wait": True, **self.bot_for(uid)}
        )
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
            json={"user_id": plan.id, "message_id": mid, "data": data, "wait": True, **self.bot_for(plan.id)},
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

    # -- pushes: read, and sometimes pressed (the experiment's planted effect) ----------------

    async def _press_pushes(self) -> None:
        """Until the deadline: every push sent to a simulated user is seen by them, and its
        first details button pressed with the user's own chance
        (:func:`serve.standins.demo_users.plan.press_chance`: their variant's), after a moment
        to read it. A press goes through the sandbox and the webhook like a real one: the bot
        writes its ``engagement`` row, which the experiment's report counts."""
        plans = {p.id: p for p in self.plans}
        since = 0
        last_press: dict[int, float] = {}
        presses: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._sleep(PUSH_POLL_S)
                resp = await self.http.get("/sandbox/requests", params={"status": 200, "since": since})
                resp.raise_for_status()
                body = resp.json()
                since = body.get("last_id") or since
                for record in body["requests"]:
                    if record.get("method") in CHAT_MESSAGES and record.get("chat_id") is not None:
                        self._last_message[int(record["chat_id"])] = float(record.get("time") or 0)
                    if record.get("method") != "sendMessage":
                        continue
                    push = _push_of(record)
                    plan = plans.get(int(record.get("chat_id") or 0))
                    if push is None or plan is None:
                        continue
                    message_id, data = push
                    variant = self.variant_of(plan)
                    self.report.pushes_seen[variant] += 1
                    if self.press_rng(plan).random() >= press_chance(plan, variant, self.control):
                        continue
                    # read for a moment, and a few seconds after this user's last press
                    at = max(
                        time.monotonic() + PUSH_READ_S, last_press.get(plan.id, -math.inf) + PUSH_PRESS_GAP_S
                    )
                    last_press[plan.id] = at
                    task = asyncio.create_task(self._press_push(plan, variant, message_id, data, at))
                    presses.add(task)
                    task.add_done_callback(presses.discard)
        except _Deadline:
            return
        finally:
            for task in presses:
                task.cancel()

    async def _press_push(self, plan: UserPlan, variant: str, message_id: int, data: str, at: float) -> None:
        try:
            await self._sleep(at - time.monotonic())
            # the bot answers a press with a message: wait for a quiet moment in the chat, so
            # that answer and the chat's pushes stay within Telegram's per-chat limit
            for _ in range(QUIET_TRIES):
                quiet = time.time() - self._last_message.get(plan.id, 0.0)
                if quiet >= PER_CHAT_GAP_S:
                    break
                await self._sleep(PER_CHAT_GAP_S - quiet + 0.1)
            await self.pacer.take()
            self._check()
            resp = await self.http.post(
                "/sandbox/press",
                json={
                    "user_id": plan.id,
                    "message_id": message_id,
                    "data": data,
                    "wait": True,
                    **self.bot_for(plan.id),  # the bot that sent the push (the user's)
                },
            )
            resp.raise_for_status()
            self.report.push_presses[variant] += 1
        except _Deadline:
            return
        except Exception as exc:  # a press that did not go is not an error of the bot
            log.debug("demo: pressing a push of %s: %r", plan.id, exc)

    # -- figures ---------------------------------------------------------------------------
