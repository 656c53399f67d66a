"""The sandbox's world as data: users, chats, what each bot sent, webhooks, settings; the
parameter normalisation of Bot API calls (used by :mod:`serve.standins.sandbox.server`)."""

from __future__ import annotations

import asyncio
import html
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from serve.standins.sandbox.flood import PAID_BROADCAST_PER_S, SandboxFlood, SandboxLimits
from serve.standins.sandbox.limits import (
    bad_request,
)

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
    flood: SandboxFlood
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
    chat_burst: int = 3
    """Messages a chat may take in any ``chat_burst`` seconds (1/s, averaged over that span)."""
    group_rate_per_min: int = 20
    count_edits: bool = False
    webhook_timeout: float = 10.0
    webhook_retries: int = 3
    webhook_backoff: float = 0.5
    auto_create_chats: bool = True
    max_records: int = 200_000

    def limits_for(self, token: str) -> SandboxLimits:
        paid = self.paid_broadcast or token in self.paid_tokens
        rate = max(self.global_rate, float(PAID_BROADCAST_PER_S)) if paid else self.global_rate
        return SandboxLimits(
            global_rate=rate,
            chat_limit=self.chat_burst,
            chat_window_s=float(self.chat_burst),
            group_limit=self.group_rate_per_min,
            group_window_s=60.0,
        )


Handler = Callable[[BotState, dict[str, Any]], Awaitable[Any]]


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


def _control_error(status: int, message: str) -> web.HTTPException:
    cls = web.HTTPNotFound if status == 404 else web.HTTPBadRequest
    return cls(text=_dumps({"ok": False, "error": message}).decode(), content_type="application/json")


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
