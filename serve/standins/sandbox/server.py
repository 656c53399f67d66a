"""The Telegram sandbox: a Bot API server (aiohttp) with Telegram's flood limits and a control API.

`TelegramSandbox` holds the world (users, groups, what each bot sent, recorded requests) and builds
the aiohttp `web.Application`. Bot API at ``/bot<TOKEN>/<method>``; control API under ``/sandbox/``;
the chat page at ``/`` and ``/chat``. See docs/sandbox.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from serve.standins.sandbox.control import ControlApi
from serve.standins.sandbox.flood import SandboxFlood
from serve.standins.sandbox.limits import (
    BLOCKED,
    CHAT_NOT_FOUND,
    DEACTIVATED,
    NOT_FOUND,
    UNAUTHORIZED,
    USER_NOT_FOUND,
    ApiError,
    bad_request,
    command_entities,
    too_many_requests,
)
from serve.standins.sandbox.payments import SandboxPayments
from serve.standins.sandbox.state import (
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    GROUP_TYPES,
    SECRET_HEADER,
    BotState,
    Handler,
    SandboxChat,
    SandboxConfig,
    SandboxUser,
    _dumps,
    _Entry,
    _json_response,
    _normalise,
    _Pending,
)


class TelegramSandbox(ControlApi):
    """The Bot API sandbox. `clock` (seconds, monotonic) drives the flood limits and can be injected."""

    def __init__(
        self,
        tokens: Sequence[str] | Mapping[str, str] | None = None,
        *,
        config: SandboxConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SandboxConfig()
        self.clock = clock
        if tokens is None:
            tokens = [DEFAULT_TOKEN]
        if not isinstance(tokens, Mapping):
            tokens = {
                t: DEFAULT_USERNAME if i == 0 else f"arbflow_sandbox_{i + 1}_bot"
                for i, t in enumerate(tokens)
            }
        if not tokens:
            raise ValueError("the sandbox needs at least one bot token")
        self.bots: dict[str, BotState] = {}
        for token, username in tokens.items():
            head = token.split(":", 1)[0]
            if not head.isdigit() or ":" not in token:
                raise ValueError(f"a bot token looks like 123456:ABC…, got {token!r}")
            user = SandboxUser(int(head), first_name="arbflow sandbox", username=username, is_bot=True)
            self.bots[token] = BotState(token, user, SandboxFlood(self.config.limits_for(token)))
        self.tokens = list(self.bots)
        self.users: dict[int, SandboxUser] = {}
        self.groups: dict[int, SandboxChat] = {}
        self._user_ids = itertools.count(100_000_001)
        self._group_ids = itertools.count(1_000_000_001)
        self._callback_ids = itertools.count(4_000_000_000_000_000_001)
        self.records: list[dict[str, Any]] = []
        self._record_ids = itertools.count(1)
        self._by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._by_chat: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        self.stats: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.too_many = 0
        self._session: ClientSession | None = None
        self.payments = SandboxPayments(self)
        self._methods: dict[str, tuple[str, Handler]] = {
            name.lower(): (name, handler)
            for name, handler in {
                "getMe": self._get_me,
                "sendMessage": self._send_message,
                "editMessageText": self._edit_message_text,
                "editMessageReplyMarkup": self._edit_message_reply_markup,
                "deleteMessage": self._delete_message,
                "answerCallbackQuery": self._answer_callback_query,
                "setWebhook": self._set_webhook,
                "deleteWebhook": self._delete_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "getUpdates": self._get_updates,
                "getChatMember": self._get_chat_member,
                "getChat": self._get_chat,
                "setMyCommands": self._set_my_commands,
                "getMyCommands": self._get_my_commands,
                "deleteMyCommands": self._delete_my_commands,
                "sendChatAction": self._true,
                "setMyDescription": self._true,
                "setMyShortDescription": self._true,
                "setChatMenuButton": self._true,
                "sendInvoice": self.payments.send_invoice,
                "answerPreCheckoutQuery": self.payments.answer_pre_checkout_query,
                "refundStarPayment": self.payments.refund_star_payment,
            }.items()
        }

    # --- the aiohttp application ----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2**20 * 8)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/", self._chat_page)
        app.router.add_get("/chat", self._chat_page)
        r = app.router
        r.add_get("/sandbox/requests", self._c_requests)
        r.add_get("/sandbox/stats", self._c_stats)
        r.add_get("/sandbox/bots", self._c_bots)
        r.add_get("/sandbox/users", self._c_users)
        r.add_post("/sandbox/users", self._c_create_user)
        r.add_post("/sandbox/users/{id}/{action}", self._c_user_action)
        r.add_get("/sandbox/groups", self._c_groups)
        r.add_post("/sandbox/groups", self._c_create_group)
        r.add_get("/sandbox/chats/{chat_id}/messages", self._c_messages)
        r.add_post("/sandbox/send", self._c_send)
        r.add_post("/sandbox/press", self._c_press)
        r.add_post("/sandbox/member", self._c_member)
        r.add_post("/sandbox/updates", self._c_post_update)
        r.add_get("/sandbox/callbacks", self._c_callbacks)
        r.add_get("/sandbox/webhook", self._c_webhook)
        r.add_post("/sandbox/reset", self._c_reset)
        r.add_post("/sandbox/faults", self._c_faults)
        r.add_post("/sandbox/pay", self.payments.c_pay)
        r.add_get("/sandbox/payments", self.payments.c_payments)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=self.config.webhook_timeout))

    async def _on_cleanup(self, _app: web.Application) -> None:
        for bot in self.bots.values():
            if bot.webhook_task is not None:
                bot.webhook_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bot.webhook_task
                bot.webhook_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _chat_page(self, _request: web.Request) -> web.Response:
        page = (
            resources.files("serve.standins.sandbox").joinpath("static/chat.html").read_text(encoding="utf-8")
        )
        return web.Response(text=page, content_type="text/html")

    # --- Bot API ---------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        name = request.match_info["method"]
        bot = self.bots.get(token)
        if bot is None:
            return _json_response(UNAUTHORIZED, 401)
        method = self._methods.get(name.lower())
        if method is None:
            self._record(bot, name, {}, 404, NOT_FOUND)
            return _json_response(NOT_FOUND, 404)
        canonical, handler = method
        try:
            params = await self._read_params(request)
        except ApiError as exc:
            body = exc.body()
            self._record(bot, canonical, {}, exc.code, body)
            return _json_response(body, exc.code)
        return _json_response(*await self.call(bot, canonical, handler, params))

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        if request.method == "GET" or not request.can_read_body:
            return _normalise(request.query)
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError as exc:
                raise bad_request("can't parse JSON") from exc
            if not isinstance(body, dict):
                raise bad_request("parameters must be a JSON object")
            return _normalise({**request.query, **body})
        form = await request.post()
        params: dict[str, Any] = dict(request.query)
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
        return _normalise(params)

    async def call(
        self, bot: BotState, method: str, handler: Handler, params: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        """Run one Bot API call: ``(body, status)``, recorded."""
        try:
            result = await handler(bot, params)
            body: dict[str, Any] = {"ok": True, "result": result}
            status = 200
        except ApiError as exc:
            body, status = exc.body(), exc.code
        self._record(bot, method, params, status, body)
        return body, status

    def _record(self, bot: BotState, method: str, params: dict[str, Any], status: int, body: Any) -> None:
        chat_id = params.get("chat_id")
        record = {
            "id": next(self._record_ids),
            "time": time.time(),
            "bot": bot.user.username,
            "method": method,
            "params": params,
            "chat_id": chat_id,
            "status": status,
            "response": body,
        }
        self.records.append(record)
        self._by_method[method.lower()].append(record)
        if chat_id is not None:
            self._by_chat[chat_id].append(record)
        self.stats[method][status] += 1
        if status == 429:
            self.too_many += 1
        if len(self.records) > self.config.max_records:
            self._trim_records()

    def _trim_records(self) -> None:
        self.records = self.records[len(self.records) // 10 :]
        self._by_method.clear()
        self._by_chat.clear()
        for record in self.records:
            self._by_method[record["method"].lower()].append(record)
            if record["chat_id"] is not None:
                self._by_chat[record["chat_id"]].append(record)

    # --- the world -------------------------------------------------------------------------------

    def add_user(
        self,
        user_id: int | None = None,
        first_name: str | None = None,
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        deactivated: bool = False,
    ) -> SandboxUser:
        uid = int(user_id) if user_id is not None else next(self._user_ids)
        user = SandboxUser(
            uid,
            first_name or f"User {uid}",
            last_name=last_name,
            username=username,
            language_code=language_code,
            deactivated=deactivated,
        )
        self.users[uid] = user
        return user

    def add_group(
        self,
        title: str = "",
        *,
        chat_id: int | None = None,
        type: str = "supergroup",
        admin_ids: Sequence[int] = (),
        member_ids: Sequence[int] = (),
        creator_id: int | None = None,
        username: str | None = None,
        bot_admin: bool = False,
    ) -> SandboxChat:
        if type not in GROUP_TYPES:
            raise ValueError(f"a group is one of {sorted(GROUP_TYPES)}, got {type!r}")
        if chat_id is None:
            n = next(self._group_ids)
            chat_id = -n if type == "group" else -(10**12 + n)
        chat = SandboxChat(
            int(chat_id),
            type,
            title=title or f"Group {chat_id}",
            username=username,
            creator_id=creator_id,
            admin_ids={int(a) for a in admin_ids},
            member_ids={int(m) for m in member_ids} | {int(a) for a in admin_ids},
            bot_admin=bot_admin,
        )
        if creator_id is not None:
            chat.member_ids.add(int(creator_id))
        self.groups[chat.id] = chat
        return chat

    def user(self, user_id: int) -> SandboxUser:
        found = self.users.get(user_id)
        if found is None:
            if not self.config.auto_create_chats:
                raise bad_request(USER_NOT_FOUND)
            found = self.add_user(user_id)
        return found

    def chat(self, chat_id: Any) -> SandboxChat:
        """The chat behind a ``chat_id`` parameter, or 400 "chat not found"."""
        if chat_id is None or chat_id == "":
            raise bad_request(CHAT_NOT_FOUND)
        if isinstance(chat_id, str):
            if chat_id.startswith("@"):
                name = chat_id[1:].lower()
                for group in self.groups.values():
                    if group.username and group.username.lower() == name:
                        return group
            raise bad_request(CHAT_NOT_FOUND)
        if chat_id < 0:
            known = self.groups.get(chat_id)
            if known is not None:
                return known
            if not self.config.auto_create_chats:
                raise bad_request(CHAT_NOT_FOUND)
            kind = "supergroup" if chat_id <= -(10**12) else "group"
            return self.add_group(chat_id=chat_id, type=kind)
        user = self.users.get(chat_id)
        if user is None:
            if not self.config.auto_create_chats:
                raise bad_request(CHAT_NOT_FOUND)
            user = self.add_user(chat_id)
        return SandboxChat(user.id, "private", user=user)

    def bot(self, token: str | None = None) -> BotState:
        if token is None:
            return self.bots[self.tokens[0]]
        try:
            return self.bots[token]
        except KeyError:
            raise web.HTTPNotFound(text=f"no bot with token {token!r}") from None

    def _check_reachable(self, bot: BotState, chat: SandboxChat) -> None:
        if chat.user is not None:
            if chat.user.deactivated:
                raise ApiError.from_body(DEACTIVATED)
            if chat.user.id in bot.blocked:
                raise ApiError.from_body(BLOCKED)

    def _flood(self, bot: BotState, chat: SandboxChat) -> None:
        refusal = bot.flood.send(self.clock(), chat.id, is_group=chat.is_group)
        if refusal is not None:
            raise too_many_requests(refusal.retry_after)

    def _message(
        self, bot: BotState, chat: SandboxChat, message_id: int, text: str, entities: list[dict[str, Any]]
    ) -> dict[str, Any]:
        msg: dict[str, Any] = {"message_id": message_id}
        if chat.type == "channel":
            msg["sender_chat"] = chat.to_api()
        else:
            msg["from"] = bot.user.to_api()
        msg["chat"] = chat.to_api()
        msg["date"] = int(time.time())
        msg["text"] = text
        if entities:
            msg["entities"] = entities
        return msg

    # --- updates: webhook delivery and getUpdates -------------------------------------------------

    def emit(
        self, bot: BotState, update: dict[str, Any], *, filter_allowed: bool = True
    ) -> asyncio.Future[dict[str, Any]]:
        """Give `update` to the bot: POST it to its webhook, or queue it for getUpdates.

        An ``update_id`` is assigned when the update has none. The future resolves with the
        delivery outcome (``{"status": 200, "attempts": 1}``, or ``{"queued": true}`` for polling).
        """
        if "update_id" not in update:
            update = {"update_id": bot.next_update_id, **update}
            bot.next_update_id += 1
        else:
            bot.next_update_id = max(bot.next_update_id, int(update["update_id"]) + 1)
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        kind = next((k for k in update if k != "update_id"), "")
        if filter_allowed and bot.allowed_updates and kind not in bot.allowed_updates:
            done.set_result({"update_id": update["update_id"], "filtered": True})
            return done
        if bot.webhook_url:
            return self._enqueue_webhook(bot, update, done)
        bot.pending.append(update)
        bot.updates_event.set()
        done.set_result({"update_id": update["update_id"], "queued": True})
        return done

    def _enqueue_webhook(
        self, bot: BotState, update: dict[str, Any], done: asyncio.Future[dict[str, Any]] | None = None
    ) -> asyncio.Future[dict[str, Any]]:
        if done is None:
            done = asyncio.get_running_loop().create_future()
        if bot.webhook_queue is None:
            bot.webhook_queue = asyncio.Queue()
        if bot.webhook_task is None or bot.webhook_task.done():
            bot.webhook_task = asyncio.create_task(self._webhook_worker(bot, bot.webhook_queue))
        bot.webhook_queue.put_nowait(_Pending(update, done))
        return done

    async def _webhook_worker(self, bot: BotState, queue: asyncio.Queue[_Pending]) -> None:
        """Deliver in order, one at a time; non-2xx and errors are retried with exponential backoff."""
        while True:
            item = await queue.get()
            outcome = await self._deliver(bot, item.update)
            bot.deliveries.append(outcome)
            if not item.done.done():
                item.done.set_result(outcome)

    async def _deliver(self, bot: BotState, update: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=self.config.webhook_timeout))
        headers = {"Content-Type": "application/json"}
        if bot.webhook_secret:
            headers[SECRET_HEADER] = bot.webhook_secret
        body = _dumps(update)
        status: int | None = None
        error = ""
        attempts = 0
        for attempt in range(self.config.webhook_retries + 1):
            if attempt:
                await asyncio.sleep(self.config.webhook_backoff * 2 ** (attempt - 1))
            if not bot.webhook_url:
                break
            attempts += 1
            try:
                async with self._session.post(bot.webhook_url, data=body, headers=headers) as resp:
                    status = resp.status
                    reply = await resp.read()
                    if 200 <= status < 300:
                        await self._webhook_reply(bot, resp.content_type, reply)
                        return {"update_id": update["update_id"], "status": status, "attempts": attempts}
                    error = f"Wrong response from the webhook: {status} {resp.reason}"
            except Exception as exc:  # any failure is a failed delivery, retried
                status = None
                error = f"Connection failed: {type(exc).__name__}"
            bot.last_error_date = int(time.time())
            bot.last_error_message = error
        return {"update_id": update["update_id"], "status": status, "attempts": attempts, "error": error}

    async def _webhook_reply(self, bot: BotState, content_type: str, reply: bytes) -> None:
        """A webhook may answer with a method call in its body, as Telegram allows."""
        if content_type != "application/json" or not reply:
            return
        with contextlib.suppress(ValueError):
            payload = json.loads(reply)
            if isinstance(payload, dict) and isinstance(payload.get("method"), str):
                method = self._methods.get(payload["method"].lower())
                if method is not None:
                    params = _normalise({k: v for k, v in payload.items() if k != "method"})
                    await self.call(bot, method[0], method[1], params)

    # --- acting as users ---------------------------------------------------------------------------

    def user_message(self, bot: BotState, user: SandboxUser, chat: SandboxChat, text: str) -> dict[str, Any]:
        log = bot.log(chat.id)
        message_id = log.next_id
        log.next_id += 1
        msg: dict[str, Any] = {
            "message_id": message_id,
            "from": user.to_api(),
            "chat": chat.to_api(),
            "date": int(time.time()),
            "text": text,
        }
        entities = command_entities(text)
        if entities:
            msg["entities"] = entities
        log.entries[message_id] = _Entry(msg, False)
        return msg

    def reset(self, *, webhook: bool = False) -> None:
        """Forget users, groups, messages, records and flood state (the bots' webhooks stay unless asked)."""
        self.users.clear()
        self.groups.clear()
        self.records.clear()
        self._by_method.clear()
        self._by_chat.clear()
        self.stats.clear()
        self.too_many = 0
        self.payments.reset()
        for token, bot in self.bots.items():
            bot.flood = SandboxFlood(self.config.limits_for(token))
            bot.blocked.clear()
            bot.faults.clear()
            bot.chats.clear()
            bot.callbacks.clear()
            bot.pending.clear()
            bot.deliveries.clear()
            if webhook:
                bot.webhook_url = ""
                bot.webhook_secret = None
                bot.allowed_updates = []
