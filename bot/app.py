"""The bot's assembly: :func:`build_dispatcher`, :func:`run_polling` (the client: ``notify.client``).

The webhook (``serve/``) builds one ``Bot`` and one ``Dispatcher`` per replica and feeds
each update with ``await dp.feed_update(bot, Update.model_validate(body, context={"bot": bot}))``;
``allowed_updates(dp)`` is what ``setWebhook`` should ask for. :func:`run_polling` is
aiogram's own long polling in one process (no pacing, no lake events), for library use:
the commands poll through the bot shards instead (``serve/polling.py``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError, TelegramForbiddenError
from aiogram.types import BotCommand, ErrorEvent

from bot.deps import BotDeps, EventSink, NullEventSink, build_deps
from bot.middlewares import Language, SecretScrub, SessionGate, Throttle
from bot.routers import feature_routers
from core.accounts import Command
from core.errors import ConfigError
from core.settings import Settings
from notify import texts
from notify.client import build_bot
from notify.i18n import LANGUAGES, SOURCE_LOCALE, pick_locale, use_locale

log = logging.getLogger(__name__)


def build_dispatcher(
    deps: BotDeps,
    *,
    throttle_rate: float = 5.0,
    throttle_burst: float = 10.0,
    throttle_clock: Callable[[], float] = time.monotonic,
    handle_errors: bool = True,
) -> Dispatcher:
    """A dispatcher with every feature router, the throttle and the session gate.

    ``deps`` reaches handlers as workflow data (``dp["deps"]``). With ``handle_errors``
    (the default) an exception in a handler is logged and the user gets a short apology
    instead of the update failing; tests pass False to see exceptions.
    """
    dp = Dispatcher(deps=deps, disable_fsm=True, name="arbflow")
    dp.update.outer_middleware(SecretScrub())  # before any gate can refuse the message
    dp.update.outer_middleware(Language())  # the locale, before any gate answers
    dp.update.outer_middleware(Throttle(throttle_rate, throttle_burst, clock=throttle_clock))
    dp.update.outer_middleware(SessionGate())
    dp.include_routers(*feature_routers())
    if handle_errors:
        dp.errors.register(_on_error)
    return dp


async def _on_error(event: ErrorEvent, bot: Bot) -> bool:
    update = event.update
    if isinstance(event.exception, TelegramForbiddenError):
        # The user blocked the bot (or is deactivated): an apology would get 403 too.
        # The my_chat_member update that follows ends their session.
        log.info("update %s: chat refuses messages: %s", update.update_id, event.exception)
        return True
    log.error("update %s failed", update.update_id, exc_info=event.exception)
    source = update.callback_query or update.message
    sender = source.from_user if source is not None else None
    language = pick_locale(None, sender.language_code if sender is not None else None)
    with use_locale(language), contextlib.suppress(TelegramAPIError, Exception):
        if update.callback_query is not None:
            await update.callback_query.answer(texts.ERROR)
        elif update.message is not None and update.message.chat.type == "private":
            await bot.send_message(update.message.chat.id, texts.ERROR)
    return True


def allowed_updates(dp: Dispatcher) -> list[str]:
    """The update types the routers handle (``message``, ``callback_query``, ``my_chat_member``)."""
    return dp.resolve_used_update_types()


def bot_commands(*, admin: bool = False, language: str = SOURCE_LOCALE) -> list[BotCommand]:
    """The command menu (``setMyCommands``) in ``language``; ``/admin`` only in the admins' menus."""
    with use_locale(language):
        return [
            BotCommand(command=c.value, description=texts.COMMAND_HELP[c][:256])
            for c in Command
            if admin or c is not Command.ADMIN
        ]


async def run_polling(
    settings: Settings,
    *,
    redis_url: str | None = None,
    events: EventSink | None = None,
    **dispatcher_options: Any,
) -> None:
    """The bot by aiogram's long polling in this process (library use; ``arbflow run`` and
    ``arbflow bot --polling`` poll through the bot shards, serve/polling.py). Redis must be
    given (``redis_url`` or ``ARBFLOW_REDIS__URL``)."""
    url = redis_url or settings.redis.url
    if not url:
        raise ConfigError("run_polling needs a Redis URL (ARBFLOW_REDIS__URL, or let the CLI spawn one)")
    deps = await build_deps(settings, url, events=events or NullEventSink())
    bot = build_bot(settings)
    dp = build_dispatcher(deps, **dispatcher_options)
    try:
        await bot.delete_webhook(drop_pending_updates=False)
        with contextlib.suppress(TelegramAPIError):
            for language in LANGUAGES:
                code = None if language == SOURCE_LOCALE else language
                await bot.set_my_commands(bot_commands(language=language), language_code=code)
        await dp.start_polling(bot, allowed_updates=allowed_updates(dp), handle_signals=True)
    finally:
        await bot.session.close()
        await deps.aclose()


__all__ = [
    "allowed_updates",
    "bot_commands",
    "build_dispatcher",
    "run_polling",
]
