"""The Telegram sandbox: a Bot API server (aiohttp) with Telegram's flood limits and a control API.

`TelegramSandbox` holds the world (users, groups, what each bot sent, recorded requests) and builds
the aiohttp `web.Application`. Bot API at ``/bot<TOKEN>/<method>``; control API under ``/sandbox/``;
the chat page at ``/`` and ``/chat``. See docs/sandbox.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from core.flood import FloodLimits, FloodPolicy
from serve.sandbox.limits import (
    BLOCKED,
    CHAT_NOT_FOUND,
    DEACTIVATED,
    DELETE_NOT_FOUND,
    EDIT_NOT_FOUND,
    NOT_FOUND,
    NOT_MODIFIED,
    QUERY_INVALID,
    TEXT_EMPTY,
    UNAUTHORIZED,
    USER_NOT_FOUND,
    WEBHOOK_CONFLICT,
    ApiError,
    bad_request,
    command_entities,
    render_text,
    too_many_requests,
)
from serve.sandbox.payments import SandboxPayments

DEFAULT_TOKEN = "7000000001:SANDBOX-arbflow-local-token"
DEFAULT_USERNAME = "arbflow_sandbox_bot"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
GROUP_TYPES = frozenset({"group", "supergroup", "channel"})

_JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "entities",
        "allowed_updates",
        "commands",
        "link_preview_options",
        "reply_parameters",
        "scope",
    }
)
_INT_FIELDS = frozenset(
    {
        "message_id",
        "user_id",
        "offset",
        "limit",
        "timeout",
        "max_connections",
        "cache_time",
        "reply_to_message_id",
    }
)
_BOOL_FIELDS = frozenset(
    {
        "disable_notification",
        "show_alert",
        "drop_pending_updates",
        "protect_content",
        "disable_web_page_preview",
    }
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type="application/json")


def _coerce_chat_id(value: Any) -> int | str:
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return text


def _normalise(params: Mapping[str, Any]) -> dict[str, Any]:
    """Form and query values arrive as strings; JSON bodies as JSON. Make both look like JSON."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, str):
            if key in _JSON_FIELDS:
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    raise bad_request(f"can't parse {key} JSON object") from exc
            elif key in _INT_FIELDS:
                try:
                    value = int(value)
                except ValueError as exc:
                    raise bad_request(f"invalid {key} specified") from exc
            elif key in _BOOL_FIELDS:
                value = value.lower() in ("true", "1")
            elif key == "chat_id":
                value = _coerce_chat_id(value)
        out[key] = value
    return out


@dataclass
class SandboxUser:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_bot: bool = False
    deactivated: bool = False

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out


@dataclass
class SandboxChat:
    id: int
    type: str
    title: str | None = None
    username: str | None = None
    user: SandboxUser | None = None
    creator_id: int | None = None
    admin_ids: set[int] = field(default_factory=set)
    member_ids: set[int] = field(default_factory=set)
    bot_admin: bool = False

    @property
    def is_group(self) -> bool:
        return self.type in GROUP_TYPES

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.user is not None:
            out.update(
                {k: v for k, v in self.user.to_api().items() if k in ("first_name", "last_name", "username")}
            )
        else:
            out["title"] = self.title or f"Chat {self.id}"
            if self.username:
                out["username"] = self.username
        return out


@dataclass
class _Entry:
    message: dict[str, Any]
    from_bot: bool
    disable_notification: bool = False
    parse_mode: str | None = None
    deleted: bool = False


@dataclass
class _ChatLog:
    next_id: int = 1
    entries: dict[int, _Entry] = field(default_factory=dict)


@dataclass
class _Pending:
    update: dict[str, Any]
    done: asyncio.Future[dict[str, Any]]


