"""Inline keyboards. Labels come from ``notify.texts``; data is typed (``bot.callbacks``)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import (
    Forget,
    GroupSet,
    KeyRemove,
    Onboard,
    OppBacktest,
    OppDetail,
    OppPage,
    SetPref,
    StartSession,
)
from core.accounts import Preferences, TierPolicy, User
from core.lifecycle import OpenOpportunity
from core.models import OpportunityKind
from notify import texts
from notify.i18n import LANGUAGES, _

Rows = list[list[InlineKeyboardButton]]


def _b(text: str, data: CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def _chunk(buttons: Sequence[InlineKeyboardButton], width: int) -> Rows:
    return [list(buttons[i : i + width]) for i in range(0, len(buttons), width)]


def _mark(on: bool) -> str:
    return "✅" if on else "▫️"


def start_session() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[_b(texts.START_BUTTON, StartSession())]])


def forget(uid: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_b(f"🗑 {texts.FORGET_YES}", Forget(uid=uid, confirm=True))],
            [_b(texts.FORGET_NO, Forget(uid=uid, confirm=False))],
        ]
    )


# -- preference pickers (shared by /settings and onboarding) -----------------------------------


def kinds_rows(uid: int, prefs: Preferences, policy: TierPolicy, onb: int) -> Rows:
    rows: Rows = []
    for kind in OpportunityKind:
        if policy.allows_kind(kind):
            label = f"{_mark(kind in prefs.kinds)} {texts.KIND_LABELS[kind]}"
        else:
            label = f"🔒 {texts.KIND_LABELS[kind]}"
        rows.append([_b(label, SetPref(uid=uid, field="kind", value=kind.value, onb=onb))])
    return rows


def exchanges_rows(uid: int, prefs: Preferences, exchanges: Sequence[str], onb: int) -> Rows:
    buttons = [
        _b(f"{_mark(ex in prefs.exchanges)} {ex}", SetPref(uid=uid, field="exch", value=ex, onb=onb))
        for ex in exchanges
    ]
    rows = _chunk(buttons, 3)
    rows.append(
        [_b(_mark(not prefs.exchanges) + " " + _("all"), SetPref(uid=uid, field="exch", value="*", onb=onb))]
    )
    return rows


def symbol_value(symbol: str) -> str:
    """A symbol as callback data carries it (``:`` separates callback fields: ``!`` stands in)."""
    return symbol.replace(":", "!")


def symbol_of(value: str) -> str:
    return value.replace("!", ":")


def symbols_rows(uid: int, prefs: Preferences, symbols: Sequence[str], onb: int) -> Rows:
    def toggle(sym: str) -> InlineKeyboardButton:
        data = SetPref(uid=uid, field="sym", value=symbol_value(sym), onb=onb)
        return _b(f"{_mark(sym in prefs.symbols)} {sym}", data)

    buttons = [toggle(sym) for sym in symbols]
    rows = _chunk(buttons, 2)
    rows.append(
        [_b(_mark(not prefs.symbols) + " " + _("all"), SetPref(uid=uid, field="sym", value="*", onb=onb))]
    )
    return rows


MIN_FIELDS: dict[OpportunityKind, str] = {
    OpportunityKind.SPOT_SPREAD: "minp",
    OpportunityKind.FUNDING_RATE: "mapr",
    OpportunityKind.TECHNICAL: "mconf",
}
"""The ``SetPref`` field of each kind's minimum (``minp`` was the one field of earlier releases)."""


