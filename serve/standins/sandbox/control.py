"""The sandbox's control API under ``/sandbox/`` (users, groups, acting as a user, pressing
buttons, faults, reset, the recorded requests): a mixin of
:class:`serve.standins.sandbox.server.TelegramSandbox`. See docs/sandbox.md."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from serve.standins.sandbox.methods import BotApiMethods
from serve.standins.sandbox.state import (
    BotState,
    SandboxChat,
    _coerce_chat_id,
    _control_error,
    _json_response,
    entities_to_html,
    member_json,
)


class ControlApi(BotApiMethods):
    """The control API (a mixin of ``TelegramSandbox``)."""

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
        if q.get("bot"):  # one bot of several: its username, id or token
            name = self._bot_named(q["bot"]).user.username
            rows = [r for r in rows if r["bot"] == name]
        limit = int(q.get("limit", 10_000))
        rows = rows[:limit]
        return _json_response({"ok": True, "requests": rows, "last_id": rows[-1]["id"] if rows else None})

    def _bot_named(self, which: str) -> BotState:
        """A bot by its username (``@`` optional), id or token; 404 when none is."""
        which = which.lstrip("@")
        for token, bot in self.bots.items():
            if which in (token, bot.user.username, str(bot.user.id)):
                return bot
        raise _control_error(404, f"no bot {which!r}")

    async def _c_bots(self, _request: web.Request) -> web.Response:
        """The bots this sandbox hosts (a pool of several: docs/bot-pool.md), the first is the
        default of every control call; ``token`` (or ``?token=``) picks another."""
        rows = [
            {
                "id": bot.user.id,
                "username": bot.user.username,
                "token": token,
                "webhook_url": bot.webhook_url,
                "global_rate": bot.flood.limits.global_rate,
            }
            for token, bot in self.bots.items()
        ]
        return _json_response({"ok": True, "bots": rows})

    async def _c_stats(self, _request: web.Request) -> web.Response:
        by_method = {m: {str(s): n for s, n in statuses.items()} for m, statuses in self.stats.items()}
        by_status: dict[str, int] = defaultdict(int)
        for statuses in self.stats.values():
            for s, n in statuses.items():
                by_status[str(s)] += n
        bots = {
            (name := bot.user.username): {
                "delivered": sum(1 for d in bot.deliveries if d.get("status") == 200),
                "failed": sum(1 for d in bot.deliveries if d.get("status") != 200),
                "pending": len(bot.pending),
                "global_rate": bot.flood.limits.global_rate,
                "id": bot.user.id,
                "too_many_requests": sum(1 for r in self.records if r["status"] == 429 and r["bot"] == name),
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


def _group_json(group: SandboxChat) -> dict[str, Any]:
    return {
        **group.to_api(),
        "creator_id": group.creator_id,
        "admin_ids": sorted(group.admin_ids),
        "member_ids": sorted(group.member_ids),
        "bot_admin": group.bot_admin,
    }
