"""The deployed webhook end to end: the Telegram sandbox → Ray Serve → the bot shards → the real bot.

One stack per module: the sandbox (`serve.standins.sandbox.start_sandbox`, on its own event loop
thread so it keeps answering while the test code blocks), a private redis-server, and
the Serve app (`serve.app.build_app`) with the default handler — the real aiogram bot of
`bot.app` / `bot.deps` on the shard actors. Serve's replica calls ``setWebhook`` on the
sandbox at start (``telegram.public_url``), so every update below travels as it would
from Telegram: sandbox → ``POST /telegram/webhook`` (secret header) → dedup → shard →
``dp.feed_update`` → Bot API calls back on the sandbox.

The tests act as users through the sandbox's control API and read back what the
sandbox received (``/sandbox/chats/{id}/messages``, ``/sandbox/requests``,
``/sandbox/webhook``). The sandbox's flood clock runs fast, so flood limits never
interfere (they are covered by the sandbox's own tests).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import (
    LakeSettings,
    MarketSettings,
    RaySettings,
    RedisSettings,
    Settings,
    TelegramSettings,
)
from notify import texts
from serve.dispatch import UpdateShards
from serve.runtime import EmbeddedRedis, free_port
from serve.standins.sandbox import SandboxHandle, start_sandbox

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "telegram"
UPDATES = FIXTURES / "updates"
ERRORS = FIXTURES / "errors"
SECRET = "e2e-webhook-secret_0123456789"
SHARDS = 2
NAMESPACE = "arbflow-test"


class SandboxThread:
    """The sandbox on an event loop of its own (Serve's replica and the test call it concurrently)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sandbox", daemon=True)
        self.thread.start()
        ticks = itertools.count()
        self.handle: SandboxHandle = self._run(
            start_sandbox(port=0, clock=lambda: next(ticks) * 100.0)  # flood buckets always full
        )

    def _run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self._run(self.handle.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@dataclass
class Stack:
    sandbox: SandboxHandle
    serve_url: str
    settings: Settings
    shard_prefix: str
    http: httpx.Client

    # -- acting as users (the sandbox's control API) ----------------------------------------
    def control(self, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        url = f"{self.sandbox.base_url}/sandbox/{path}"
        resp = self.http.post(url, json=body or {}, params=params) if body is not None else None
        if resp is None:
            resp = self.http.get(url, params=params)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        return dict(resp.json())

    def send(self, user_id: int, text: str) -> dict[str, Any]:
        """The user sends ``text``; returns once the webhook answered the delivery."""
        out = self.control("send", {"user_id": user_id, "text": text, "wait": True})
        assert out["delivery"]["status"] == 200, out
        return out

    def press(self, user_id: int, message_id: int, data: str) -> str:
        body = {"user_id": user_id, "message_id": message_id, "data": data, "wait": True}
        out = self.control("press", body)
        assert out["delivery"]["status"] == 200, out
        return str(out["callback_query_id"])

    # -- what the sandbox received ---------------------------------------------------------
    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        return list(self.control(f"chats/{chat_id}/messages")["messages"])

    def requests(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.control("requests", **params)["requests"])

    def last_request_id(self) -> int:
        """The id of the newest recorded Bot API request (``since=`` it gives only later ones)."""
        return int(self.control("requests")["last_id"] or 0)

    def wait_for(self, what: str, check: Callable[[], Any], timeout_s: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(0.05)

    def ask(self, user_id: int, text: str, expect: str) -> dict[str, Any]:
        """Send ``text`` and wait for the bot's new message containing ``expect``; returns it."""
        before = {m["message_id"] for m in self.messages(user_id)}
        self.send(user_id, text)

        def answered() -> dict[str, Any] | None:
            new = [m for m in self.messages(user_id) if m["message_id"] not in before]
            return next((m for m in new if expect in m["text"]), None)

        return dict(self.wait_for(f"{expect!r} in the answer to {text!r}", answered))

    def drain(self) -> list[dict[str, Any]]:
        return UpdateShards.attach(self.settings, SHARDS, self.shard_prefix).drain(20.0)


def buttons(message: dict[str, Any]) -> list[str]:
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return [b["callback_data"] for row in rows for b in row if "callback_data" in b]


@pytest.fixture(scope="module")
def stack(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import ray

    with warnings.catch_warnings():  # Ray Serve's own pydantic models use deprecated Field kwargs
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray import serve

        from serve.app import build_app, shutdown_shards

    from actors.sink import SINK_NAME, get_sink

    tmp = tmp_path_factory.mktemp("webhook-e2e")
    # A Redis of its own: the bot keeps its state under fixed keys (users, sessions) and the
    # stack lives for the whole module, longer than a function-scoped `isolated_redis_url`.
    redis_server = EmbeddedRedis(tmp / "redis").start()
    sandbox = SandboxThread()
    port = free_port()
    serve_url = f"http://127.0.0.1:{port}"
    run_id = uuid.uuid4().hex[:8]
    shard_prefix = f"e2e:{run_id}:shard"
    sb = sandbox.handle
    settings = Settings(
        data_dir=tmp / "var",
        redis=RedisSettings(url=redis_server.url),
        lake=LakeSettings(url=str(tmp / "lake"), flush_seconds=0.5),
        ray=RaySettings(namespace=NAMESPACE, num_cpus=4),
        market=MarketSettings(exchanges=["binance", "bybit", "okx"]),
        telegram=TelegramSettings(token=sb.token, api_base=sb.base_url, public_url=serve_url),
    )
    # The bot's events go to `sink:lake`; own it here (on this module's lake) so that no
    # detached sink of ours outlives the module and catches later tests' events.
    try:
        ray.get_actor(SINK_NAME, namespace=NAMESPACE)
        sink = None
    except ValueError:
        sink = get_sink(settings)
    http = httpx.Client(timeout=30)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(
            build_app(
                {
                    "settings": settings,
                    "shards": SHARDS,
                    "shard_prefix": shard_prefix,
                    "dedup_prefix": f"e2e:{run_id}",
                    "opportunities_prefix": "opps",
                    "webhook_secret": SECRET,
                    "admin_token": "e2e-admin-token",
                }
            ),
            name="e2e",
            route_prefix="/",
        )
        stack = Stack(sb, serve_url, settings, shard_prefix, http)
        # ready = Redis, lake and both shards' bots built (getMe on the sandbox), and the
        # replica's setWebhook reached the sandbox
        stack.wait_for(
            "the webhook to be set on the sandbox",
            lambda: stack.control("webhook")["webhook"]["url"] == f"{serve_url}/telegram/webhook",
            timeout_s=30,
        )
        stack.wait_for("/readyz", lambda: http.get(f"{serve_url}/readyz").status_code == 200, timeout_s=30)
        yield stack
    finally:
        http.close()
        serve.shutdown()
        shutdown_shards(settings, SHARDS, shard_prefix)
        if sink is not None:
            try:
                ray.get(sink.shutdown.remote(), timeout=10)
            finally:
                ray.kill(sink, no_restart=True)
        sandbox.stop()
        redis_server.stop()


def test_the_webhook_is_registered_like_telegram_would(stack: Stack) -> None:
    info = stack.control("webhook")["webhook"]
    assert info["url"] == f"{stack.serve_url}/telegram/webhook"
    assert set(info["allowed_updates"]) >= {"message", "callback_query", "my_chat_member"}
    (call,) = stack.requests(method="setWebhook")
    assert call["status"] == 200 and call["params"]["secret_token"] == SECRET
    # the bots of both shards identified themselves on the sandbox
    assert all(r["status"] == 200 for r in stack.requests(method="getMe"))
    # the "/" menus are set in webhook mode too, per scope and per language: English as the
    # default, Russian for the users whose app speaks it
    calls = stack.wait_for(
        "setMyCommands",
        lambda: len(stack.requests(method="setMyCommands")) >= 6 and stack.requests(method="setMyCommands"),
    )
    assert all(c["status"] == 200 for c in calls)
    menus = {
        (c["params"]["scope"]["type"], c["params"].get("language_code")): {
            m["command"]: m["description"] for m in c["params"]["commands"]
        }
        for c in calls
    }
    for language in (None, "ru"):
        private = menus["all_private_chats", language]
        assert "start" in private and "admin" not in private
        groups = menus["all_group_chats", language]
        assert list(groups) == list(menus["all_chat_administrators", language]) == ["help", "settings"]
    assert menus["all_private_chats", None]["help"] == "this list"
    assert menus["all_private_chats", "ru"]["help"] == "этот список"
    assert menus["all_group_chats", "ru"]["settings"] == "о чём и когда присылать уведомления"  # noqa: RUF001


def test_a_conversation_through_the_webhook(stack: Stack) -> None:
    user = 300_001
    stack.control("users", {"id": user, "first_name": "Ada", "username": "ada", "language_code": "en"})
    first_id = stack.last_request_id()  # only this conversation's requests are checked below

    # session-first: a command before /start gets the "Start a session" button
    gate = stack.ask(user, "/status", "active session")
    assert buttons(gate) == ["ss"]
    assert texts.START_BUTTON in json.dumps(gate["reply_markup"], ensure_ascii=False)

    # /start: the welcome, then onboarding step 1 with its buttons
    stack.ask(user, "/start", "Hi Ada")
    step = stack.wait_for(
        "onboarding step 1/7", lambda: next((m for m in stack.messages(user) if "1/7" in m["text"]), None)
    )
    next_step = [d for d in buttons(step) if d.startswith("ob:")]
    assert next_step, buttons(step)

    # press the onboarding "next" button: the message is edited to step 2, the press answered
    query_id = stack.press(user, step["message_id"], next_step[0])
    edited = stack.wait_for(
        "onboarding step 2/7",
        lambda: next(
            (m for m in stack.messages(user) if m["message_id"] == step["message_id"] and "2/7" in m["text"]),
            None,
        ),
    )
    assert edited["edited"] is True
    callback = stack.wait_for(
        "the callback answer", lambda: stack.control("callbacks", id=query_id)["callbacks"][0]["answered"]
    )
    assert callback is True

    help_msg = stack.ask(user, "/help", "/opportunities")
    assert "/stop" in help_msg["text"] and "send /start" not in help_msg["text"]  # has a session now
    status = stack.ask(user, "/status", "Status")
    assert "Session: active until" in status["text"] and "Tier:" in status["text"]
    stack.ask(user, "/opportunities", texts.NO_OPPORTUNITIES.split(".")[0])  # no open opportunities
    stack.ask(user, "/stop", "Session ended")
    again = stack.ask(user, "/status", "active session")  # gated again after /stop
    assert buttons(again) == ["ss"]

    # what the sandbox received: real Bot API calls, all accepted, HTML rendered
    calls = stack.requests(since=first_id)  # the tests run one at a time: all of them are Ada's
    methods = {r["method"] for r in calls}
    assert {"sendMessage", "answerCallbackQuery"} <= methods
    assert methods & {"editMessageText", "editMessageReplyMarkup"}
    assert all(r["status"] == 200 for r in calls), [r for r in calls if r["status"] != 200]
    sends = [r for r in calls if r["method"] == "sendMessage"]
    assert all(r["params"].get("parse_mode") == "HTML" for r in sends)
    assert {int(r["params"]["chat_id"]) for r in sends} == {user}
    assert len(sends) == len(stack.messages(user))
    # every update of the conversation was delivered once and answered 200 by the webhook
    deliveries = stack.control("webhook")["deliveries"]
    assert all(d["status"] == 200 and d["attempts"] == 1 for d in deliveries), deliveries


def test_recorded_updates_through_the_webhook(stack: Stack) -> None:
    # a user with a session, to be blocked by the recorded `kicked` update below
    kicker = 300_002
    stack.ask(kicker, "/start", "Hi")
    stack.ask(kicker, "/status", "Session: active until")

    first_id = stack.last_request_id()
    outcomes: dict[str, dict[str, Any]] = {}
    for path in sorted(UPDATES.glob("*.json")):
        update = json.loads(path.read_text())
        if path.name == "teloxide_my_chat_member_private_bot_blocked_kicked_anonymized.json":
            # the same recorded update, once as is (user 0) and once from a user with a session
            outcomes[path.name + "#0"] = stack.control("updates", update, renumber=1, wait=1)
            mcm = update["my_chat_member"]
            mcm["chat"]["id"] = mcm["from"]["id"] = kicker
            mcm["new_chat_member"]["user"]["id"] = mcm["old_chat_member"]["user"]["id"] = int(
                stack.sandbox.token.split(":")[0]
            )
        outcomes[path.name] = stack.control("updates", update, renumber=1, wait=1)
    assert len(outcomes) == len(list(UPDATES.glob("*.json"))) + 1
    bad = {name: o["delivery"] for name, o in outcomes.items() if o["delivery"].get("status") != 200}
    assert not bad, bad
    # /sandbox/webhook reports the same outcomes: each delivered once, answered 200
    ids = {o["update_id"] for o in outcomes.values()}
    assert len(ids) == len(outcomes)
    delivered = {d["update_id"]: d for d in stack.control("webhook")["deliveries"] if d["update_id"] in ids}
    assert set(delivered) == ids
    assert all(d["status"] == 200 and d["attempts"] == 1 for d in delivered.values())

    stats = stack.drain()
    assert sum(s["received"] for s in stats) >= len(ids)
    assert all(s["errors"] == 0 and s["error"] is None for s in stats), stats

    # the private /start (no entities, as the client sent it) got the welcome
    start = json.loads((UPDATES / "nutgram_private_start_no_entities_SYNTHETIC.json").read_text())
    chat = start["message"]["chat"]["id"]
    stack.wait_for(
        "the welcome for the recorded /start",
        lambda: any("Hi Mario" in m["text"] for m in stack.messages(chat)),
    )
    # the recorded "kicked" ended the session of the user who had one
    again = stack.ask(kicker, "/status", "active session")
    assert buttons(again) == ["ss"]
    # every recorded button press was answered; the sandbox never issued those query ids, so
    # it refuses the answers as Telegram refuses stale ones — and that is the only refusal
    recorded_queries = {
        json.loads(p.read_text())["callback_query"]["id"] for p in UPDATES.glob("*callback_query*.json")
    }
    calls = stack.requests(since=first_id)
    answered = {r["params"]["callback_query_id"] for r in calls if r["method"] == "answerCallbackQuery"}
    assert recorded_queries <= answered
    failed = [r for r in calls if r["status"] >= 400]
    assert all(
        r["method"] == "answerCallbackQuery"
        and r["params"]["callback_query_id"] in recorded_queries
        and "query ID is invalid" in r["response"]["description"]
        for r in failed
    ), failed


@pytest.mark.parametrize(
    ("action", "fixture"),
    [
        ("block", "issue_y9san9-catbot-24_403_bot_was_blocked_by_the_user.json"),
        ("deactivate", "nutgram_403_user_is_deactivated.json"),
    ],
)
def test_a_refused_reply_gets_telegrams_recorded_error_body(stack: Stack, action: str, fixture: str) -> None:
    user = 300_100 if action == "block" else 300_101
    stack.ask(user, "/start", "1/7")  # the last message /start sends
    stack.drain()
    stack.control(f"users/{user}/{action}", {})
    last_id = stack.last_request_id()
    stack.send(user, "/help")  # the webhook still answers 200; the bot's reply is refused

    def refused() -> list[dict[str, Any]]:
        rows = stack.requests(method="sendMessage", since=last_id, status=403)
        return [r for r in rows if int(r["chat_id"]) == user]

    stack.wait_for(f"the bot's reply to the {action}ed user to be refused", refused)
    stats = stack.drain()
    # the /help answer is refused with Telegram's recorded body (and so is the error handler's
    # apology that follows it: every refusal carries the same body)
    records = refused()
    assert "/opportunities" in records[0]["params"]["text"]
    expected = json.loads((ERRORS / fixture).read_text())
    assert all(r["response"] == expected for r in records), records
    assert all(s["errors"] == 0 for s in stats), stats  # a refused reply does not break the shard


def test_a_stars_payment_through_the_webhook(stack: Stack) -> None:
    """/subscription → buy → the sandbox pays: the checkout and the payment travel the
    deployed webhook to the bot shards; a redelivery of the payment changes nothing."""
    import redis

    user = 300_077
    stack.control("users", {"id": user, "first_name": "Pay", "language_code": "en"})
    stack.ask(user, "/start", "Hi Pay")
    screen = stack.ask(user, "/subscription", "Your tier: Free")
    data = next(d for d in buttons(screen) if d.startswith("bu:") and d.endswith(":premium"))
    stack.press(user, screen["message_id"], data)
    invoice = stack.wait_for(
        "the invoice", lambda: next((m for m in stack.messages(user) if "invoice" in m["message"]), None)
    )
    assert invoice["message"]["invoice"]["total_amount"] == 1000
    out = stack.control("pay", {"user_id": user, "message_id": invoice["message_id"]})
    assert out["status"] == "paid" and out["delivery"]["status"] == 200, out

    def thanked() -> int:
        return sum("Thank you" in m["text"] for m in stack.messages(user))

    stack.wait_for("the thanks", thanked)
    client = redis.Redis.from_url(stack.settings.redis.url)
    try:
        assert json.loads(client.hget(f"user:{user}", "tier") or b"null") == "premium"
        expires = json.loads(client.hget(f"user:{user}", "tier_expires_at") or b"null")
        assert expires is not None
        # Telegram delivers the same payment again (a new update id): nothing changes
        again = stack.control("updates", {"message": out["message"]}, renumber=1, wait=1)
        assert again["delivery"]["status"] == 200
        time.sleep(1.0)
        assert json.loads(client.hget(f"user:{user}", "tier_expires_at") or b"null") == expires
        assert thanked() == 1
    finally:
        client.close()
    checkouts = stack.requests(method="answerPreCheckoutQuery")
    assert [(c["status"], c["params"]["ok"]) for c in checkouts][-1][0] == 200