def min_profit_rows(uid: int, prefs: Preferences, onb: int, policy: TierPolicy | None = None) -> Rows:
    """A group of buttons per kind the tier allows, each in the kind's unit."""
    rows: Rows = []
    for kind in OpportunityKind:
        if policy is not None and not policy.allows_kind(kind):
            continue
        current = prefs.threshold(kind)
        choices: list[tuple[str, str]]
        if kind is OpportunityKind.SPOT_SPREAD:
            choices = [(str(v), _("{v} bps").format(v=v)) for v in texts.MIN_PROFIT_CHOICES]
        elif kind is OpportunityKind.FUNDING_RATE:
            choices = [(str(v), _("{v}% APR").format(v=v)) for v in texts.MIN_APR_CHOICES]
        else:
            choices = [(v, _("any") if v == "0" else f"≥ {v}") for v in texts.MIN_CONFIDENCE_CHOICES]
        buttons = [
            _b(
                f"{'• ' if current == Decimal(value) else ''}{texts.KIND_SHORT[kind]} {label}",
                SetPref(uid=uid, field=MIN_FIELDS[kind], value=value, onb=onb),
            )
            for value, label in choices
        ]
        rows += _chunk(buttons, 3)
    return rows


def timezone_rows(uid: int, prefs: Preferences, onb: int) -> Rows:
    buttons = [
        _b(
            f"{'• ' if prefs.timezone == tz else ''}{tz}",
            SetPref(uid=uid, field="tz", value=str(i), onb=onb),
        )
        for i, tz in enumerate(texts.TIMEZONES)
    ]
    return _chunk(buttons, 2)


def language_rows(uid: int, prefs: Preferences) -> Rows:
    """The languages (each in its own name) and "as in Telegram" (no setting)."""
    buttons = [
        _b(f"{'• ' if prefs.language == code else ''}{name}", SetPref(uid=uid, field="lang", value=code))
        for code, name in LANGUAGES.items()
    ]
    auto = _b(
        ("• " if prefs.language is None else "") + _("As in Telegram"),
        SetPref(uid=uid, field="lang", value="auto"),
    )
    return [*_chunk(buttons, 2), [auto]]


def hours_rows(uid: int, prefs: Preferences, onb: int) -> Rows:
    buttons = [
        _b(
            f"{'• ' if prefs.active_hours == hours else ''}{texts.fmt_hours(hours)}",
            SetPref(uid=uid, field="hours", value=key, onb=onb),
        )
        for key, hours in texts.HOURS_CHOICES.items()
    ]
    return _chunk(buttons, 2)


# -- onboarding ----------------------------------------------------------------------------

ONBOARD_ORDER = ("kinds", "exch", "minp", "tz", "hours", "tiers", "keys", "done")


def onboarding(step: str, user: User, policy: TierPolicy, exchanges: Sequence[str]) -> InlineKeyboardMarkup:
    uid, prefs = user.id, user.preferences
    rows: Rows
    if step == "kinds":
        rows = kinds_rows(uid, prefs, policy, 1)
    elif step == "exch":
        rows = exchanges_rows(uid, prefs, exchanges, 1)
    elif step == "minp":
        rows = min_profit_rows(uid, prefs, 1, policy)
    elif step == "tz":
        rows = timezone_rows(uid, prefs, 1)
    elif step == "hours":
        rows = hours_rows(uid, prefs, 1)
    else:
        rows = []
    nxt = ONBOARD_ORDER[min(ONBOARD_ORDER.index(step) + 1, len(ONBOARD_ORDER) - 1)]
    label = _("Finish ✔️") if nxt == "done" else _("Next »")
    nav = [_b(label, Onboard(uid=uid, step=nxt))]
    if nxt != "done":
        nav.append(_b(_("Skip setup"), Onboard(uid=uid, step="done")))
    rows.append(nav)
    return InlineKeyboardMarkup(inline_keyboard=rows)


# -- /settings -----------------------------------------------------------------------------


def settings_main(uid: int, prefs: Preferences) -> InlineKeyboardMarkup:
    def menu(label: str, name: str) -> InlineKeyboardButton:
        return _b(label, SetPref(uid=uid, field="menu", value=name))

    rows: Rows = [
        [
            _b(
                _("Alerts: {state}").format(state=texts.on_off(prefs.pushes_on)),
                SetPref(uid=uid, field="push", value="0" if prefs.pushes_on else "1"),
            )
        ],
        [menu(_("Kinds »"), "kinds"), menu(_("Exchanges »"), "exch"), menu(_("Symbols »"), "sym")],
        [menu(_("Min profit per kind »"), "minp"), menu(_("Time zone »"), "tz")],
        [menu(_("Active hours »"), "hours"), menu(_("Language »"), "lang")],
        [
            _b(
                _("Outside hours: {outside}").format(outside=texts.outside_label(prefs.outside_hours)),
                SetPref(
                    uid=uid, field="outside", value="silent" if prefs.outside_hours == "hold" else "hold"
                ),
            )
        ],
        [
            _b(
                _mark(prefs.only_my_exchanges) + " " + _("Only my exchanges"),
                SetPref(uid=uid, field="mine", value="0" if prefs.only_my_exchanges else "1"),
            )
        ],
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)


