"""Texts of the session gate, /help, /start and onboarding, the tiers, /status, /stop and
/mute."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from core.accounts import Command, Preferences, Tier, TierPolicy, User
from core.models import OpportunityKind
from core.sessions import Session
from notify.i18n import _, lazy

if TYPE_CHECKING:
    pass
from notify.texts.base import (
    _CONSTANTS,
    KIND_SHORT,
    MUTE_MAX_HOURS,
    Translated,
    apikeys_howto,
    esc,
    fmt_dt,
    fmt_duration,
    fmt_hours,
    fmt_quota,
    language_name,
    on_off,
    thresholds_text,
    tier_label,
)

# -- the session gate ----------------------------------------------------------------------

_CONSTANTS["START_BUTTON"] = lambda: _("▶️ Start a session")


def no_session(expired: bool) -> str:
    if expired:
        return _(
            "⌛ Your session <b>expired</b> (7 days without activity), so alerts are paused.\n"
            "Start a new one to continue — your settings are kept."
        )
    return _("You need an active session for that. Start one to receive alerts and use the bot.")


def no_session_short(expired: bool) -> str:
    """Plain text (a callback answer is not HTML)."""
    return _("Your session expired: start a new one.") if expired else _("Start a session first.")


_CONSTANTS["SLOW_DOWN"] = lambda: _("🐢 Slow down a little — I'll answer again in a moment.")
_CONSTANTS["NOT_YOURS"] = lambda: _("This button isn't yours.")
_CONSTANTS["NOT_AVAILABLE"] = lambda: _("That isn't available.")
_CONSTANTS["UNKNOWN_BUTTON"] = lambda: _("This button is no longer valid.")
_CONSTANTS["PRIVATE_ONLY"] = lambda: _("For your safety this works only in a private chat with me.")
_CONSTANTS["ERROR"] = lambda: _("Something went wrong on our side. Please try again in a minute.")


def tier_required(command: str, tier: Tier) -> str:
    return _("/{command} needs the <b>{tier}</b> tier or above. See /subscription.").format(
        command=esc(command), tier=tier_label(tier)
    )


def unknown_command(command: str) -> str:
    return _("I don't know /{command}. Send /help to see what I can do.").format(command=esc(command))


_CONSTANTS["NOT_A_COMMAND"] = lambda: _("I understand commands only. Send /help to see them.")


# -- help ----------------------------------------------------------------------------------

COMMAND_HELP: Mapping[Command, str] = Translated(
    {
        Command.START: lazy("start a session (alerts for 7 days, renewed whenever you use me)"),
        Command.HELP: lazy("this list"),
        Command.OPPORTUNITIES: lazy("open opportunities you can see now"),
        Command.SETTINGS: lazy("what you get alerted about, and when"),
        Command.MUTE: lazy("pause alerts for some hours: /mute 3 (/mute 0 resumes)"),
        Command.STATUS: lazy("your session, tier and today's quota"),
        Command.SUBSCRIPTION: lazy("tiers, limits and how to upgrade"),
        Command.APIKEYS: lazy("read-only exchange API keys (private chat)"),
        Command.WEBHOOKS: lazy("your pushes POSTed to your HTTPS endpoint, signed (private chat)"),
        Command.STOP: lazy("end your session and stop alerts"),
        Command.FORGET: lazy("delete everything I hold about you"),
        Command.ADMIN: lazy("stats, tiers, broadcast"),
    }
)


def help_text(policy: TierPolicy, *, has_session: bool) -> str:
    lines = [
        _("<b>arbflow</b> — crypto arbitrage alerts. Your tier: <b>{tier}</b>.").format(
            tier=tier_label(policy.tier)
        ),
        "",
    ]
    for cmd in Command:
        if cmd in policy.commands:
            lines.append(f"/{cmd.value} — {COMMAND_HELP[cmd]}")
    if not has_session:
        lines += ["", _("You have no active session: send /start to begin.")]
    return "\n".join(lines)


# -- /start and onboarding -----------------------------------------------------------------


def display_name(user: User) -> str:
    return esc(user.first_name or (f"@{user.username}" if user.username else _("there")))


def started(user: User, session: Session, *, returning: bool) -> str:
    if returning:
        return _(
            "👋 Welcome back, {name}! A new session is active until "
            "{until}; your settings are kept. /settings to review them, "
            "/opportunities to see what's open now."
        ).format(name=display_name(user), until=fmt_dt(session.expires_at))
    return _(
        "👋 Hi {name}! You're opted in: alerts are on for 7 days and renewed "
        "every time you use me. /stop ends it whenever you like.\n\nLet's set you up in a few taps."
    ).format(name=display_name(user))


def session_active(session: Session) -> str:
    return _("✅ Your session is active until {until}. /help lists the commands.").format(
        until=fmt_dt(session.expires_at)
    )


def onboard_kinds(prefs: Preferences, policy: TierPolicy) -> str:
    return _(
        "<b>1/7 · What should I look for?</b>\nTap to toggle. 🔒 kinds need a higher tier (/subscription)."
    )


def onboard_exchanges(prefs: Preferences) -> str:
    chosen = ", ".join(sorted(prefs.exchanges)) if prefs.exchanges else _("all")
    return _(
        "<b>2/7 · Which exchanges?</b>\n"
        "Both legs of an opportunity must be on one of them. Now: <b>{chosen}</b>."
    ).format(chosen=esc(chosen))


MIN_PROFIT_UNITS: Mapping[OpportunityKind, str] = Translated(
    {
        OpportunityKind.SPOT_SPREAD: lazy(
            "spot spreads — the net edge after fees, in bps (1 bps = 0.01%), now"
        ),
        OpportunityKind.FUNDING_RATE: lazy("funding rates — the net return a year after fees, in % APR"),
        OpportunityKind.TECHNICAL: lazy("technical signals — no edge: the minimum confidence"),
    }
)


def onboard_min_profit(prefs: Preferences, policy: TierPolicy | None = None) -> str:
    kinds = [k for k in OpportunityKind if policy is None or policy.allows_kind(k)]
    lines = [
        _("<b>3/7 · Minimum profit, per kind</b>"),
        _("Each kind in its own unit:"),
        *(f"• {MIN_PROFIT_UNITS[k]}" for k in kinds),
        _("Now: <b>{value}</b>.").format(value=esc(thresholds_text(prefs, kinds))),
    ]
    return "\n".join(lines)


def onboard_timezone(prefs: Preferences) -> str:
    return _("<b>4/7 · Your time zone</b>\nNow: <b>{zone}</b>.").format(zone=esc(prefs.timezone))


def onboard_hours(prefs: Preferences) -> str:
    return _("<b>5/7 · When may I send alerts?</b>\nLocal time ({zone}). Now: <b>{hours}</b>.").format(
        zone=esc(prefs.timezone), hours=fmt_hours(prefs.active_hours)
    )


def onboard_tiers(tiers: Mapping[Tier, TierPolicy], current: Tier) -> str:
    return _("<b>6/7 · Tiers</b>") + "\n" + tiers_table(tiers, current)


def onboard_apikeys(policy: TierPolicy) -> str:
    return _("<b>7/7 · Exchange API keys (optional)</b>") + "\n" + apikeys_howto(policy)


def onboard_done() -> str:
    return _(
        "🎉 All set. I'll alert you when something matches. "
        "/opportunities shows what's open now, /settings changes any of this, /help lists everything."
    )


# -- tiers / subscription -------------------------------------------------------------------


def tier_line(policy: TierPolicy) -> str:
    kinds = ", ".join(KIND_SHORT[k] for k in OpportunityKind if k in policy.kinds)
    delay = _(", {n} min delay").format(n=policy.delay_s // 60) if policy.delay_s >= 60 else ""
    return _("<b>{tier}</b>: {kinds}; {day}/day, {hour}/hour{delay}").format(
        tier=tier_label(policy.tier),
        kinds=kinds,
        day=fmt_quota(policy.daily_quota),
        hour=fmt_quota(policy.hourly_quota),
        delay=delay,
    )


def tiers_table(tiers: Mapping[Tier, TierPolicy], current: Tier) -> str:
    lines = []
    for tier in Tier:
        if tier is Tier.SUPERADMIN:
            continue
        mark = _(" ← you") if tier is current else ""
        lines.append("• " + tier_line(tiers[tier]) + mark)
    lines.append(_("API keys (/apikeys) need Basic or above."))
    return "\n".join(lines)


def subscription_text(tiers: Mapping[Tier, TierPolicy], current: Tier) -> str:
    upgrade = (
        _(
            "To upgrade, message the team (reply here with /subscription and your wish) — an admin "
            "switches your tier; it applies at once."
        )
        if current < Tier.ENTERPRISE
        else _("You have the top tier. Thank you!")
    )
    return _(
        "<b>Your tier: {tier}</b>\n\n{table}\n\n"
        "Quotas count alerts and /opportunities views together; the daily one resets at midnight "
        "in your time zone (/settings), the hourly one every hour.\n{upgrade}"
    ).format(tier=tier_label(current), table=tiers_table(tiers, current), upgrade=upgrade)


# -- status / stop / mute -------------------------------------------------------------------


def status_text(
    user: User,
    session: Session,
    policy: TierPolicy,
    remaining: tuple[int | None, int | None],
    now: datetime,
) -> str:
    prefs = user.preferences
    left_day, left_hour = remaining
    muted = (
        _("muted until {until}").format(until=fmt_dt(prefs.muted_until, prefs.timezone))
        if prefs.muted_until is not None and prefs.muted_until > now
        else _("not muted")
    )
    return "\n".join(
        [
            _("<b>Status</b>"),
            _("Session: active until {until} (in {left})").format(
                until=fmt_dt(session.expires_at, prefs.timezone), left=fmt_duration(session.expires_at - now)
            ),
            _("Tier: <b>{tier}</b>").format(tier=tier_label(policy.tier)),
            _("Quota left: {day} today (resets at 00:00 {zone}), {hour} this hour").format(
                day=fmt_quota(left_day), zone=esc(prefs.timezone), hour=fmt_quota(left_hour)
            ),
            _("Alerts: {state}, {muted}").format(state=on_off(prefs.pushes_on), muted=muted),
            _("Active hours: {hours} ({zone})").format(
                hours=fmt_hours(prefs.active_hours), zone=esc(prefs.timezone)
            ),
            _("Language: {language}").format(language=language_name(prefs.language)),
        ]
    )


_CONSTANTS["STOPPED"] = lambda: _(
    "👋 Session ended: no more alerts. Send /start whenever you want them back."
)
_CONSTANTS["NOTHING_TO_STOP"] = lambda: _("You have no active session. /start begins one.")

_CONSTANTS["FORGET_ASK"] = lambda: _(
    "🗑 <b>Delete your data?</b>\nYour settings, API keys, session, quotas and queued alerts "
    "are deleted at once and cannot be restored. What the analytics keep about past alerts "
    "is only a number standing for your chat, never your name.\nYou can /start again later, "
    "as a new user."
)
_CONSTANTS["FORGET_YES"] = lambda: _("Delete everything")
_CONSTANTS["FORGET_NO"] = lambda: _("Cancel")
_CONSTANTS["FORGOTTEN"] = lambda: _(
    "Done: I hold nothing about you any more. /start whenever you want alerts again."
)
_CONSTANTS["FORGET_CANCELLED"] = lambda: _("Nothing was deleted.")


def muted(until: datetime, tz: str) -> str:
    return _("🔕 Muted until {until}. /mute 0 turns alerts back on.").format(until=fmt_dt(until, tz))


_CONSTANTS["UNMUTED"] = lambda: _("🔔 Alerts are back on.")
_CONSTANTS["MUTE_USAGE"] = lambda: _(
    "Usage: /mute [hours] — 1 by default, up to {max}; /mute 0 resumes."
).format(max=MUTE_MAX_HOURS)