@dataclass
class BotState:
    """One bot (token): its user, webhook, pending updates, flood buckets and what it sent."""

    token: str
    user: SandboxUser
    flood: FloodPolicy
    webhook_url: str = ""
    webhook_secret: str | None = None
    allowed_updates: list[str] = field(default_factory=list)
    max_connections: int = 40
    last_error_date: int | None = None
    last_error_message: str | None = None
    commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    blocked: set[int] = field(default_factory=set)
    faults: dict[int, int] = field(default_factory=dict)
    """chat id -> how many of the next sendMessage calls to it answer 500 (a Telegram outage)."""
    chats: dict[int, _ChatLog] = field(default_factory=lambda: defaultdict(_ChatLog))
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_update_id: int = 10_000_001
    pending: list[dict[str, Any]] = field(default_factory=list)
    updates_event: asyncio.Event = field(default_factory=asyncio.Event)
    webhook_queue: asyncio.Queue[_Pending] | None = None
    webhook_task: asyncio.Task[None] | None = None
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def log(self, chat_id: int) -> _ChatLog:
        return self.chats[chat_id]


@dataclass(frozen=True)
class SandboxConfig:
    """Every knob of the sandbox; the defaults are Telegram's."""

    global_rate: float = 30.0
    paid_broadcast: bool = False
    paid_tokens: frozenset[str] = frozenset()
    chat_burst: float = 3.0
    group_rate_per_min: float = 20.0
    group_burst: float = 5.0
    count_edits: bool = False
    webhook_timeout: float = 10.0
    webhook_retries: int = 3
    webhook_backoff: float = 0.5
    auto_create_chats: bool = True
    max_records: int = 200_000

    def limits_for(self, token: str) -> FloodLimits:
        paid = self.paid_broadcast or token in self.paid_tokens
        rate = max(self.global_rate, 1000.0) if paid else self.global_rate
        return FloodLimits(
            global_rate=rate,
            chat_burst=self.chat_burst,
            group_rate_per_min=self.group_rate_per_min,
            group_burst=self.group_burst,
        )


Handler = Callable[[BotState, dict[str, Any]], Awaitable[Any]]


