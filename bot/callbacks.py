"""Typed callback data (aiogram ``CallbackData``), each ≤ 64 bytes.

Buttons that act on a user's things carry that user's id (``uid``); handlers compare it
with ``callback.from_user.id`` and act only on the presser's own id, so a button pressed
on someone else's message (in a group) or a forged payload changes nothing of anyone
else's. Values are validated by the handlers (unknown exchange or kind → "not available").
Fields never contain ``:`` (the separator): time zones travel as an index into
``notify.texts.TIMEZONES``.
"""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class StartSession(CallbackData, prefix="ss"):
    """The "Start a session" button of the session-first gate: runs the /start flow."""


class Onboard(CallbackData, prefix="ob"):
    """Onboarding navigation: ``step`` the screen to show next (``done`` ends it)."""

    uid: int
    step: str


class SetPref(CallbackData, prefix="sp"):
    """One preference change or a settings sub-menu (``field="menu"``).

    ``onb=1``: the change was made on an onboarding screen, which is shown again.
    """

    uid: int
    field: str
    value: str
    onb: int = 0


class OppPage(CallbackData, prefix="op"):
    uid: int
    page: int


class OppDetail(CallbackData, prefix="od"):
    uid: int
    id: str
    page: int = 0


class OppBacktest(CallbackData, prefix="bt"):
    """The "Backtest" button of an opportunity's details view: the last 7 days of its kind,
    symbol and legs from the lake. ``page``: the list page to go back to. As long as
    :class:`OppDetail` (≤ 64 bytes for the same ids)."""

    uid: int
    id: str
    page: int = 0


class KeyRemove(CallbackData, prefix="kr"):
    uid: int
    exchange: str


class Forget(CallbackData, prefix="fg"):
    """``/forget``'s confirmation: ``confirm`` deletes, else it is cancelled."""

    uid: int
    confirm: bool


class GroupSet(CallbackData, prefix="gs"):
    """A group setting; the group is the chat of the pressed message, never a value in here."""

    field: str
    value: str


class BuyTier(CallbackData, prefix="bu"):
    """``/subscription``'s buy button: send an invoice in Telegram Stars for ``tier``."""

    uid: int
    tier: str


__all__ = [
    "BuyTier",
    "Forget",
    "GroupSet",
    "KeyRemove",
    "Onboard",
    "OppBacktest",
    "OppDetail",
    "OppPage",
    "SetPref",
    "StartSession",
]
