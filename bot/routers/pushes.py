"""The buttons under a pushed message (``notify.keyboards.push``, data ``notify.keyboards.PushAction``).

- ``details``: the opportunity's card from the open-opportunity store (Redis), as a new
  message in a private chat (the push stays as it was), as an alert in a group (one
  member's question is not posted to everyone). Closed → "has closed"; a kind the
  presser's tier does not include → "not available". Free: the push already counted.
- ``mute1h``: the presser's alerts are muted for an hour (``/mute 0`` resumes).
- ``more``: the first page of ``/opportunities``, in the presser's private chat; it takes
  a unit of the quota like ``/opportunities`` does.

Every press is an ``engagement`` row (``action="push_button"``, ``detail`` the button and,
when refused, why) and, through the session gate, an ``audit`` row (``cb:pu``). The gate
applies as for every button: without an active session the press only offers /start.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from aiogram import Bot
from aiogram.types import CallbackQuery

from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers import opportunities as listing
from bot.routers.common import RouterSpec, answer, send
from core.accounts import TierPolicy, User
from core.lifecycle import OpenOpportunity
from notify import texts
from notify.i18n import _
from notify.keyboards import PushAction
from pipeline.deliveries import ENGAGEMENT_DATASET, engagement_table

log = logging.getLogger(__name__)
router = RouterSpec("pushes")

ENGAGEMENT_ACTION = "push_button"
ACTIONS = frozenset({"details", "mute1h", "more"})
ALERT_LIMIT = 200
"""Characters a callback answer may carry."""


def _alert(opp: OpenOpportunity) -> str:
    """A plain-text summary for a group's alert (callback answers are not HTML)."""
    c = opp.candidate
    legs = " / ".join(ex for ex in (c.buy_exchange, c.sell_exchange) if ex)
    edge = texts.candidate_edge(c)  # in the kind's unit: spot bps, funding % APR, technical none
    net = " · " + _("net {edge}").format(edge=edge) if edge else ""
    return f"{c.symbol} · {texts.KIND_LABELS[c.kind]} · {legs}{net}"[:ALERT_LIMIT]


async def _engagement(
    deps: BotDeps, user: User, chat_id: int, data: PushAction, kind: str | None, detail: str
) -> None:
    row: dict[str, Any] = {
        "ts": deps.now(),
        "user_id": user.id,
        "chat_id": chat_id,
        "action": ENGAGEMENT_ACTION,
        "opportunity_id": data.id,
        "kind": kind,
        "detail": detail,
    }
    await deps.emit(ENGAGEMENT_DATASET, engagement_table([row]))


async def _details(
    callback: CallbackQuery,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    opp: OpenOpportunity | None,
) -> str:
    """Show the card; returns "" or why it was refused."""
    if opp is None:
        await answer(callback, texts.OPPORTUNITY_CLOSED)
        return "closed"
    if not policy.allows_kind(opp.candidate.kind):
        await answer(callback, texts.NOT_AVAILABLE)
        return "not_available"
    msg = callback.message
    if msg is not None and msg.chat.type != "private":
        await answer(callback, _alert(opp), alert=True)
        return ""
    await answer(callback)
    await send(bot, msg.chat.id if msg is not None else user.id, texts.opportunity_card(opp, deps.now()))
    return ""


async def _mute(callback: CallbackQuery, deps: BotDeps, user: User) -> str:
    until = deps.now() + timedelta(hours=texts.PUSH_MUTE_HOURS)
    await deps.users.update_preferences(user.id, muted_until=until)
    await answer(callback, texts.push_muted_answer(until, user.preferences.timezone))
    return ""


async def _more(callback: CallbackQuery, bot: Bot, deps: BotDeps, user: User, policy: TierPolicy) -> str:
    text, markup, detail = await listing._page(deps, user, policy, 0)
    await answer(callback)
    await send(bot, user.id, text, markup)  # the list is personal: the presser's private chat
    return "quota" if detail == "quota" else ""


@router.callback_query(PushAction.filter())
async def cb_push(
    callback: CallbackQuery,
    callback_data: PushAction,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    audit: AuditNote,
) -> None:
    action = callback_data.action
    chat_id = callback.message.chat.id if callback.message is not None else user.id
    if action not in ACTIONS:
        audit.ok, audit.detail = False, f"unknown:{action[:20]}"
        await answer(callback, texts.UNKNOWN_BUTTON)
        return
    body = await deps.opportunities.get(callback_data.id)
    opp: OpenOpportunity | None = None
    if body is not None:
        try:
            opp = OpenOpportunity.from_dict(body)
        except (KeyError, ValueError, TypeError):
            log.warning("push button: malformed open opportunity %r", callback_data.id)
    if action == "details":
        refused = await _details(callback, bot, deps, user, policy, opp)
    elif action == "mute1h":
        refused = await _mute(callback, deps, user)
    else:
        refused = await _more(callback, bot, deps, user, policy)
    detail = f"{action}:{refused}" if refused else action
    audit.ok = not refused
    audit.detail = f"{detail} id={callback_data.id}"
    kind = opp.candidate.kind.value if opp is not None else (body or {}).get("kind")
    await _engagement(deps, user, chat_id, callback_data, kind, detail)