def settings_menu(
    name: str,
    uid: int,
    prefs: Preferences,
    policy: TierPolicy,
    exchanges: Sequence[str],
    symbols: Sequence[str] = (),
) -> InlineKeyboardMarkup:
    if name == "kinds":
        rows = kinds_rows(uid, prefs, policy, 0)
    elif name == "exch":
        rows = exchanges_rows(uid, prefs, exchanges, 0)
    elif name == "sym":
        rows = symbols_rows(uid, prefs, symbols, 0)
    elif name == "minp":
        rows = min_profit_rows(uid, prefs, 0, policy)
    elif name == "tz":
        rows = timezone_rows(uid, prefs, 0)
    elif name == "hours":
        rows = hours_rows(uid, prefs, 0)
    elif name == "lang":
        rows = language_rows(uid, prefs)
    else:
        rows = []
    rows.append([_b(_("« Back"), SetPref(uid=uid, field="menu", value="main"))])
    return InlineKeyboardMarkup(inline_keyboard=rows)


# -- /opportunities ------------------------------------------------------------------------


def opportunities_page(
    uid: int, items: Sequence[OpenOpportunity], page: int, pages: int
) -> InlineKeyboardMarkup:
    rows: Rows = _chunk(
        [
            _b(str(page * 5 + i + 1), OppDetail(uid=uid, id=o.opportunity_id, page=page))
            for i, o in enumerate(items)
        ],
        5,
    )
    nav = []
    if page > 0:
        nav.append(_b(_("« Prev"), OppPage(uid=uid, page=page - 1)))
    if page + 1 < pages:
        nav.append(_b(_("Next »"), OppPage(uid=uid, page=page + 1)))
    if nav:
        rows.append(nav)
    return InlineKeyboardMarkup(inline_keyboard=rows)


def opportunity_detail(
    uid: int, page: int, opportunity_id: str | None = None, *, backtest: bool = False
) -> InlineKeyboardMarkup:
    """Back to the list; with ``backtest`` (spot spreads and funding carries) a "Backtest" button."""
    row = [_b(_("« Back to list"), OppPage(uid=uid, page=page))]
    if backtest and opportunity_id is not None:
        row.insert(0, _b(_("📈 Backtest 7 d"), OppBacktest(uid=uid, id=opportunity_id, page=page)))
    return InlineKeyboardMarkup(inline_keyboard=[row])


# -- /apikeys ------------------------------------------------------------------------------


def apikeys(user: User) -> InlineKeyboardMarkup | None:
    if not user.api_keys:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_b(_("🗑 Remove {exchange}").format(exchange=ex), KeyRemove(uid=user.id, exchange=ex))]
            for ex in sorted(user.api_keys)
        ]
    )


# -- groups --------------------------------------------------------------------------------


def group_settings(pushes_on: bool, min_net_bps: int) -> InlineKeyboardMarkup:
    rows: Rows = [
        [
            _b(
                _("Alerts: {state}").format(state=texts.on_off(pushes_on)),
                GroupSet(field="push", value="0" if pushes_on else "1"),
            )
        ],
        _chunk(
            [
                _b(
                    ("• " if min_net_bps == v else "") + _("spread {v} bps").format(v=v),
                    GroupSet(field="minp", value=str(v)),
                )
                for v in texts.MIN_PROFIT_CHOICES
            ],
            6,
        )[0],
    ]
    return InlineKeyboardMarkup(inline_keyboard=rows)
