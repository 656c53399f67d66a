"""Outer middlewares on ``update``: secrets scrubbed, the per-user throttle, then the
session-first gate.

Order (``bot.app.build_dispatcher``): aiogram's own errors and user-context middlewares,
then :class:`SecretScrub`, :class:`Language`, :class:`Throttle`, :class:`SessionGate`.

- :class:`SecretScrub`: a message that carries exchange credentials (``/apikeys add …``)
  is deleted before anything else looks at it, so it leaves the chat even when a later
  gate (the throttle, a missing session, the tier, a group chat) refuses it. Handlers see
  ``secret_deleted`` (whether Telegram deleted it).

- :class:`Language`: the locale of the update (``notify.i18n.pick_locale``): the user's
  language setting, else their Telegram app's ``language_code``, else English. It reads
  the user's record once (handed to the session gate as ``stored_user``), so every later
  answer, the throttle's and the gate's refusals included, is in the user's language.

- :class:`Throttle`: a token bucket per user in memory (default 5 updates/s, burst 10).
  A user over it gets ONE "slow down" answer, then silence until the bucket has filled
  up again (they calmed down); their callback queries are still answered (empty), so
  no button spins forever. Other users have their own buckets: one user's flood never
  slows anyone else. Membership updates (``my_chat_member``) and payments
  (``pre_checkout_query``, ``successful_payment``, ``refunded_payment``: :func:`is_payment`)
  are never throttled, and payments pass the session gate without a session.
- :class:`SessionGate`: resolves the user (creating the record on first contact),
  validates the session through :class:`state.sessions.SessionCache` (which extends it, so
  every interaction keeps it 7 days ahead), and lets only ``/start``, ``/help``, the
  "Start a session" button and membership updates through without an active session.
  Everything else gets a short text (saying so when the session expired) with a
  "Start a session" button, and callback queries are answered. Commands addressed to
  another bot (``/cmd@other_bot``) and plain text in groups are ignored. Handlers get
  ``user``, ``session``, ``policy`` and ``audit`` (an :class:`AuditNote` they may fill);
  one ``audit`` row is emitted per command or button press.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram import Bot
from aiogram.dispatcher.middlewares.base import BaseMiddleware
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, Message, TelegramObject, Update
from aiogram.types import User as TgUser

from bot import keyboards
from bot.callbacks import StartSession
from bot.deps import BotDeps
from core.accounts import User
from core.regions import region_from_language
from core.sessions import EndReason, SessionStatus, status
from notify import texts
from notify.i18n import pick_locale, use_locale
from state.audit import AuditRow

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
OPEN_COMMANDS = frozenset({"start", "help"})


@dataclass(frozen=True, slots=True)
class ParsedCommand:
    name: str
    mention: str | None
    args: str


def parse_command(text: str | None) -> ParsedCommand | None:
    """``/name@bot args`` → its parts (``name`` lower-cased); None when not a command."""
    if not text or not text.startswith("/") or len(text) < 2:
        return None
    head, _, args = text[1:].partition(" ")
    head = head.split("\n", 1)[0]
    name, _, mention = head.partition("@")
    if not name:
        return None
    return ParsedCommand(name.lower(), mention or None, args.strip())


@dataclass(slots=True)
class AuditNote:
    """Filled by handlers to shape their audit row (``ok=False`` for refusals)."""

    ok: bool = True
    detail: str = ""
    action: str | None = None


# -- secrets -----------------------------------------------------------------------------------


def carries_secret(text: str | None) -> bool:
    """Whether a message's text is ``/apikeys add …`` (it holds an API key and secret)."""
    cmd = parse_command(text)
    return cmd is not None and cmd.name == "apikeys" and cmd.args.split(" ", 1)[0].lower() == "add"


class SecretScrub(BaseMiddleware):
    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        msg = event.message
        if msg is not None and carries_secret(msg.text):
            cmd = parse_command(msg.text)
            mention = cmd.mention if cmd is not None else None
            bot: Bot = data["bot"]
            deps: BotDeps = data["deps"]
            ours = True  # when in doubt, a secret is deleted
            if mention is not None:
                with contextlib.suppress(TelegramAPIError):
                    ours = mention.lower() == (await bot_username(bot, deps)).lower()
            if ours:  # another bot's command is that bot's to delete
                deleted = False
                with contextlib.suppress(TelegramAPIError):
                    deleted = bool(await bot.delete_message(msg.chat.id, msg.message_id))
                data["secret_deleted"] = deleted
        return await handler(event, data)


def is_payment(event: Update) -> bool:
    """A checkout to answer or a payment/refund to record: never refused by a gate."""
    msg = event.message
    return event.pre_checkout_query is not None or (
        msg is not None and (msg.successful_payment is not None or msg.refunded_payment is not None)
    )


# -- language ----------------------------------------------------------------------------------


class Language(BaseMiddleware):
    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        tg_user: TgUser | None = data.get("event_from_user")
        if tg_user is None or tg_user.is_bot:
            with use_locale(None):
                return await handler(event, data)
        deps: BotDeps = data["deps"]
        stored = await deps.users.get(tg_user.id)
        data["stored_user"] = stored
        setting = stored.preferences.language if stored is not None else None
        with use_locale(pick_locale(setting, tg_user.language_code)) as locale:
            data["locale"] = locale
            return await handler(event, data)


# -- throttle ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    warned: bool = False