class TelegramSandbox:
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
            self.bots[token] = BotState(token, user, FloodPolicy(self.config.limits_for(token)))
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
        page = resources.files("serve.sandbox").joinpath("static/chat.html").read_text(encoding="utf-8")
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
        decision = bot.flood.try_send(self.clock(), chat.id, is_group=chat.is_group)
        if not decision.ok:
            raise too_many_requests(decision.retry_after)

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

    # --- Bot API methods -------------------------------------------------------------------------

    async def _true(self, bot: BotState, params: dict[str, Any]) -> bool:
        if "chat_id" in params:
            self.chat(params["chat_id"])
        return True

    async def _get_me(self, bot: BotState, params: dict[str, Any]) -> dict[str, Any]:
        me = bot.user.to_api()
        me.update(
            can_join_groups=True,
            can_read_all_group_messages=False,
            supports_inline_queries=False,
            can_connect_to_business=False,
            has_main_web_app=False,
        )
        return me

    def _text(self, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        text = params.get("text")
        if text is None or text == "":
            raise bad_request(TEXT_EMPTY)
        text = str(text)
        entities = params.get("entities")
        if entities:
            if not isinstance(entities, list):
                raise bad_request("can't parse entities JSON object")
            return text, entities
        return render_text(text, params.get("parse_mode"))

    @staticmethod
    def _inline_markup(params: dict[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        if not markup:
            return None
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        rows = markup.get("inline_keyboard")
        if rows is None:
            return None  # reply keyboards and force_reply are accepted but not part of the Message
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
            )
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise bad_request('can\'t find field "text"')
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise bad_request("BUTTON_DATA_INVALID")
        return {"inline_keyboard": rows}

    async def _send_message(self, bot: BotState, params: dict[str, Any]) -> dict[str, Any]:
        chat = self.chat(params.get("chat_id"))
        if bot.faults.get(chat.id, 0) > 0:
            bot.faults[chat.id] -= 1
            raise ApiError(500, "Internal Server Error")
        self._check_reachable(bot, chat)
        text, entities = self._text(params)
        markup = self._inline_markup(params)
        self._flood(bot, chat)
        log = bot.log(chat.id)
        message_id = log.next_id
        log.next_id += 1
        msg = self._message(bot, chat, message_id, text, entities)
        if markup is not None:
            msg["reply_markup"] = markup
        log.entries[message_id] = _Entry(
            msg, True, bool(params.get("disable_notification")), params.get("parse_mode")
        )
        return msg

    def _bot_entry(self, bot: BotState, params: dict[str, Any]) -> tuple[SandboxChat, _Entry]:
        if "inline_message_id" in params:
            raise bad_request("inline messages are not supported by the sandbox")
        chat = self.chat(params.get("chat_id"))
        self._check_reachable(bot, chat)
        entry = bot.log(chat.id).entries.get(params.get("message_id", 0))
        if entry is None or entry.deleted:
            raise bad_request(EDIT_NOT_FOUND)
        if not entry.from_bot:
            raise bad_request("message can't be edited")
        return chat, entry

    def _apply_edit(
        self, bot: BotState, chat: SandboxChat, entry: _Entry, new: dict[str, Any], params: dict[str, Any]
    ) -> dict[str, Any]:
        msg = entry.message
        unchanged = all(msg.get(k) == v for k, v in new.items() if v is not None) and all(
            k in msg for k, v in new.items() if v is not None
        )
        removed = [k for k, v in new.items() if v is None and k in msg]
        if unchanged and not removed:
            raise bad_request(NOT_MODIFIED)
        if self.config.count_edits:
            self._flood(bot, chat)
        for key, value in new.items():
            if value is None:
                msg.pop(key, None)
            else:
                msg[key] = value
        msg["edit_date"] = int(time.time())
        if "parse_mode" in params:
            entry.parse_mode = params.get("parse_mode")
        return msg

    async def _edit_message_text(self, bot: BotState, params: dict[str, Any]) -> dict[str, Any]:
        chat, entry = self._bot_entry(bot, params)
        text, entities = self._text(params)
        markup = self._inline_markup(params)
        return self._apply_edit(
            bot, chat, entry, {"text": text, "entities": entities or None, "reply_markup": markup}, params
        )

    async def _edit_message_reply_markup(self, bot: BotState, params: dict[str, Any]) -> dict[str, Any]:
        chat, entry = self._bot_entry(bot, params)
        return self._apply_edit(bot, chat, entry, {"reply_markup": self._inline_markup(params)}, params)

    async def _delete_message(self, bot: BotState, params: dict[str, Any]) -> bool:
        chat = self.chat(params.get("chat_id"))
        entry = bot.log(chat.id).entries.get(params.get("message_id", 0))
        if entry is None or entry.deleted:
            raise bad_request(DELETE_NOT_FOUND)
        entry.deleted = True
        return True

    async def _answer_callback_query(self, bot: BotState, params: dict[str, Any]) -> bool:
        query = bot.callbacks.get(str(params.get("callback_query_id", "")))
        if query is None or query["answered"]:
            raise bad_request(QUERY_INVALID)
        query["answered"] = True
        query["answer"] = {k: params[k] for k in ("text", "show_alert", "url", "cache_time") if k in params}
        return True

    async def _set_webhook(self, bot: BotState, params: dict[str, Any]) -> bool:
        url = str(params.get("url", "") or "")
        if url and not url.startswith(("http://", "https://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and secret != "":
            secret = str(secret)
            if len(secret) > 256 or not all(c.isalnum() or c in "_-" for c in secret):
                raise bad_request("bad webhook: secret token contains unallowed characters")
        bot.webhook_url = url
        bot.webhook_secret = secret or None
        allowed = params.get("allowed_updates")
        if allowed is not None:
            bot.allowed_updates = list(allowed)
        bot.max_connections = int(params.get("max_connections") or 40)
        bot.last_error_date = bot.last_error_message = None
        if params.get("drop_pending_updates"):
            bot.pending.clear()
        if url:
            for update in bot.pending:
                self._enqueue_webhook(bot, update)
            bot.pending.clear()
        return True

    async def _delete_webhook(self, bot: BotState, params: dict[str, Any]) -> bool:
        bot.webhook_url = ""
        bot.webhook_secret = None
        if params.get("drop_pending_updates"):
            bot.pending.clear()
        return True

    async def _get_webhook_info(self, bot: BotState, params: dict[str, Any]) -> dict[str, Any]:
        queued = bot.webhook_queue.qsize() if bot.webhook_queue is not None else 0
        info: dict[str, Any] = {
            "url": bot.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(bot.pending) + queued,
        }
        if bot.webhook_url:
            info["max_connections"] = bot.max_connections
            if bot.allowed_updates:
                info["allowed_updates"] = bot.allowed_updates
        if bot.last_error_date is not None:
            info["last_error_date"] = bot.last_error_date
            info["last_error_message"] = bot.last_error_message
        return info

    async def _get_updates(self, bot: BotState, params: dict[str, Any]) -> list[dict[str, Any]]:
        if bot.webhook_url:
            raise ApiError(409, WEBHOOK_CONFLICT)
        offset = int(params.get("offset") or 0)
        limit = max(1, min(100, int(params.get("limit") or 100)))
        timeout = max(0, min(50, int(params.get("timeout") or 0)))
        allowed = params.get("allowed_updates")
        if allowed is not None:
            bot.allowed_updates = list(allowed)
        if offset:
            bot.pending = [u for u in bot.pending if u["update_id"] >= offset]
        if not bot.pending and timeout:
            bot.updates_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bot.updates_event.wait(), timeout)
        return bot.pending[:limit]

    async def _get_chat_member(self, bot: BotState, params: dict[str, Any]) -> dict[str, Any]:
        chat = self.chat(params.get("chat_id"))
        user_id = int(params.get("user_id") or 0)
        if user_id == bot.user.id:
            user = bot.user
        else:
            found = self.users.get(user_id)
            if found is None:
                raise bad_request(USER_NOT_FOUND)
            user = found
        return member_json(user, self._status(bot, chat, user.id))

    def _status(self, bot: BotState, chat: SandboxChat, user_id: int) -> str:
        if chat.user is not None:
            if user_id == bot.user.id:
                return "kicked" if chat.user.id in bot.blocked else "member"
            return "member" if user_id == chat.id else "left"
        if user_id == bot.user.id:
            return "administrator" if chat.bot_admin else "member"
        if user_id == chat.creator_id:
            return "creator"
        if user_id in chat.admin_ids:
            return "administrator"
        return "member" if user_id in chat.member_ids else "left"

    async def _get_chat(self, bot: BotState, params: dict[str, Any]) -> dict[str, Any]:
        chat = self.chat(params.get("chat_id"))
        info = chat.to_api()
        info.update(
            accent_color_id=0,
            max_reaction_count=11,
            accepted_gift_types={
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        )
        return info

    @staticmethod
    def _scope_key(params: dict[str, Any]) -> str:
        scope = params.get("scope") or {"type": "default"}
        return f"{json.dumps(scope, sort_keys=True)}|{params.get('language_code') or ''}"

    async def _set_my_commands(self, bot: BotState, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not command.get("command") or not command.get("description"):
                what = (
                    "command description"
                    if isinstance(command, dict) and command.get("command")
                    else "command"
                )
                raise bad_request(f"{what} is empty")
        bot.commands[self._scope_key(params)] = commands
        return True

    async def _get_my_commands(self, bot: BotState, params: dict[str, Any]) -> list[dict[str, Any]]:
        return bot.commands.get(self._scope_key(params), [])

    async def _delete_my_commands(self, bot: BotState, params: dict[str, Any]) -> bool:
        bot.commands.pop(self._scope_key(params), None)
        return True

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
            bot.flood = FloodPolicy(self.config.limits_for(token))
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

    # --- control API ---------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise _control_error(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise _control_error(400, "the body must be a JSON object")
        return body

    def _bot_for(self, request: web.Request, body: Mapping[str, Any] | None = None) -> BotState:
        token = (body or {}).get("token") or request.query.get("token")
        return self.bot(token)

    async def _c_requests(self, request: web.Request) -> web.Response:
        q = request.query
        rows: list[dict[str, Any]] = self.records
        if q.get("chat_id"):
            rows = self._by_chat.get(_coerce_chat_id(q["chat_id"]), [])
        if q.get("method"):
            method = q["method"].lower()
            rows = (
                self._by_method.get(method, [])
                if rows is self.records
                else [r for r in rows if r["method"].lower() == method]
            )
        if q.get("since"):
            rows = rows[bisect_right(rows, int(q["since"]), key=lambda r: r["id"]) :]
        if q.get("status"):
            rows = [r for r in rows if r["status"] == int(q["status"])]
        limit = int(q.get("limit", 10_000))
        rows = rows[:limit]
        return _json_response({"ok": True, "requests": rows, "last_id": rows[-1]["id"] if rows else None})

    async def _c_stats(self, _request: web.Request) -> web.Response:
        by_method = {m: {str(s): n for s, n in statuses.items()} for m, statuses in self.stats.items()}
        by_status: dict[str, int] = defaultdict(int)
        for statuses in self.stats.values():
            for s, n in statuses.items():
                by_status[str(s)] += n
        bots = {
            bot.user.username: {
                "delivered": sum(1 for d in bot.deliveries if d.get("status") == 200),
                "failed": sum(1 for d in bot.deliveries if d.get("status") != 200),
                "pending": len(bot.pending),
                "global_rate": bot.flood.limits.global_rate,
            }
            for bot in self.bots.values()
        }
        return _json_response(
            {
                "ok": True,
                "requests": len(self.records),
                "by_method": by_method,
                "by_status": by_status,
                "too_many_requests": self.too_many,
                "bots": bots,
            }
        )

    async def _c_users(self, _request: web.Request) -> web.Response:
        return _json_response({"ok": True, "users": [u.to_api() for u in self.users.values()]})

    async def _c_create_user(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        users = body.get("users")
        specs: list[dict[str, Any]] = users if isinstance(users, list) else [body]
        created = []
        for spec in specs:
            user = self.add_user(
                spec.get("id"),
                spec.get("first_name"),
                last_name=spec.get("last_name"),
                username=spec.get("username"),
                language_code=spec.get("language_code"),
                deactivated=bool(spec.get("deactivated", False)),
            )
            created.append(user.to_api())
        if "users" in body:
            return _json_response({"ok": True, "users": created})
        return _json_response({"ok": True, "user": created[0]})

    async def _c_user_action(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        bot = self._bot_for(request, body)
        user = self.user(int(request.match_info["id"]))
        action = request.match_info["action"]
        if action == "block":
            bot.blocked.add(user.id)
        elif action == "unblock":
            bot.blocked.discard(user.id)
        elif action == "deactivate":
            user.deactivated = True
        elif action == "reactivate":
            user.deactivated = False
        else:
            raise _control_error(404, f"unknown action {action!r}: block, unblock, deactivate, reactivate")
        return _json_response(
            {
                "ok": True,
                "user": user.to_api(),
                "blocked": user.id in bot.blocked,
                "deactivated": user.deactivated,
            }
        )

    async def _c_groups(self, _request: web.Request) -> web.Response:
        return _json_response({"ok": True, "groups": [_group_json(g) for g in self.groups.values()]})

    async def _c_create_group(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        try:
            group = self.add_group(
                body.get("title", ""),
                chat_id=body.get("id"),
                type=body.get("type", "supergroup"),
                admin_ids=body.get("admin_ids", []),
                member_ids=body.get("member_ids", []),
                creator_id=body.get("creator_id"),
                username=body.get("username"),
                bot_admin=bool(body.get("bot_admin", False)),
            )
        except ValueError as exc:
            raise _control_error(400, str(exc)) from None
        return _json_response({"ok": True, "chat": _group_json(group)})

    async def _c_messages(self, request: web.Request) -> web.Response:
        bot = self._bot_for(request)
        chat_id = int(request.match_info["chat_id"])
        include_users = request.query.get("all", "") in ("1", "true")
        log = bot.chats.get(chat_id)
        rows = []
        for entry in log.entries.values() if log else []:
            if entry.deleted or not (entry.from_bot or include_users):
                continue
            rows.append(
                {
                    "message_id": entry.message["message_id"],
                    "from_bot": entry.from_bot,
                    "text": entry.message.get("text", ""),
                    "html": entities_to_html(
                        entry.message.get("text", ""), entry.message.get("entities", [])
                    ),
                    "reply_markup": entry.message.get("reply_markup"),
                    "disable_notification": entry.disable_notification,
                    "edited": "edit_date" in entry.message,
                    "message": entry.message,
                }
            )
        return _json_response({"ok": True, "chat_id": chat_id, "messages": rows})

    async def _deliver_response(
        self,
        body: Mapping[str, Any],
        update: dict[str, Any],
        done: asyncio.Future[dict[str, Any]],
        **extra: Any,
    ) -> web.Response:
        out: dict[str, Any] = {"ok": True, "update_id": update.get("update_id"), **extra}
        if body.get("wait"):
            timeout = (self.config.webhook_timeout + self.config.webhook_backoff * 8) * (
                self.config.webhook_retries + 1
            )
            out["delivery"] = await asyncio.wait_for(asyncio.shield(done), timeout)
        return _json_response(out)

    async def _c_send(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        bot = self._bot_for(request, body)
        if "user_id" not in body or not body.get("text"):
            raise _control_error(400, "send needs user_id and text")
        user = self.user(int(body["user_id"]))
        chat = self.chat(int(body.get("chat_id") or user.id))
        msg = self.user_message(bot, user, chat, str(body["text"]))
        kind = "channel_post" if chat.type == "channel" else "message"
        update = {kind: msg}
        done = self.emit(bot, update)
        update_id = bot.next_update_id - 1
        return await self._deliver_response(body, {"update_id": update_id}, done, message=msg)

    async def _c_press(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        bot = self._bot_for(request, body)
        for key in ("user_id", "message_id", "data"):
            if key not in body:
                raise _control_error(400, f"press needs {key}")
        user = self.user(int(body["user_id"]))
        chat = self.chat(int(body.get("chat_id") or user.id))
        entry = bot.log(chat.id).entries.get(int(body["message_id"]))
        if entry is None or entry.deleted or not entry.from_bot:
            raise _control_error(400, "no such message from the bot in this chat")
        data = str(body["data"])
        keyboard = (entry.message.get("reply_markup") or {}).get("inline_keyboard", [])
        offered = {b.get("callback_data") for row in keyboard for b in row}
        if data not in offered and not body.get("force"):
            message_id = entry.message["message_id"]
            raise _control_error(400, f"no button with callback_data {data!r} on message {message_id}")
        query_id = str(next(self._callback_ids))
        bot.callbacks[query_id] = {
            "id": query_id,
            "user_id": user.id,
            "chat_id": chat.id,
            "message_id": entry.message["message_id"],
            "data": data,
            "answered": False,
            "answer": None,
        }
        query = {
            "id": query_id,
            "from": user.to_api(),
            "message": entry.message,
            "chat_instance": str(abs(hash((bot.user.id, chat.id))) % 10**19),
            "data": data,
        }
        done = self.emit(bot, {"callback_query": query})
        return await self._deliver_response(
            body, {"update_id": bot.next_update_id - 1}, done, callback_query_id=query_id
        )

    async def _c_member(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        bot = self._bot_for(request, body)
        if "user_id" not in body or "status" not in body:
            raise _control_error(400, "member needs user_id and status (kicked, member, administrator, left)")
        user = self.user(int(body["user_id"]))
        chat = self.chat(int(body.get("chat_id") or user.id))
        status = str(body["status"])
        old = str(body.get("old_status") or self._status(bot, chat, bot.user.id))
        if chat.user is not None:
            if status == "kicked":
                bot.blocked.add(chat.id)
            else:
                bot.blocked.discard(chat.id)
        else:
            chat.bot_admin = status == "administrator"
        update = {
            "my_chat_member": {
                "chat": chat.to_api(),
                "from": user.to_api(),
                "date": int(time.time()),
                "old_chat_member": member_json(bot.user, old),
                "new_chat_member": member_json(bot.user, status),
            }
        }
        done = self.emit(bot, update)
        return await self._deliver_response(
            body, {"update_id": bot.next_update_id - 1}, done, my_chat_member=update["my_chat_member"]
        )

    async def _c_post_update(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        bot = self._bot_for(request)
        update = dict(body)
        if request.query.get("renumber", "") in ("1", "true"):
            update.pop("update_id", None)
        done = self.emit(bot, update, filter_allowed=False)
        update_id = update.get("update_id", bot.next_update_id - 1)
        if request.query.get("wait", "") in ("1", "true"):
            body = {"wait": True}
        return await self._deliver_response(body, {"update_id": update_id}, done)

    async def _c_callbacks(self, request: web.Request) -> web.Response:
        bot = self._bot_for(request)
        rows = list(bot.callbacks.values())
        if request.query.get("id"):
            rows = [r for r in rows if r["id"] == request.query["id"]]
        return _json_response({"ok": True, "callbacks": rows})

    async def _c_webhook(self, request: web.Request) -> web.Response:
        bot = self._bot_for(request)
        info = await self._get_webhook_info(bot, {})
        return _json_response({"ok": True, "webhook": info, "deliveries": bot.deliveries[-1000:]})

    async def _c_faults(self, request: web.Request) -> web.Response:
        """``{"chat_id": N, "count": K}``: the next K sendMessage calls to chat N answer 500."""
        body = await self._body(request)
        bot = self._bot_for(request, body)
        if "chat_id" not in body:
            raise _control_error(400, "faults needs chat_id (and count, default 1)")
        bot.faults[int(body["chat_id"])] = int(body.get("count", 1))
        return _json_response({"ok": True, "faults": {str(k): v for k, v in bot.faults.items() if v}})

    async def _c_reset(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        self.reset(webhook=bool(body.get("webhook", False)))
        return _json_response({"ok": True})


def _control_error(status: int, message: str) -> web.HTTPException:
    cls = web.HTTPNotFound if status == 404 else web.HTTPBadRequest
    return cls(text=_dumps({"ok": False, "error": message}).decode(), content_type="application/json")


def _group_json(group: SandboxChat) -> dict[str, Any]:
    return {
        **group.to_api(),
        "creator_id": group.creator_id,
        "admin_ids": sorted(group.admin_ids),
        "member_ids": sorted(group.member_ids),
        "bot_admin": group.bot_admin,
    }


_ADMIN_RIGHTS = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
    "can_send_welcome_messages",
)


def member_json(user: SandboxUser, status: str) -> dict[str, Any]:
    """A ChatMember object of `status` for `user`."""
    out: dict[str, Any] = {"user": user.to_api(), "status": status}
    if status == "creator":
        out["is_anonymous"] = False
    elif status == "administrator":
        out.update({"can_be_edited": False, "is_anonymous": False}, **dict.fromkeys(_ADMIN_RIGHTS, True))
    elif status == "kicked":
        out["until_date"] = 0
    return out


_HTML_TAGS = {
    "bold": ("<b>", "</b>"),
    "italic": ("<i>", "</i>"),
    "underline": ("<u>", "</u>"),
    "strikethrough": ("<s>", "</s>"),
    "spoiler": ('<span class="spoiler">', "</span>"),
    "code": ("<code>", "</code>"),
    "pre": ("<pre>", "</pre>"),
    "blockquote": ("<blockquote>", "</blockquote>"),
    "expandable_blockquote": ("<blockquote>", "</blockquote>"),
}


def entities_to_html(text: str, entities: Sequence[Mapping[str, Any]]) -> str:
    """Safe HTML for the chat page: `text` escaped, entities as tags, links only http(s)/tg."""
    units = text.encode("utf-16-le")
    opens: dict[int, list[str]] = defaultdict(list)
    closes: dict[int, list[str]] = defaultdict(list)
    for entity in sorted(entities, key=lambda e: (e.get("offset", 0), -e.get("length", 0))):
        start, end = int(entity.get("offset", 0)), int(entity.get("offset", 0)) + int(entity.get("length", 0))
        kind = entity.get("type")
        if kind == "text_link":
            url = str(entity.get("url", ""))
            if not url.startswith(("http://", "https://", "tg://")):
                continue
            tags = (f'<a href="{html.escape(url)}" target="_blank" rel="noopener">', "</a>")
        elif kind in _HTML_TAGS:
            tags = _HTML_TAGS[kind]
        else:
            continue
        opens[start].append(tags[0])
        closes[end].insert(0, tags[1])
    out: list[str] = []
    cuts = sorted({0, len(units) // 2, *opens, *closes})
    for i, pos in enumerate(cuts):
        out.extend(closes.get(pos, []))
        out.extend(opens.get(pos, []))
        if i + 1 < len(cuts):
            chunk = units[pos * 2 : cuts[i + 1] * 2].decode("utf-16-le", errors="replace")
            out.append(html.escape(chunk))
    return "".join(out)
