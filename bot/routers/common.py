"""Helpers shared by the feature routers (not a router): sending, editing, sessions."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from bot.deps import BotDeps
from bot.middlewares import AuditNote
from core.accounts import OnboardingStep, User
from core.sessions import EndReason, Session, end_event
from notify import texts
from state.audit import AuditRow
from state.sessions import session_events_table

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

SESSION_EVENTS_DATASET = "session_events"

STEP_OF: dict[str, OnboardingStep] = {
    "kinds": OnboardingStep.KINDS,
    "exch": OnboardingStep.EXCHANGES,
    "minp": OnboardingStep.MIN_PROFIT,
    "tz": OnboardingStep.TIMEZONE,
    "hours": OnboardingStep.HOURS,
    "tiers": OnboardingStep.TIERS,
    "keys": OnboardingStep.API_KEYS,
    "done": OnboardingStep.DONE,
}
SCREEN_OF: dict[OnboardingStep, str] = {v: k for k, v in STEP_OF.items()}
_STEP_RANK = {s: i for i, s in enumerate(OnboardingStep)}


async def send(
    bot: Bot, chat_id: int, text: str, reply_markup: InlineKeyboardMarkup | None = None
) -> Message | None:
    """Send ``text`` split to ≤ 4096 characters; the keyboard goes on the last part."""
    parts = texts.split_message(text)
    last: Message | None = None
    for i, part in enumerate(parts):
        last = await bot.send_message(
            chat_id, part, reply_markup=reply_markup if i == len(parts) - 1 else None
        )
    return last


async def show(
    bot: Bot, cb: CallbackQuery, text: str, reply_markup: InlineKeyboardMarkup | None = None
) -> None:
    """Replace the pressed message with ``text`` (or send it when it cannot be edited)."""
    msg = cb.message
    if isinstance(msg, Message) and len(text) <= texts.TELEGRAM_LIMIT:
        try:
            await bot.edit_message_text(
                text=text, chat_id=msg.chat.id, message_id=msg.message_id, reply_markup=reply_markup
            )
            return
        except TelegramBadRequest as exc:
            if "not modified" in str(exc):
                return
            log.debug("edit failed, sending instead: %s", exc)
    chat_id = msg.chat.id if msg is not None else cb.from_user.id
    await send(bot, chat_id, text, reply_markup)


async def answer(cb: CallbackQuery, text: str | None = None, *, alert: bool = False) -> None:
    with contextlib.suppress(TelegramAPIError):
        await cb.answer(text, show_alert=alert)


def owns(cb: CallbackQuery, uid: int) -> bool:
    """The button belongs to the presser (the id in the data is only compared, never used)."""
    return cb.from_user.id == uid


async def refuse_foreign(cb: CallbackQuery, uid: int, audit: AuditNote) -> bool:
    """A press on someone else's button: audit it, say so, and tell the handler to stop."""
    if owns(cb, uid):
        return False
    audit.ok, audit.detail = False, "not_owner"
    await answer(cb, texts.NOT_YOURS)
    return True


async def advance(deps: BotDeps, user: User, step: OnboardingStep) -> bool:
    """Move the onboarding funnel forward (never back); True when it moved."""
    if _STEP_RANK[step] <= _STEP_RANK[user.onboarding_step]:
        return False
    await deps.users.update_fields(user.id, onboarding_step=step)
    user.onboarding_step = step
    return True


async def end_session(deps: BotDeps, user_id: int, reason: EndReason) -> Session | None:
    """End the user's session (if this call ended it, its lake event is emitted)."""
    ended = await deps.cache.end(user_id, reason, deps.now())
    if ended is not None:
        await deps.emit(SESSION_EVENTS_DATASET, session_events_table([end_event(ended)]))
    return ended


async def audit(deps: BotDeps, actor: int, chat: int, action: str, ok: bool = True, detail: str = "") -> None:
    await deps.audit([AuditRow(deps.now(), actor, chat, action, ok, detail)])


class RouterSpec:
    """Handlers of one feature, built into a fresh aiogram ``Router`` per dispatcher.

    aiogram attaches a router to one parent only; building a new one each time lets a
    process hold several dispatchers (Serve replicas, tests). Decorators mirror
    ``Router``'s: ``@router.message(*filters)``, ``@router.callback_query(...)``,
    ``@router.my_chat_member(...)``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []

    def _add(self, observer: str, filters: tuple[Any, ...]) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            self._handlers.append((observer, fn, filters))
            return fn

        return deco

    def message(self, *filters: Any) -> Callable[[F], F]:
        return self._add("message", filters)

    def callback_query(self, *filters: Any) -> Callable[[F], F]:
        return self._add("callback_query", filters)

    def my_chat_member(self, *filters: Any) -> Callable[[F], F]:
        return self._add("my_chat_member", filters)

    def pre_checkout_query(self, *filters: Any) -> Callable[[F], F]:
        return self._add("pre_checkout_query", filters)

    def build(self) -> Router:
        router = Router(name=self.name)
        for observer, fn, filters in self._handlers:
            router.observers[observer].register(fn, *filters)
        return router
