"""The Bot API methods the sandbox answers (``sendMessage``, ``editMessageText``, webhooks,
``getUpdates``, chat members, command menus, …), as Telegram documents them: a mixin of
:class:`serve.standins.sandbox.server.TelegramSandbox` (payments: :mod:`serve.standins.sandbox.payments`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from serve.standins.sandbox.limits import (
    DELETE_NOT_FOUND,
    EDIT_NOT_FOUND,
    NOT_MODIFIED,
    QUERY_INVALID,
    TEXT_EMPTY,
    USER_NOT_FOUND,
    WEBHOOK_CONFLICT,
    ApiError,
    bad_request,
    render_text,
)
from serve.standins.sandbox.state import (
    BotState,
    SandboxChat,
    SandboxConfig,
    SandboxUser,
    _Entry,
    member_json,
)


class BotApiMethods:
    """The Bot API methods (a mixin of ``TelegramSandbox``)."""

    if TYPE_CHECKING:  # what the sandbox itself (serve.standins.sandbox.server) provides
        config: SandboxConfig
        clock: Callable[[], float]
        bots: dict[str, BotState]
        tokens: list[str]
        users: dict[int, SandboxUser]
        groups: dict[int, SandboxChat]
        records: list[dict[str, Any]]
        stats: dict[str, dict[int, int]]
        too_many: int
        _callback_ids: Iterator[int]
        _by_method: dict[str, list[dict[str, Any]]]
        _by_chat: dict[Any, list[dict[str, Any]]]

        def add_user(
            self,
            user_id: int | None = None,
            first_name: str | None = None,
            *,
            last_name: str | None = None,
            username: str | None = None,
            language_code: str | None = None,
            deactivated: bool = False,
        ) -> SandboxUser: ...
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
        ) -> SandboxChat: ...
        def user(self, user_id: int) -> SandboxUser: ...
        def chat(self, chat_id: Any) -> SandboxChat: ...
        def bot(self, token: str | None = None) -> BotState: ...
        def _check_reachable(self, bot: BotState, chat: SandboxChat) -> None: ...
        def _flood(self, bot: BotState, chat: SandboxChat) -> None: ...
        def _message(
            self, bot: BotState, chat: SandboxChat, message_id: int, text: str, entities: list[dict[str, Any]]
        ) -> dict[str, Any]: ...
        def emit(
            self, bot: BotState, update: dict[str, Any], *, filter_allowed: bool = True
        ) -> asyncio.Future[dict[str, Any]]: ...
        def _enqueue_webhook(
            self, bot: BotState, update: dict[str, Any], done: asyncio.Future[dict[str, Any]] | None = None
        ) -> asyncio.Future[dict[str, Any]]: ...
        def user_message(
            self, bot: BotState, user: SandboxUser, chat: SandboxChat, text: str
        ) -> dict[str, Any]: ...
        def reset(self, *, webhook: bool = False) -> None: ...

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
