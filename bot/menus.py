"""The "/" command menus (``setMyCommands``), set at start in webhook and polling mode alike.

No aiogram here: the Serve replica and the poller call :func:`register_commands` with a
plain HTTP client, and importing aiogram there would slow their start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from bot import texts
from core.accounts import Command
from core.settings import Settings

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


def command_menus(superadmin_ids: Sequence[int] = ()) -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
    """Every (scope, commands) of the menu: private chats (everything but ``/admin``),
    groups and their admins, and each SuperAdmin's own chat (with ``/admin``)."""
    group = menu(only=GROUP_COMMANDS)
    menus: list[tuple[dict[str, Any], list[dict[str, str]]]] = [
        ({"type": "all_private_chats"}, menu()),
        ({"type": "all_group_chats"}, group),
        ({"type": "all_chat_administrators"}, group),
    ]
    menus += [({"type": "chat", "chat_id": int(a)}, menu(admin=True)) for a in superadmin_ids]
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
        for scope, commands in command_menus(settings.superadmin_ids):
            try:
                answer = (await client.post(url, json={"scope": scope, "commands": commands})).json()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("setMyCommands %s failed: %r", scope["type"], exc)
                continue
            if isinstance(answer, dict) and answer.get("ok"):
                done += 1
            else:
                log.warning("setMyCommands %s refused: %s", scope["type"], answer)
    return done


__all__ = ["GROUP_COMMANDS", "command_menus", "menu", "register_commands"]
