"""``/opportunities``: the open opportunities this user may see, 5 a page, a details view each.

Visible = pushable, a kind the tier allows and the user wants, both legs on the user's
exchanges (and on exchanges they hold keys for with "only my exchanges"), a wanted
symbol, and at least the user's minimum for the kind, in its unit (spot: net bps; funding:
net APR %; technical signals, which carry no edge: confidence). Every page and every
details view takes one unit of the same daily/hourly quota as pushes
(``RedisQuotaStore.try_consume``); an empty list is free.

The details view of a spot spread or a funding carry has a "Backtest" button
(:class:`bot.callbacks.OppBacktest`): the last :data:`BACKTEST_DAYS` days of that kind,
symbol and legs from the lake (:mod:`pipeline.backtest`) — for a carry, what the position
(its notional a leg) would have earned after fees; for a spread, how often and how long it
was open above the user's spot minimum (``min_net_bps``) and its median net edge. The lake
is read in a thread (at most :data:`BACKTEST_TIMEOUT_S`); an unreadable lake gives a short
message. It takes no quota (the opportunity was already viewed; the throttle bounds it).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable

from aiogram import Bot
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot import keyboards
from bot.callbacks import OppBacktest, OppDetail, OppPage
from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import RouterSpec, answer, refuse_foreign, send, show
from core.accounts import TierPolicy, User
from core.eligibility import OpportunityView
from core.lifecycle import OpenOpportunity
from core.models import OpportunityKind
from notify import texts

log = logging.getLogger(__name__)
router = RouterSpec("opportunities")

PAGE_SIZE = 5
FETCH_LIMIT = 500
BACKTEST_DAYS = 7
BACKTEST_TIMEOUT_S = 20.0
BACKTEST_KINDS = frozenset({OpportunityKind.SPOT_SPREAD, OpportunityKind.FUNDING_RATE})


def is_visible(opp: OpenOpportunity, user: User, policy: TierPolicy) -> bool:
    c = opp.candidate
    prefs = user.preferences
    if not c.pushable or not policy.allows_kind(c.kind) or c.kind not in prefs.kinds:
        return False
    legs = {ex for ex in (c.buy_exchange, c.sell_exchange) if ex}
    if prefs.exchanges and not legs <= prefs.exchanges:
        return False
    if prefs.only_my_exchanges and not legs <= user.key_exchanges:
        return False
    if prefs.symbols and c.symbol not in prefs.symbols:
        return False
    # the minimum of the kind, in its unit (spot net bps, funding net APR %, technical confidence)
    value = OpportunityView.from_event(opp.to_dict()).threshold_value
    return math.isfinite(value) and value >= float(prefs.threshold(c.kind))


def visible(opps: Iterable[OpenOpportunity], user: User, policy: TierPolicy) -> list[OpenOpportunity]:
    return [o for o in opps if is_visible(o, user, policy)]


def _parse(raw: Iterable[dict[str, object]]) -> list[OpenOpportunity]:
    out = []
    for body in raw:
        try:
            out.append(OpenOpportunity.from_dict(body))
        except (KeyError, ValueError, TypeError):
            log.warning("skipping a malformed open opportunity: %r", body.get("opportunity_id"))
    return out


async def _quota_or_refuse(deps: BotDeps, user: User, policy: TierPolicy) -> tuple[bool, str, int | None]:
    now, tz = deps.now(), user.preferences.timezone
    res = await deps.quotas.try_consume(user.id, policy, now, tz=tz)
    if res.ok:
        return True, "", res.remaining_day
    hourly = res.remaining_day != 0
    return False, texts.quota_exhausted(policy, now, hourly=hourly, tz=tz), res.remaining_day


async def _page(
    deps: BotDeps, user: User, policy: TierPolicy, page: int
) -> tuple[str, keyboards.InlineKeyboardMarkup | None, str]:
    """(text, keyboard, audit detail) of one list page."""
    opps = visible(_parse(await deps.opportunities.open_opportunities(None, FETCH_LIMIT)), user, policy)
    if not opps:
        return texts.NO_OPPORTUNITIES, None, "empty"
    pages = math.ceil(len(opps) / PAGE_SIZE)
    page = max(0, min(page, pages - 1))
    ok, refusal, left = await _quota_or_refuse(deps, user, policy)
    if not ok:
        return refusal, None, "quota"
    items = opps[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    text = texts.opportunities_page(items, page, pages, len(opps), left)
    return text, keyboards.opportunities_page(user.id, items, page, pages), f"page={page}"


@router.message(Command("opportunities"))
async def cmd_opportunities(
    message: Message, bot: Bot, deps: BotDeps, user: User, policy: TierPolicy, audit: AuditNote
) -> None:
    text, markup, audit.detail = await _page(deps, user, policy, 0)
    audit.ok = audit.detail != "quota"
    await send(bot, message.chat.id, text, markup)


@router.callback_query(OppPage.filter())
async def cb_page(
    callback: CallbackQuery,
    callback_data: OppPage,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    audit: AuditNote,
) -> None:
    if await refuse_foreign(callback, callback_data.uid, audit):
        return
    text, markup, audit.detail = await _page(deps, user, policy, callback_data.page)
    audit.ok = audit.detail != "quota"
    await answer(callback)
    await show(bot, callback, text, markup)


@router.callback_query(OppDetail.filter())
async def cb_detail(
    callback: CallbackQuery,
    callback_data: OppDetail,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    audit: AuditNote,
) -> None:
    if await refuse_foreign(callback, callback_data.uid, audit):
        return
    body = await deps.opportunities.get(callback_data.id)
    opps = _parse([body]) if body is not None else []
    if not opps:
        audit.ok, audit.detail = False, "closed"
        await answer(callback, texts.OPPORTUNITY_CLOSED)
        return
    opp = opps[0]
    if not is_visible(opp, user, policy):
        audit.ok, audit.detail = False, "not_visible"
        await answer(callback, texts.NOT_AVAILABLE)
        return
    ok, refusal, _left = await _quota_or_refuse(deps, user, policy)
    await answer(callback)
    if not ok:
        audit.ok, audit.detail = False, "quota"
        await show(bot, callback, refusal, None)
        return
    audit.detail = f"id={opp.opportunity_id}"
    await show(
        bot,
        callback,
        texts.opportunity_card(opp, deps.now()),
        keyboards.opportunity_detail(
            user.id,
            callback_data.page,
            opp.opportunity_id,
            backtest=_backtestable(opp),
        ),
    )


def _backtestable(opp: OpenOpportunity) -> bool:
    c = opp.candidate
    return c.kind in BACKTEST_KINDS and bool(c.buy_exchange) and bool(c.sell_exchange)


async def backtest_text(deps: BotDeps, opp: OpenOpportunity, user: User) -> tuple[str, str]:
    """(text, audit detail) of one opportunity's backtest, read off the event loop."""
    from core.fees import FeeSchedule
    from pipeline.backtest import funding_carry, spot_spread
    from pipeline.lake import Lake

    c = opp.candidate
    settings = deps.settings
    now = deps.now()
    buy, sell = str(c.buy_exchange), str(c.sell_exchange)

    def read() -> str:
        lake = Lake.from_settings(settings.lake)
        fees = FeeSchedule.build(settings.fees)
        if c.kind is OpportunityKind.FUNDING_RATE:
            notional = c.notional_usd if math.isfinite(c.notional_usd) and c.notional_usd > 0 else 10_000.0
            carry = funding_carry(
                lake, c.symbol, buy, sell, end=now, days=BACKTEST_DAYS, notional=notional, fees=fees
            )
            return texts.backtest_funding(carry, BACKTEST_DAYS)
        spread = spot_spread(
            lake,
            c.symbol,
            buy,
            sell,
            end=now,
            days=BACKTEST_DAYS,
            threshold_bps=float(user.preferences.min_net_bps),
            fees=fees,
            freshness_s=max(settings.opportunities.freshness_s, settings.market.poll_interval_s),
        )
        return texts.backtest_spot(spread, BACKTEST_DAYS)

    try:
        text = await asyncio.wait_for(asyncio.to_thread(read), BACKTEST_TIMEOUT_S)
    except Exception as exc:  # an unreadable lake is a short message, never a crash
        log.warning("backtest of %s: the lake could not be read: %s", opp.opportunity_id, exc)
        return texts.BACKTEST_FAILED, "lake_error"
    return text, f"id={opp.opportunity_id}"


@router.callback_query(OppBacktest.filter())
async def cb_backtest(
    callback: CallbackQuery,
    callback_data: OppBacktest,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    audit: AuditNote,
) -> None:
    if await refuse_foreign(callback, callback_data.uid, audit):
        return
    body = await deps.opportunities.get(callback_data.id)
    opps = _parse([body]) if body is not None else []
    if not opps:
        audit.ok, audit.detail = False, "closed"
        await answer(callback, texts.OPPORTUNITY_CLOSED)
        return
    opp = opps[0]
    if not is_visible(opp, user, policy) or not _backtestable(opp):
        audit.ok, audit.detail = False, "not_visible"
        await answer(callback, texts.NOT_AVAILABLE)
        return
    await answer(callback)  # before the lake read: Telegram wants an answer within seconds
    text, audit.detail = await backtest_text(deps, opp, user)
    audit.ok = audit.detail != "lake_error"
    msg = callback.message
    await send(bot, msg.chat.id if msg is not None else user.id, text)
