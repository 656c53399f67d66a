"""``TelegramNotifier``: one push (a notification or a digest) as one ``sendMessage``.

Renders through :mod:`notify.texts` (HTML, escaped, at most 4096 characters: a push is one
message, so it is trimmed rather than split and takes exactly one rate-limiter slot),
adds the push keyboard (:func:`notify.keyboards.push`) and sends with
``disable_notification=silent``. It never raises for a Telegram answer: every outcome is
a :class:`core.notifications.SendResult`:

| answer | outcome |
|---|---|
| 200 | ``sent`` with ``message_id`` |
| 429 ``TelegramRetryAfter`` | ``retry_after`` with ``retry_after_s`` (the caller pauses the limiter) |
| 403 ``TelegramForbiddenError`` | ``blocked`` (blocked by the user, deactivated, kicked) |
| 5xx, network error, timeout | ``transient`` (retry with backoff; a timeout may have delivered) |
| 400 and anything else | ``permanent`` |

Retries and the rate limit are the caller's (the queue shards): this sends once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiogram import Bot
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import InlineKeyboardMarkup

from core.missed import MissedDigest
from core.notifications import Digest, Notification, SendOutcome, SendResult, is_leg_group
from notify import keyboards, texts
from notify.client import EditPush, PushMessage
from notify.i18n import use_locale

log = logging.getLogger(__name__)

TIMEOUT_ERROR = "timeout"


RENDERED_MAX = 4096
"""Rendered pushes remembered (:func:`render`): the pushes of one opportunity to every chat
in one zone and language are one text, and so are their edits when it closes."""
_rendered: dict[tuple[Any, ...], tuple[str, InlineKeyboardMarkup | None]] = {}


def _moments(notes: tuple[Notification, ...], now: datetime | None) -> tuple[Any, ...]:
    """What of ``now`` a push's text shows, exactly: each leg's age as :func:`fmt_ago` rounds
    it (under a second, or whole seconds) and a funding leg's time left (whole seconds, and
    whether it is still ahead)."""
    if now is None:
        return ()
    out: list[Any] = []
    for n in notes:
        age = (now - n.detected_at).total_seconds()
        out.append(int(age) if age >= 1 else -1)
        if n.next_funding is not None:
            left = (n.next_funding - now).total_seconds()
            out.append((left > 0, math.floor(left)))
    return tuple(out)


def render(
    item: Notification | Digest | MissedDigest,
    *,
    tz: str = "UTC",
    now: datetime | None = None,
    closed: Mapping[str, float] | None = None,
    lang: str | None = None,
) -> tuple[str, InlineKeyboardMarkup | None]:
    """The HTML text and keyboard of a push in the chat's language ``lang`` (None or one the
    bot does not speak: English): times in ``tz``, its age at ``now``, and the lifetime of
    what closed since it was sent (``closed``: opportunity id → seconds). A "missed while
    delayed" digest has no keyboard (its text points at ``/subscription``).

    Pushes are remembered by what their text depends on (:data:`RENDERED_MAX` at most)."""
    if isinstance(item, MissedDigest):
        return _render(item, tz=tz, now=now, closed=closed, lang=lang)
    notes = item.items if isinstance(item, Digest) else (item,)
    layout = item.layout if isinstance(item, Digest) else "full"
    key = (notes, type(item), layout, tz, lang, tuple(sorted((closed or {}).items())), _moments(notes, now))
    try:
        hit = _rendered.get(key)
    except TypeError:  # a field that cannot be hashed: rendered every time
        return _render(item, tz=tz, now=now, closed=closed, lang=lang)
    if hit is None:
        hit = _render(item, tz=tz, now=now, closed=closed, lang=lang)
        if len(_rendered) >= RENDERED_MAX:
            _rendered.clear()
        _rendered[key] = hit
    return hit


def _render(
    item: Notification | Digest | MissedDigest,
    *,
    tz: str,
    now: datetime | None,
    closed: Mapping[str, float] | None,
    lang: str | None,
) -> tuple[str, InlineKeyboardMarkup | None]:
    with use_locale(lang):
        if isinstance(item, MissedDigest):
            return texts.missed_digest(item, tz=tz), None
        if isinstance(item, Digest) and item.layout == "compact":  # an experiment's variant
            text = texts.push_compact(item, closed=closed)
        elif isinstance(item, Digest) and is_leg_group(item.items):  # the legs of one thing, one push
            text = texts.grouped_push_message(item, tz=tz, now=now, closed=closed)
        elif isinstance(item, Digest):
            text = texts.push_digest(item, tz=tz, now=now, closed=closed)
        else:
            text = texts.push_message(item, tz=tz, now=now, closed=(closed or {}).get(item.opportunity_id))
        return text, keyboards.push(item)


def _status(exc: TelegramAPIError) -> int | None:
    if isinstance(exc, TelegramRetryAfter):
        return 429
    if isinstance(exc, TelegramForbiddenError):
        return 403
    if isinstance(exc, TelegramUnauthorizedError):
        return 401
    if isinstance(exc, TelegramNotFound):
        return 404
    if isinstance(exc, TelegramBadRequest | TelegramMigrateToChat):
        return 400
    if isinstance(exc, TelegramServerError):
        return 500
    return None


class TelegramNotifier:
    """Sends pushes through an aiogram ``Bot`` (Telegram or the sandbox)."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send(
        self,
        chat_id: int | str,
        item: Notification | Digest | MissedDigest,
        *,
        silent: bool,
        tz: str = "UTC",
        now: datetime | None = None,
        timeout_s: float = 10,
        lang: str | None = None,
    ) -> SendResult:
        try:
            text, markup = render(item, tz=tz, now=now, lang=lang)
        except (KeyError, ValueError):  # a zone this host does not know: the push goes out in UTC
            text, markup = render(item, now=now, lang=lang)
        try:
            async with asyncio.timeout(timeout_s):
                push = PushMessage(
                    chat_id=chat_id,
                    text=text,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                    disable_notification=silent,
                )
                message = await self.bot(push, request_timeout=max(1, math.ceil(timeout_s)))
        except TelegramRetryAfter as exc:
            return SendResult(
                SendOutcome.RETRY_AFTER,
                retry_after_s=float(exc.retry_after),
                error=exc.message,
                status_code=429,
            )
        except TelegramForbiddenError as exc:
            return SendResult(SendOutcome.BLOCKED, error=exc.message, status_code=403)
        except (TelegramServerError, TelegramNetworkError) as exc:
            return SendResult(SendOutcome.TRANSIENT, error=exc.message, status_code=_status(exc))
        except TimeoutError:
            return SendResult(SendOutcome.TRANSIENT, error=TIMEOUT_ERROR)
        except TelegramAPIError as exc:
            if isinstance(exc, TelegramMigrateToChat):
                log.info("chat %s became supergroup %s", chat_id, exc.migrate_to_chat_id)
            return SendResult(SendOutcome.PERMANENT, error=exc.message, status_code=_status(exc))
        except (ClientDecodeError, OSError) as exc:  # an undecodable answer, a socket error below aiogram
            return SendResult(SendOutcome.TRANSIENT, error=f"{type(exc).__name__}: {exc}")
        return SendResult(SendOutcome.SENT, message_id=message.message_id, status_code=200)

    async def edit(
        self,
        chat_id: int | str,
        message_id: int,
        item: Notification | Digest,
        *,
        tz: str,
        sent: datetime,
        closed: Mapping[str, float],
        timeout_s: float = 10,
        lang: str | None = None,
    ) -> SendResult:
        """Re-render a sent push as it was (``sent``: its send time) with what closed since,
        in place (``editMessageText``). Never raises for a Telegram answer."""
        try:
            text, markup = render(item, tz=tz, now=sent, closed=closed, lang=lang)
        except (KeyError, ValueError):
            text, markup = render(item, now=sent, closed=closed, lang=lang)
        try:
            async with asyncio.timeout(timeout_s):
                edit = EditPush(
                    text=text,
                    chat_id=chat_id,
                    message_id=message_id,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                )
                await self.bot(edit, request_timeout=max(1, math.ceil(timeout_s)))
        except TelegramRetryAfter as exc:
            return SendResult(SendOutcome.RETRY_AFTER, retry_after_s=float(exc.retry_after), status_code=429)
        except TelegramForbiddenError as exc:
            return SendResult(SendOutcome.BLOCKED, error=exc.message, status_code=403)
        except TelegramAPIError as exc:  # deleted by the user, not modified, …: nothing to do
            return SendResult(SendOutcome.PERMANENT, error=exc.message, status_code=_status(exc))
        except (TimeoutError, ClientDecodeError, OSError) as exc:
            return SendResult(SendOutcome.TRANSIENT, error=f"{type(exc).__name__}: {exc}")
        return SendResult(SendOutcome.SENT, message_id=message_id, status_code=200)


__all__ = ["TIMEOUT_ERROR", "TelegramNotifier", "render"]
