"""The buttons under a pushed message (sent by the queue shards, pressed in the bot):
:func:`push` and its typed data :class:`PushAction` (handled by ``bot/routers/pushes.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from core.notifications import Digest, Notification
from notify import texts
from notify.i18n import current_locale

Rows = list[list[InlineKeyboardButton]]


class PushAction(CallbackData, prefix="pu"):
    """A button on a pushed message: ``action`` is ``details`` | ``mute1h`` | ``more``; ``id`` the
    opportunity it was pushed for (a digest's mute and more buttons carry its first one).

    No ``uid``: every action is the presser's own (muting mutes the presser; details and
    the list are shown to whoever asks), so a push in a group works for each member.
    At most 3 + 7 + 36 + 2 = 48 bytes with a UUID id.
    """

    action: str
    id: str


def _b(text: str, data: CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def _chunk(buttons: Sequence[InlineKeyboardButton], width: int) -> Rows:
    return [list(buttons[i : i + width]) for i in range(0, len(buttons), width)]


PUSH_KEYBOARDS_KEPT = 4096
"""Push keyboards kept built (they depend only on the opportunity ids and the language: an
opportunity pushed to thousands of chats builds its keyboard once per language)."""

_push_keyboards: dict[tuple[str, bool, tuple[str, ...]], InlineKeyboardMarkup] = {}


def push(item: Notification | Digest) -> InlineKeyboardMarkup:
    """The buttons under a pushed message: details (one per item of a digest, numbered like
    its lines), mute for an hour, and the list of what is open now. The same object for the
    same ids and language (aiogram's objects are frozen: nothing changes it)."""
    multi = isinstance(item, Digest) and len(item) > 1
    if isinstance(item, Digest):
        shown = item.items[: texts.PUSH_DIGEST_BUTTONS] if multi else ()
        ids = (item.top.opportunity_id, *(n.opportunity_id for n in shown))
    else:
        ids = (item.opportunity_id,)
    key = (current_locale(), multi, ids)
    markup = _push_keyboards.get(key)
    if markup is None:
        if len(_push_keyboards) >= PUSH_KEYBOARDS_KEPT:
            _push_keyboards.clear()
        markup = _push_keyboards[key] = _build_push(item)
    return markup


def _build_push(item: Notification | Digest) -> InlineKeyboardMarkup:
    if isinstance(item, Digest) and len(item) > 1:
        rows: Rows = _chunk(
            [
                _b(str(i), PushAction(action="details", id=n.opportunity_id))
                for i, n in enumerate(item.items[: texts.PUSH_DIGEST_BUTTONS], start=1)
            ],
            texts.PUSH_DIGEST_BUTTONS,
        )
        top = item.top
    else:
        top = item.top if isinstance(item, Digest) else item
        rows = [[_b(texts.PUSH_DETAILS, PushAction(action="details", id=top.opportunity_id))]]
    rows.append(
        [
            _b(texts.PUSH_MUTE, PushAction(action="mute1h", id=top.opportunity_id)),
            _b(texts.PUSH_MORE, PushAction(action="more", id=top.opportunity_id)),
        ]
    )
    return InlineKeyboardMarkup(inline_keyboard=rows)


__all__ = ["PushAction", "push"]
