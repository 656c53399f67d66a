"""``/start [payload]`` (opt-in, deep links, onboarding), the "Start a session" button, ``/stop``."""

from __future__ import annotations

import re

from aiogram import Bot
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message

from bot import keyboards
from bot.callbacks import Onboard, StartSession
from bot.deps import BotDeps
from bot.middlewares import AuditNote
from bot.routers.common import (
    SCREEN_OF,
    SESSION_EVENTS_DATASET,
    STEP_OF,
    RouterSpec,
    advance,
    answer,
    end_session,
    refuse_foreign,
    send,
    show,
)
from core.accounts import OnboardingStep, TierPolicy, User
from core.sessions import EndReason, start_events
from notify import texts
from state.sessions import session_events_table

router = RouterSpec("start")

_PAYLOAD = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def onboarding_screen(
    step: str, user: User, policy: TierPolicy, deps: BotDeps
) -> tuple[str, InlineKeyboardMarkup | None]:
    prefs = user.preferences
    if step == "done":
        return texts.onboard_done(), None
    text = {
        "kinds": lambda: texts.onboard_kinds(prefs, policy),
        "exch": lambda: texts.onboard_exchanges(prefs),
        "minp": lambda: texts.onboard_min_profit(prefs, policy),
        "tz": lambda: texts.onboard_timezone(prefs),
        "hours": lambda: texts.onboard_hours(prefs),
        "tiers": lambda: texts.onboard_tiers(deps.tiers, policy.tier),
        "keys": lambda: texts.onboard_apikeys(policy),
    }[step]()
    return text, keyboards.onboarding(step, user, policy, deps.exchanges)


async def start_flow(
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    chat_id: int,
    payload: str | None,
    note: AuditNote,
) -> None:
    """Opt in: the active session (kept) or a new one; then welcome or onboarding."""
    now = deps.now()
    res = await deps.cache.start(user.id, chat_id, now)
    events = start_events(res.session, res.created, res.previous)
    await deps.emit(SESSION_EVENTS_DATASET, session_events_table(events))
    note.detail = events[-1].event.value if events else "active"

    if (
        payload
        and _PAYLOAD.match(payload)
        and user.referral is None
        and user.onboarding_step is (OnboardingStep.NEW)
    ):
        await deps.users.update_fields(user.id, referral=payload)
        user.referral = payload
        note.detail += f" ref={payload}"
    await advance(deps, user, OnboardingStep.OPTED_IN)

    done = user.onboarding_step is OnboardingStep.DONE
    if not res.created:
        await send(bot, chat_id, texts.session_active(res.session))
    else:
        returning = res.session.seq > 1 or done
        await send(bot, chat_id, texts.started(user, res.session, returning=returning))
    if done:
        return
    step = SCREEN_OF.get(user.onboarding_step, "kinds")
    await advance(deps, user, STEP_OF[step])
    text, markup = onboarding_screen(step, user, policy, deps)
    await send(bot, chat_id, text, markup)


@router.message(CommandStart())
async def cmd_start(
    message: Message,
    command: CommandObject,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    audit: AuditNote,
) -> None:
    await start_flow(bot, deps, user, policy, message.chat.id, command.args, audit)


@router.callback_query(StartSession.filter())
async def cb_start(
    callback: CallbackQuery, bot: Bot, deps: BotDeps, user: User, policy: TierPolicy, audit: AuditNote
) -> None:
    await answer(callback)
    chat_id = callback.message.chat.id if callback.message is not None else callback.from_user.id
    await start_flow(bot, deps, user, policy, chat_id, None, audit)


@router.callback_query(Onboard.filter())
async def cb_onboard(
    callback: CallbackQuery,
    callback_data: Onboard,
    bot: Bot,
    deps: BotDeps,
    user: User,
    policy: TierPolicy,
    audit: AuditNote,
) -> None:
    if await refuse_foreign(callback, callback_data.uid, audit):
        return
    step = callback_data.step
    if step not in STEP_OF:
        audit.ok, audit.detail = False, "bad_step"
        await answer(callback, texts.NOT_AVAILABLE)
        return
    audit.action = f"onboard:{step}"
    await advance(deps, user, STEP_OF[step])
    await answer(callback)
    text, markup = onboarding_screen(step, user, policy, deps)
    await show(bot, callback, text, markup)


@router.message(Command("stop"))
async def cmd_stop(message: Message, bot: Bot, deps: BotDeps, user: User, audit: AuditNote) -> None:
    ended = await end_session(deps, user.id, EndReason.STOP)
    audit.detail = "ended" if ended else "none"
    await send(bot, message.chat.id, texts.STOPPED if ended else texts.NOTHING_TO_STOP)
