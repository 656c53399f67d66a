"""The "/" command menus (``setMyCommands``), set at start in webhook and polling mode alike.

One menu per scope (private chats, groups, group admins, each SuperAdmin's chat) and per
language: the default one in English (no ``language_code``: every user whose app
language has no menu of its own) and one per other language of ``notify.i18n.LANGUAGES``
(``language_code="ru"``…) with the descriptions translated. The Serve replica and the
poller call :func:`register_commands` with a plain HTTP client; the translations come
through ``notify.texts`` (which imports aiogram's i18n), so the poller imports this module
off its event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from core.accounts import Command
from core.settings import Settings
from notify import texts
from notify.i18n import LANGUAGES, SOURCE_LOCALE, use_locale

log = logging.getLogger(__name__)

GROUP_COMMANDS: tuple[Command, ...] = (Command.HELP, Command.SETTINGS)
"""What a group's menu offers (group alerts are set by its admins with /settings)."""


def menu(*, admin: bool = False, only: Sequence[Command] | None = None) -> list[dict[str, str]]:
    """Bot API ``BotCommand`` objects, in :class:`Command` order."""
    return [
        {"command": c.value, "description": texts.COMMAND_HELP[c][:256]}
        for c in Command
        if (admin or c is not Command.ADMIN) and (only is None or c in only)
    ]


Menu = tuple[dict[str, Any], str | None, list[dict[str, str]]]
"""(scope, language_code or None for the default menu, commands)."""


def command_menus(superadmin_ids: Sequence[int] = ()) -> list[Menu]:
    """Every (scope, language, commands) of the menu: private chats (everything but
    ``/admin``), groups and their admins, and each SuperAdmin's own chat (with ``/admin``),
    each in English as the default and in every other language for its users."""
    menus: list[Menu] = []
    for language in LANGUAGES:
        code = None if language == SOURCE_LOCALE else language
        with use_locale(language):
            group = menu(only=GROUP_COMMANDS)
            menus += [
                ({"type": "all_private_chats"}, code, menu()),
                ({"type": "all_group_chats"}, code, group),
                ({"type": "all_chat_administrators"}, code, group),
            ]
            menus += [({"type": "chat", "chat_id": int(a)}, code, menu(admin=True)) for a in superadmin_ids]
    return menus


async def register_commands(settings: Settings, *, timeout_s: float = 10.0) -> int:
    """``setMyCommands`` for every menu of :func:`command_menus`; returns how many were set.
    A refusal is logged, never fatal: the bot works without a menu."""
    import httpx

    tg = settings.telegram
    if not tg.token:
        return 0
    done = 0
    url = f"{tg.api_base.rstrip('/')}/bot{tg.token}/setMyCommands"
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        for scope, language, commands in command_menus(settings.superadmin_ids):
            body: dict[str, Any] = {"scope": scope, "commands": commands}
            if language:
                body["language_code"] = language
            try:
                answer = (await client.post(url, json=body)).json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("setMyCommands %s failed: %r", scope["type"], exc)
                continue
            if isinstance(answer, dict) and answer.get("ok"):
                done += 1
            else:
                log.warning("setMyCommands %s refused: %s", scope["type"], answer)
    return done


__all__ = ["GROUP_COMMANDS", "Menu", "command_menus", "menu", "register_commands"]
