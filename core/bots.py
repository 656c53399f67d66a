"""A pool of bot tokens, pure: which bots there are, a bot's id, its webhook path and secret.

``ARBFLOW_TELEGRAM__TOKENS`` lists several bots (``ARBFLOW_TELEGRAM__TOKEN`` alone: one). The
first is the *primary* bot: it keeps ``POST /telegram/webhook`` and the stored webhook secret,
and it sends to every chat bound to no bot (records written before the pool existed). Every
bot of the pool also answers at ``POST /telegram/webhook/<bot id>`` with a secret of its own,
derived from the stored one (:func:`bot_secret`), so an operator keeps one secret.

A bot's id is the number before the ``:`` of its token (Telegram's bot user id).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

WEBHOOK_PATH = "/telegram/webhook"
"""The primary bot's webhook path (CONTRACT "HTTP"); each bot of the pool also has
``WEBHOOK_PATH/<bot id>`` (:func:`webhook_path`)."""

BOT_FIELD = "_arbflow_bot"
"""The key the ingress adds to an update's JSON: the id of the bot it came to (only with a
pool of several bots; the handler removes it before aiogram reads the update)."""


def bot_id(token: str) -> int:
    """The bot's id: the digits before ``:`` (``7000000001:AA…`` → 7000000001).
    ``ValueError`` for a string that is not a bot token."""
    head, sep, rest = token.strip().partition(":")
    if not sep or not head.isdigit() or not rest:
        raise ValueError("a bot token looks like 123456789:ABC… (digits, a colon, the secret part)")
    return int(head)


def token_pool(token: str, tokens: Sequence[str]) -> list[str]:
    """The pool: ``tokens`` when any (``token``, when set and not among them, goes first),
    else ``[token]``, else empty. Duplicates are dropped, order kept."""
    out: list[str] = []
    for t in ([token] if token else []) + list(tokens):
        t = t.strip()
        if t and t not in out:
            out.append(t)
    return out


def check_pool(tokens: Sequence[str]) -> list[int]:
    """The bot ids of ``tokens``; ``ValueError`` for a malformed token or two tokens of one bot."""
    ids = [bot_id(t) for t in tokens]
    if len(set(ids)) < len(ids):
        raise ValueError("two tokens of the pool belong to the same bot (the same number before ':')")
    return ids


def token_of(pool: Sequence[str], bot: int | None) -> str:
    """The token of bot ``bot`` in ``pool``; the primary's (the first) for None or a bot not
    in the pool; "" for an empty pool."""
    if bot is not None:
        for token in pool:
            if bot_id(token) == bot:
                return token
    return pool[0] if pool else ""


def webhook_path(bot: int | None = None) -> str:
    """``/telegram/webhook`` (``bot`` None: the primary's path) or ``/telegram/webhook/<bot>``."""
    return WEBHOOK_PATH if bot is None else f"{WEBHOOK_PATH}/{int(bot)}"


def path_bot(path: str) -> int | bool | None:
    """What a request path addresses: ``None`` for ``/telegram/webhook`` (the primary), a bot
    id for ``/telegram/webhook/<digits>``, ``False`` for anything else."""
    if path == WEBHOOK_PATH:
        return None
    if path.startswith(WEBHOOK_PATH + "/"):
        tail = path[len(WEBHOOK_PATH) + 1 :]
        if tail.isdigit() and len(tail) <= 20:
            return int(tail)
    return False


def bot_secret(secret: str, bot: int) -> str:
    """The webhook secret of bot ``bot``: HMAC-SHA256 of the bot id keyed with the stored
    secret, hex (64 characters of ``0-9a-f``: Telegram takes 1-256 of ``A-Za-z0-9_-``)."""
    if not secret:
        raise ValueError("no webhook secret to derive a bot's secret from")
    return hmac.new(secret.encode(), b"arbflow bot webhook v1:%d" % int(bot), hashlib.sha256).hexdigest()


__all__ = [
    "BOT_FIELD",
    "WEBHOOK_PATH",
    "bot_id",
    "bot_secret",
    "check_pool",
    "path_bot",
    "token_of",
    "token_pool",
    "webhook_path",
]