class Throttle(BaseMiddleware):
    def __init__(
        self,
        rate: float = 5.0,
        burst: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_users = max_users
        self._buckets: dict[int, _Bucket] = {}

    def _take(self, user_id: int) -> tuple[bool, bool]:
        """(allowed, warn now)."""
        now = self.clock()
        b = self._buckets.get(user_id)
        if b is None:
            if len(self._buckets) >= self.max_users:
                self._prune(now)
            b = self._buckets[user_id] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens >= self.burst:
            b.warned = False  # calm again
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True, False
        warn = not b.warned
        b.warned = True
        return False, warn

    def _prune(self, now: float) -> None:
        full = [uid for uid, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]
        for uid in full:
            del self._buckets[uid]
        while len(self._buckets) >= self.max_users:  # everyone busy: drop the oldest
            del self._buckets[next(iter(self._buckets))]

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        user: TgUser | None = data.get("event_from_user")
        if user is None or event.my_chat_member is not None or is_payment(event):
            return await handler(event, data)  # membership changes and money are never throttled
        allowed, warn = self._take(user.id)
        if allowed:
            return await handler(event, data)
        bot: Bot = data["bot"]
        with contextlib.suppress(TelegramAPIError):
            if event.callback_query is not None:
                await event.callback_query.answer(texts.SLOW_DOWN if warn else None)
            elif warn and event.message is not None:
                await bot.send_message(event.message.chat.id, texts.SLOW_DOWN)
        return None


# -- session gate ------------------------------------------------------------------------------


async def bot_username(bot: Bot, deps: BotDeps) -> str:
    if deps.bot_username:
        return deps.bot_username
    me = await bot.me()
    return me.username or ""


class SessionGate(BaseMiddleware):
    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        deps: BotDeps = data["deps"]
        bot: Bot = data["bot"]
        tg_user: TgUser | None = data.get("event_from_user")
        note = AuditNote()
        data["audit"] = note
        if event.my_chat_member is not None or tg_user is None or tg_user.is_bot:
            return await handler(event, data)  # membership changes: processed without a session

        if is_payment(event):
            return await handler(event, data)  # payments need no session (bot.routers.subscription)
        msg, cb = event.message, event.callback_query
        action: str | None = None
        open_ = False
        if msg is not None:
            if msg.text is None:
                return None
            cmd = parse_command(msg.text)
            if cmd is not None:
                if cmd.mention and cmd.mention.lower() != (await bot_username(bot, deps)).lower():
                    return None  # addressed to another bot
                action = f"/{cmd.name}"
                open_ = cmd.name in OPEN_COMMANDS
            elif msg.chat.type != "private":
                return None  # chatter in a group is not for us
            data["command_name"] = cmd.name if cmd else None
        elif cb is not None:
            prefix = (cb.data or "").split(":", 1)[0]
            action = f"cb:{prefix}"
            open_ = prefix == StartSession.__prefix__
        else:
            return await handler(event, data)

        now = deps.now()
        user = data.pop("stored_user") if "stored_user" in data else await deps.users.get(tg_user.id)
        if user is None:
            user, _ = await deps.users.create(
                User.new(
                    tg_user.id,
                    now,
                    username=tg_user.username,
                    first_name=tg_user.first_name,
                    region=region_from_language(tg_user.language_code),  # pt-br → BR; en → unknown
                    language_code=tg_user.language_code,
                )
            )
        elif tg_user.language_code and tg_user.language_code != user.language_code:
            # the app's language, kept for the pushes of a user who chose none
            await deps.users.update_fields(user.id, language_code=tg_user.language_code)
            user.language_code = tg_user.language_code
        session = await deps.cache.validate(user.id, now)
        data["user"] = user
        data["session"] = session
        data["policy"] = deps.policy_for(user)
        chat_id = msg.chat.id if msg is not None else _cb_chat(cb)

        if session is None and not open_:
            previous = await deps.sessions.get(user.id)
            expired = previous is not None and (
                status(previous, now) is SessionStatus.EXPIRED or previous.end_reason is EndReason.EXPIRED
            )
            await self._refuse(bot, msg, cb, chat_id, expired)
            if action:
                await deps.audit(
                    [AuditRow(now, user.id, chat_id, action, False, "expired" if expired else "no_session")]
                )
            return None

        try:
            result = await handler(event, data)
        except Exception as exc:
            note.ok, note.detail = False, f"error: {type(exc).__name__}"
            raise
        finally:
            if action:
                await deps.audit(
                    [AuditRow(now, user.id, chat_id, note.action or action, note.ok, note.detail)]
                )
        return result

    @staticmethod
    async def _refuse(
        bot: Bot, msg: Message | None, cb: CallbackQuery | None, chat_id: int, expired: bool
    ) -> None:
        text = texts.no_session(expired)
        if cb is not None:
            with contextlib.suppress(TelegramAPIError):
                await cb.answer(texts.no_session_short(expired))
        with contextlib.suppress(TelegramAPIError):
            await bot.send_message(chat_id, text, reply_markup=keyboards.start_session())


def _cb_chat(cb: CallbackQuery | None) -> int:
    assert cb is not None
    if cb.message is not None:
        return cb.message.chat.id
    return cb.from_user.id


__all__ = [
    "AuditNote",
    "Language",
    "ParsedCommand",
    "SecretScrub",
    "SessionGate",
    "Throttle",
    "bot_username",
    "carries_secret",
    "is_payment",
    "parse_command",
]
