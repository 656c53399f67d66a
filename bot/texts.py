"""Every word the bot says, as Telegram HTML (parse mode HTML).

Rules: everything user-supplied (names, symbols, payloads, broadcast text) goes through
:func:`esc`; only the tags Telegram knows are used (``b i u s code pre a blockquote``);
messages are short, and :func:`split_message` cuts longer ones at line boundaries into
parts of at most 4096 characters without breaking a tag or an entity. Renderers take
data (users, sessions, opportunities) and return strings: no I/O here.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from core.accounts import Command, Preferences, Tier, TierPolicy, User, next_local_midnight
from core.alerts import AlertKind, AlertNotice, NoticeEvent
from core.lifecycle import OpenOpportunity
from core.missed import MissedDigest, MissedItem, UpgradeOffer
from core.models import OpportunityKind, Priority, RejectReason
from core.notifications import Digest, Notification
from core.sessions import Session

if TYPE_CHECKING:
    from pipeline.analytics import DeliveryFigures
    from pipeline.backtest import FundingCarryResult, SpotSpreadResult

TELEGRAM_LIMIT = 4096


def esc(value: object) -> str:
    """HTML-escape anything user-supplied (quotes too: it may end up in an attribute)."""
    return html.escape(str(value), quote=True)


# -- splitting -----------------------------------------------------------------------------

_TOKEN = re.compile(r"<[^<>]*>|&#?\w+;|\n|[^<&\n]+|[<&]")
_TAG = re.compile(r"<\s*(/)?\s*([a-zA-Z][\w-]*)")


def _closing(stack: Sequence[tuple[str, str]]) -> str:
    return "".join(f"</{name}>" for name, _ in reversed(stack))


def _opening(stack: Sequence[tuple[str, str]]) -> str:
    return "".join(tag for _, tag in stack)


def split_message(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` characters.

    Parts end at a line break when one is available (the break itself is dropped), else
    inside a line between two characters, never inside a tag or an entity (``&amp;``).
    Tags still open at a cut are closed at the end of the part and opened again at the
    start of the next one. Lengths are counted on the HTML, which is never shorter than
    what Telegram counts after parsing, so each part is accepted.
    """
    if limit < 64:
        raise ValueError("limit too small to carry tags across parts")
    if len(text) <= limit:
        return [text] if text else []
    tokens: list[str] = []
    for tok in _TOKEN.findall(text):
        if tok.startswith(("<", "&")) or tok == "\n" or len(tok) <= 256:
            tokens.append(tok)
        else:
            tokens.extend(tok[i : i + 256] for i in range(0, len(tok), 256))
    parts: list[str] = []
    stack: list[tuple[str, str]] = []  # tags open after every token taken so far
    cur: list[str] = [""]  # cur[0]: the tags re-opened at the start of this part
    cur_len = 0
    brk: tuple[int, list[tuple[str, str]], int] | None = None  # (index in cur, stack, length before)

    def flush(upto: int | None, at_stack: list[tuple[str, str]]) -> None:
        nonlocal cur, cur_len, brk
        body = "".join(cur if upto is None else cur[:upto])
        part = (body + _closing(at_stack)).strip("\n")
        if _TAGS_ONLY.sub("", part).strip():
            parts.append(part)
        rest = [] if upto is None else cur[upto + 1 :]  # the break itself is dropped
        cur = [_opening(at_stack), *rest]
        cur_len = sum(len(t) for t in cur)
        brk = None

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        room = limit - len(_closing(stack))
        if cur_len + len(tok) > room:
            if brk is not None and brk[2] > len(cur[0]):
                flush(brk[0], brk[1])  # ``stack`` is unchanged: the carried tokens were taken
                continue
            is_text = not tok.startswith(("<", "&")) and tok != "\n"
            fit = room - cur_len
            if is_text and fit > 0:
                cur.append(tok[:fit])
                tokens[i] = tok[fit:]
                flush(None, stack)
                continue
            if len(cur) == 1:
                raise ValueError("cannot split: tags nest too deep for the limit")
            flush(None, stack)
            continue
        if tok == "\n":
            brk = (len(cur), list(stack), cur_len)
        elif tok.startswith("<"):
            _track(stack, tok)
        cur.append(tok)
        cur_len += len(tok)
        i += 1
    flush(None, stack)
    return parts


_TAGS_ONLY = re.compile(r"<[^<>]*>")


def _track(stack: list[tuple[str, str]], tok: str) -> None:
    m = _TAG.match(tok)
    if not m:
        return
    name = m.group(2).lower()
    if m.group(1):
        for j in range(len(stack) - 1, -1, -1):
            if stack[j][0] == name:
                del stack[j:]
                return
    elif not tok.endswith("/>"):
        stack.append((name, tok))


# -- small formats ---------------------------------------------------------------------------

KIND_LABELS: Mapping[OpportunityKind, str] = {
    OpportunityKind.SPOT_SPREAD: "Spot spreads",
    OpportunityKind.FUNDING_RATE: "Funding rates",
    OpportunityKind.TECHNICAL: "Technical signals",
}
KIND_SHORT: Mapping[OpportunityKind, str] = {
    OpportunityKind.SPOT_SPREAD: "spread",
    OpportunityKind.FUNDING_RATE: "funding",
    OpportunityKind.TECHNICAL: "signal",
}
TIER_LABELS: Mapping[Tier, str] = {
    Tier.FREE: "Free",
    Tier.BASIC: "Basic",
    Tier.PREMIUM: "Premium",
    Tier.ENTERPRISE: "Enterprise",
    Tier.SUPERADMIN: "SuperAdmin",
}

TIMEZONES: tuple[str, ...] = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Moscow",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "America/Sao_Paulo",
)
"""The time zones offered by buttons (callback data carries the index)."""

HOURS_CHOICES: Mapping[str, tuple[int, int] | None] = {
    "all": None,
    "8-22": (8, 22),
    "9-18": (9, 18),
    "7-23": (7, 23),
    "18-2": (18, 2),
}
"""Active-hour windows offered by buttons (local ``[start, end)``)."""

MIN_PROFIT_CHOICES: tuple[int, ...] = (0, 5, 10, 20, 50, 100)
"""Spot: minimum net edge choices, basis points (an instant edge, after fees)."""
MIN_APR_CHOICES: tuple[int, ...] = (0, 5, 10, 20, 50, 100)
"""Funding: minimum net APR choices, percent a year."""
MIN_CONFIDENCE_CHOICES: tuple[str, ...] = ("0", "0.75", "0.8", "0.9")
"""Technical: minimum confidence choices (a signal has no edge); ``"0"`` = every signal."""

MUTE_MAX_HOURS = 24 * 30


def fmt_dt(value: datetime, tz: str = "UTC") -> str:
    from zoneinfo import ZoneInfo

    local = value.astimezone(ZoneInfo(tz))
    return f"{local:%Y-%m-%d %H:%M} {esc(tz)}"


def fmt_duration(delta: timedelta) -> str:
    secs = max(0, int(delta.total_seconds()))
    days, rem = divmod(secs, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def fmt_bps(value: float | Decimal | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):+.1f} bps"


def fmt_apr(fraction: float | Decimal | None) -> str:
    """A return a year given as a fraction (``0.2``) → ``+20.0% APR``."""
    if fraction is None or not math.isfinite(float(fraction)):
        return "n/a"
    return f"{float(fraction) * 100:+.1f}% APR"


def fmt_bps_day(apr_fraction: float | None) -> str:
    """A return a year (fraction) as basis points a day (365-day year)."""
    if apr_fraction is None or not math.isfinite(apr_fraction):
        return "n/a"
    return f"{apr_fraction * 10_000 / 365:+.1f} bps/day"


def fmt_horizon(hours: float | None) -> str:
    if hours is None or not math.isfinite(hours):
        return "n/a"
    return f"{hours:g} h"


def fmt_threshold(kind: OpportunityKind, value: Decimal) -> str:
    """One kind's user minimum in its unit."""
    if kind is OpportunityKind.FUNDING_RATE:
        return f"net ≥ {float(value):g}% APR" if value else "any net APR"
    if kind is OpportunityKind.TECHNICAL:
        return f"confidence ≥ {float(value):.2f}" if value else "any confidence"
    return f"net ≥ {float(value):g} bps" if value else "any net edge"


def thresholds_text(prefs: Preferences, kinds: Iterable[OpportunityKind] = tuple(OpportunityKind)) -> str:
    """The user's minimums, one per kind: ``spread net ≥ 10 bps · funding net ≥ 20% APR …``."""
    return " · ".join(f"{KIND_SHORT[k]} {fmt_threshold(k, prefs.threshold(k))}" for k in kinds)


def fmt_usd(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"${value:,.0f}"


def fmt_hours(hours: tuple[int, int] | None) -> str:
    if hours is None:
        return "always"
    start, end = hours
    return f"{start:02d}:00-{end:02d}:00"


def fmt_quota(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def tier_label(tier: Tier) -> str:
    return TIER_LABELS[tier]


# -- the session gate ----------------------------------------------------------------------

START_BUTTON = "▶️ Start a session"


def no_session(expired: bool) -> str:
    if expired:
        return (
            "⌛ Your session <b>expired</b> (7 days without activity), so alerts are paused.\n"
            "Start a new one to continue — your settings are kept."
        )
    return "You need an active session for that. Start one to receive alerts and use the bot."


def no_session_short(expired: bool) -> str:
    """Plain text (a callback answer is not HTML)."""
    return "Your session expired: start a new one." if expired else "Start a session first."


SLOW_DOWN = "🐢 Slow down a little — I'll answer again in a moment."
NOT_YOURS = "This button isn't yours."
NOT_AVAILABLE = "That isn't available."
UNKNOWN_BUTTON = "This button is no longer valid."
PRIVATE_ONLY = "For your safety this works only in a private chat with me."
ERROR = "Something went wrong on our side. Please try again in a minute."


def tier_required(command: str, tier: Tier) -> str:
    return f"/{esc(command)} needs the <b>{tier_label(tier)}</b> tier or above. See /subscription."


def unknown_command(command: str) -> str:
    return f"I don't know /{esc(command)}. Send /help to see what I can do."


NOT_A_COMMAND = "I understand commands only. Send /help to see them."


# -- help ----------------------------------------------------------------------------------

COMMAND_HELP: Mapping[Command, str] = {
    Command.START: "start a session (alerts for 7 days, renewed whenever you use me)",
    Command.HELP: "this list",
    Command.OPPORTUNITIES: "open opportunities you can see now",
    Command.SETTINGS: "what you get alerted about, and when",
    Command.MUTE: "pause alerts for some hours: /mute 3 (/mute 0 resumes)",
    Command.STATUS: "your session, tier and today's quota",
    Command.SUBSCRIPTION: "tiers, limits and how to upgrade",
    Command.APIKEYS: "read-only exchange API keys (private chat)",
    Command.STOP: "end your session and stop alerts",
    Command.FORGET: "delete everything I hold about you",
    Command.ADMIN: "stats, tiers, broadcast",
}


def help_text(policy: TierPolicy, *, has_session: bool) -> str:
    lines = [f"<b>arbflow</b> — crypto arbitrage alerts. Your tier: <b>{tier_label(policy.tier)}</b>.", ""]
    for cmd in Command:
        if cmd in policy.commands:
            lines.append(f"/{cmd.value} — {COMMAND_HELP[cmd]}")
    if not has_session:
        lines += ["", "You have no active session: send /start to begin."]
    return "\n".join(lines)


# -- /start and onboarding -----------------------------------------------------------------


def display_name(user: User) -> str:
    return esc(user.first_name or (f"@{user.username}" if user.username else "there"))


def started(user: User, session: Session, *, returning: bool) -> str:
    if returning:
        return (
            f"👋 Welcome back, {display_name(user)}! A new session is active until "
            f"{fmt_dt(session.expires_at)}; your settings are kept. /settings to review them, "
            "/opportunities to see what's open now."
        )
    return (
        f"👋 Hi {display_name(user)}! You're opted in: alerts are on for 7 days and renewed "
        "every time you use me. /stop ends it whenever you like.\n\nLet's set you up in a few taps."
    )


def session_active(session: Session) -> str:
    return f"✅ Your session is active until {fmt_dt(session.expires_at)}. /help lists the commands."


def onboard_kinds(prefs: Preferences, policy: TierPolicy) -> str:
    return "<b>1/7 · What should I look for?</b>\nTap to toggle. 🔒 kinds need a higher tier (/subscription)."


def onboard_exchanges(prefs: Preferences) -> str:
    chosen = ", ".join(sorted(prefs.exchanges)) if prefs.exchanges else "all"
    return (
        "<b>2/7 · Which exchanges?</b>\n"
        f"Both legs of an opportunity must be on one of them. Now: <b>{esc(chosen)}</b>."
    )


MIN_PROFIT_UNITS: Mapping[OpportunityKind, str] = {
    OpportunityKind.SPOT_SPREAD: "spot spreads — the net edge after fees, in bps (1 bps = 0.01%), now",
    OpportunityKind.FUNDING_RATE: "funding rates — the net return a year after fees, in % APR",
    OpportunityKind.TECHNICAL: "technical signals — no edge: the minimum confidence",
}


def onboard_min_profit(prefs: Preferences, policy: TierPolicy | None = None) -> str:
    kinds = [k for k in OpportunityKind if policy is None or policy.allows_kind(k)]
    lines = [
        "<b>3/7 · Minimum profit, per kind</b>",
        "Each kind in its own unit:",
        *(f"• {MIN_PROFIT_UNITS[k]}" for k in kinds),
        f"Now: <b>{esc(thresholds_text(prefs, kinds))}</b>.",
    ]
    return "\n".join(lines)


def onboard_timezone(prefs: Preferences) -> str:
    return f"<b>4/7 · Your time zone</b>\nNow: <b>{esc(prefs.timezone)}</b>."


def onboard_hours(prefs: Preferences) -> str:
    return (
        "<b>5/7 · When may I send alerts?</b>\n"
        f"Local time ({esc(prefs.timezone)}). Now: <b>{fmt_hours(prefs.active_hours)}</b>."
    )


def onboard_tiers(tiers: Mapping[Tier, TierPolicy], current: Tier) -> str:
    return "<b>6/7 · Tiers</b>\n" + tiers_table(tiers, current)


def onboard_apikeys(policy: TierPolicy) -> str:
    return "<b>7/7 · Exchange API keys (optional)</b>\n" + apikeys_howto(policy)


def onboard_done() -> str:
    return (
        "🎉 All set. I'll alert you when something matches. "
        "/opportunities shows what's open now, /settings changes any of this, /help lists everything."
    )


# -- tiers / subscription -------------------------------------------------------------------


def tier_line(policy: TierPolicy) -> str:
    kinds = ", ".join(KIND_SHORT[k] for k in OpportunityKind if k in policy.kinds)
    delay = f", {policy.delay_s // 60} min delay" if policy.delay_s >= 60 else ""
    return (
        f"<b>{tier_label(policy.tier)}</b>: {kinds}; {fmt_quota(policy.daily_quota)}/day, "
        f"{fmt_quota(policy.hourly_quota)}/hour{delay}"
    )


def tiers_table(tiers: Mapping[Tier, TierPolicy], current: Tier) -> str:
    lines = []
    for tier in Tier:
        if tier is Tier.SUPERADMIN:
            continue
        mark = " ← you" if tier is current else ""
        lines.append("• " + tier_line(tiers[tier]) + mark)
    lines.append("API keys (/apikeys) need Basic or above.")
    return "\n".join(lines)


def subscription_text(tiers: Mapping[Tier, TierPolicy], current: Tier) -> str:
    upgrade = (
        "To upgrade, message the team (reply here with /subscription and your wish) — an admin "
        "switches your tier; it applies at once."
        if current < Tier.ENTERPRISE
        else "You have the top tier. Thank you!"
    )
    return (
        f"<b>Your tier: {tier_label(current)}</b>\n\n{tiers_table(tiers, current)}\n\n"
        "Quotas count alerts and /opportunities views together; the daily one resets at midnight "
        f"in your time zone (/settings), the hourly one every hour.\n{upgrade}"
    )


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
        f"muted until {fmt_dt(prefs.muted_until, prefs.timezone)}"
        if prefs.muted_until is not None and prefs.muted_until > now
        else "not muted"
    )
    return "\n".join(
        [
            "<b>Status</b>",
            f"Session: active until {fmt_dt(session.expires_at, prefs.timezone)} "
            f"(in {fmt_duration(session.expires_at - now)})",
            f"Tier: <b>{tier_label(policy.tier)}</b>",
            f"Quota left: {fmt_quota(left_day)} today (resets at 00:00 {esc(prefs.timezone)}), "
            f"{fmt_quota(left_hour)} this hour",
            f"Alerts: {'on' if prefs.pushes_on else 'off'}, {muted}",
            f"Active hours: {fmt_hours(prefs.active_hours)} ({esc(prefs.timezone)})",
        ]
    )


STOPPED = "👋 Session ended: no more alerts. Send /start whenever you want them back."
NOTHING_TO_STOP = "You have no active session. /start begins one."

FORGET_ASK = (
    "🗑 <b>Delete your data?</b>\nYour settings, API keys, session, quotas and queued alerts "
    "are deleted at once and cannot be restored. What the analytics keep about past alerts "
    "is only a number standing for your chat, never your name.\nYou can /start again later, "
    "as a new user."
)
FORGET_YES = "Delete everything"
FORGET_NO = "Cancel"
FORGOTTEN = "Done: I hold nothing about you any more. /start whenever you want alerts again."
FORGET_CANCELLED = "Nothing was deleted."


def muted(until: datetime, tz: str) -> str:
    return f"🔕 Muted until {fmt_dt(until, tz)}. /mute 0 turns alerts back on."


UNMUTED = "🔔 Alerts are back on."
MUTE_USAGE = f"Usage: /mute [hours] — 1 by default, up to {MUTE_MAX_HOURS}; /mute 0 resumes."


# -- settings -------------------------------------------------------------------------------


def settings_text(prefs: Preferences, policy: TierPolicy) -> str:
    kinds = ", ".join(KIND_LABELS[k] for k in OpportunityKind if k in prefs.kinds) or "none"
    exchanges = ", ".join(sorted(prefs.exchanges)) if prefs.exchanges else "all"
    symbols = ", ".join(sorted(prefs.symbols)) if prefs.symbols else "all"
    return "\n".join(
        [
            "<b>Settings</b> — tap to change",
            f"Alerts: <b>{'on' if prefs.pushes_on else 'off'}</b>",
            f"Kinds: {esc(kinds)}",
            f"Exchanges: {esc(exchanges)}",
            f"Symbols: {esc(symbols)}",
            f"Blocked: {esc(blocked_text(prefs))}",
            f"Minimums: {esc(thresholds_text(prefs))}; size {esc(min_size_text(prefs.min_size_usd))}",
            f"Time zone: {esc(prefs.timezone)}",
            f"Active hours: {fmt_hours(prefs.active_hours)}; outside them: {esc(prefs.outside_hours)}",
            f"Only exchanges I hold keys for: {'yes' if prefs.only_my_exchanges else 'no'}",
        ]
    )


SETTINGS_MENUS: Mapping[str, str] = {
    "kinds": "<b>Kinds</b> — tap to toggle (🔒 needs a higher tier)",
    "exch": "<b>Exchanges</b> — none selected means all",
    "sym": "<b>Symbols</b> — alerts only for the ones you tick; none selected means all",
    "minp": (
        "<b>Minimum profit, per kind</b>\n"
        "spread: net edge after fees, bps · funding: net % APR · signal: confidence"
    ),
    "tz": (
        "<b>Time zone</b>\nNot listed? Send <code>/settings tz Area/City</code>, "
        "e.g. <code>/settings tz Europe/Paris</code> (any IANA zone; a city alone works)."
    ),
    "hours": "<b>Active hours</b> (local time)",
}


def unknown_timezone(typed: str, suggestions: Sequence[str]) -> str:
    if not typed.strip():
        return "Send <code>/settings tz Area/City</code>, e.g. <code>/settings tz Asia/Tokyo</code>."
    hint = (
        "Did you mean " + ", ".join(f"<code>{esc(z)}</code>" for z in suggestions) + "?"
        if suggestions
        else "Use an IANA name such as <code>Europe/Berlin</code> or <code>America/New_York</code>."
    )
    return f"I don't know the time zone <b>{esc(typed.strip()[:64])}</b>. {hint}"


def blocked_text(prefs: Preferences) -> str:
    names = sorted(prefs.blocked_exchanges) + sorted(prefs.blocked_symbols)
    return ", ".join(names) if names else "nothing"


def blocked_now(prefs: Preferences) -> str:
    return (
        f"🚫 Blocked: <b>{esc(blocked_text(prefs))}</b>. No alert with a leg on a blocked exchange "
        "or about a blocked symbol. <code>/settings unblock NAME</code> takes one off."
    )


def blocked_usage(exchanges: Sequence[str]) -> str:
    return (
        "Block an exchange (" + esc(", ".join(exchanges)) + ") or a symbol: "
        "<code>/settings block bybit</code>, <code>/settings block DOGE/USDT</code>; "
        "<code>/settings unblock NAME</code> takes one off."
    )


def min_size_text(size: Decimal) -> str:
    return "any" if not size else f"≥ {fmt_usd(float(size))}"


MIN_SIZE_USAGE = (
    "Send <code>/settings minsize 5000</code>: alerts only when at least that many USD can be "
    "traded at the edge (0: any size). Signals have no size and are not filtered by it."
)


def min_size_set(size: Decimal) -> str:
    return f"📏 Minimum executable size: <b>{esc(min_size_text(size))}</b>."


def region_shown(region: str | None) -> str:
    now = f"<b>{esc(region)}</b>" if region else "not set"
    return (
        f"Your region: {now}. Set it with <code>/settings region XX</code> (a two-letter country "
        "code such as <code>DE</code>), clear it with <code>/settings region none</code>."
    )


def region_set(region: str | None) -> str:
    return f"🌍 Region set to <b>{esc(region)}</b>." if region else "🌍 Region cleared."


def region_locked(region: str | None) -> str:
    return f"Your region ({esc(region or 'none')}) was set by an admin and cannot be changed here."


def bad_region(typed: str) -> str:
    return (
        f"<b>{esc(typed[:16])}</b> is not a country code: use two letters (ISO 3166-1), "
        "e.g. <code>/settings region DE</code>."
    )


def admin_beta_set(user_id: int, flags: Sequence[str]) -> str:
    shown = ", ".join(esc(f) for f in flags) if flags else "none"
    return f"User {user_id}: beta flags <b>{shown}</b>."


def admin_region_set(user_id: int, region: str | None) -> str:
    if region is None:
        return f"User {user_id}: region cleared (they may set one again)."
    return f"User {user_id}: region <b>{esc(region)}</b> (set by an admin: they cannot change it)."


def timezone_set(zone: str, now: datetime) -> str:
    return f"🕒 Time zone set to <b>{esc(zone)}</b>: it is {fmt_dt(now, zone)} there."


def kind_locked(kind: OpportunityKind) -> str:
    return f"{KIND_LABELS[kind]} need a higher tier — see /subscription."


SAVED = "Saved"


# -- API keys -------------------------------------------------------------------------------


def apikeys_howto(policy: TierPolicy) -> str:
    base = (
        "Read-only keys let me limit alerts to exchanges you actually trade on "
        "(“only my exchanges” in /settings). Create a key with <b>read permission only</b> "
        "(no trading, no withdrawal), then send in a private chat:\n"
        "<code>/apikeys add &lt;exchange&gt; &lt;key&gt; &lt;secret&gt;</code>\n"
        "I delete that message right away and keep the key encrypted; it is only ever shown masked."
    )
    if Command.APIKEYS not in policy.commands:
        base += "\nAPI keys need the <b>Basic</b> tier or above (/subscription)."
    return base


def apikeys_list(user: User) -> str:
    if not user.api_keys:
        return "<b>Your API keys</b>\nNone yet.\n\n" + apikeys_usage()
    lines = ["<b>Your API keys</b>"]
    for ex, key in sorted(user.api_keys.items()):
        lines.append(f"• {esc(ex)}: <code>{esc(key.key_masked)}</code> (added {fmt_dt(key.added_at)})")
    return "\n".join(lines) + "\n\n" + apikeys_usage()


def apikeys_usage() -> str:
    return (
        "Add: <code>/apikeys add &lt;exchange&gt; &lt;key&gt;</code> (a read-only key; the message "
        "is deleted at once and only the masked key is kept). Remove: the buttons below."
    )


def apikey_added(exchange: str, masked: str, deleted: bool) -> str:
    note = "" if deleted else "\n⚠️ I couldn't delete your message: please delete it yourself."
    return (
        f"🔐 <b>{esc(exchange)}</b> added (<code>{esc(masked)}</code>): alerts can be limited to "
        'the exchanges you hold keys for (/settings, "Only my exchanges"). I keep only the '
        f"exchange and this masked key — nothing I do uses your secret, so it was not stored.{note}"
    )


def apikey_removed(exchange: str) -> str:
    return f"Key for {esc(exchange)} removed."


def unknown_exchange(exchange: str, known: Iterable[str]) -> str:
    return f"{esc(exchange)} isn't available. Exchanges: {esc(', '.join(known))}."


# -- opportunities --------------------------------------------------------------------------


def _legs(opp: OpenOpportunity) -> str:
    c = opp.candidate
    if c.kind is OpportunityKind.FUNDING_RATE:
        return f"long {esc(c.buy_exchange)} / short {esc(c.sell_exchange)}"
    if c.kind is OpportunityKind.TECHNICAL:
        return f"long on {esc(c.buy_exchange)}" if c.buy_exchange else f"short on {esc(c.sell_exchange)}"
    return f"buy {esc(c.buy_exchange)} → sell {esc(c.sell_exchange)}"


def _opt_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _funding_apr(net_bps: float, net_apr: float | None, horizon: float | None) -> float | None:
    """The net APR (fraction): given, or ``net_bps`` over a known horizon."""
    if net_apr is not None and math.isfinite(net_apr):
        return net_apr
    if horizon and math.isfinite(net_bps):
        return net_bps / 10_000 * 8760 / horizon
    return None


def edge_value(
    kind: OpportunityKind, net_bps: float, net_apr: float | None = None, horizon: float | None = None
) -> str:
    """The one figure of a list line, in the kind's unit: spot net bps (instant), funding net
    % APR, technical none (``""``)."""
    if kind is OpportunityKind.TECHNICAL:
        return ""
    if kind is OpportunityKind.FUNDING_RATE:
        apr = _funding_apr(net_bps, net_apr, horizon)
        if apr is not None:
            return fmt_apr(apr)
        return f"{fmt_bps(net_bps)} over {fmt_horizon(horizon)}" if horizon else fmt_bps(net_bps)
    return fmt_bps(net_bps)


def edge_lines(
    kind: OpportunityKind,
    net_bps: float,
    gross_bps: float,
    gross_apr: float | None,
    net_apr: float | None = None,
    horizon: float | None = None,
) -> list[str]:
    """The edge of one opportunity in its kind's unit (push and card).

    Spot: the net edge now, in bps. Funding: net APR and bps a day, and the totals with the
    horizon they are a return over. Technical: no edge (nothing).
    """
    if kind is OpportunityKind.TECHNICAL:
        return []
    if kind is OpportunityKind.SPOT_SPREAD:
        return [f"Net: <b>{fmt_bps(net_bps)}</b> (gross {fmt_bps(gross_bps)}) · instant"]
    lines = []
    apr = _funding_apr(net_bps, net_apr, horizon)
    if apr is not None:
        lines.append(f"Net: <b>{fmt_apr(apr)}</b> · {fmt_bps_day(apr)}")
        if not horizon and apr and math.isfinite(net_bps):  # the horizon the total is over
            horizon = round(net_bps / 10_000 * 8760 / apr, 1)
    if gross_apr is not None and math.isfinite(gross_apr):
        lines.append(f"Gross: {fmt_apr(gross_apr)}")
    over = f"over {fmt_horizon(horizon)}" if horizon else "over the carry's horizon"
    lines.append(f"Total {over}: net {fmt_bps(net_bps)} (gross {fmt_bps(gross_bps)})")
    return lines


def _candidate_units(c: Any) -> tuple[float | None, float | None]:
    details = c.details or {}
    return _opt_float(details.get("net_apr")), _opt_float(details.get("horizon_hours"))


def candidate_edge(c: Any) -> str:
    """An open opportunity's edge in its kind's unit (``""`` for a technical signal)."""
    return edge_value(c.kind, c.net_bps, *_candidate_units(c))


def opportunity_line(n: int, opp: OpenOpportunity) -> str:
    c = opp.candidate
    value = candidate_edge(c)
    tail = f" · {value}" if value else ""
    return f"{n}. <b>{esc(c.symbol)}</b> {KIND_SHORT[c.kind]} · {_legs(opp)}{tail}"


def opportunity_card(opp: OpenOpportunity, now: datetime) -> str:
    c = opp.candidate
    lines = [
        f"<b>{esc(c.symbol)}</b> — {KIND_LABELS[c.kind]}",
        _legs(opp),
        *edge_lines(c.kind, c.net_bps, c.gross_bps, c.gross_apr, *_candidate_units(c)),
    ]
    details = c.details or {}
    lines += transfer_lines(
        details.get("transfer_network"),
        _opt_float(details.get("transfer_bps")),
        RejectReason.TRANSFER_UNKNOWN.value in c.flags,
    )
    lines += [
        f"Size: {fmt_usd(c.size_usd)}",
        f"Confidence: {c.confidence * 100:.0f}% · priority {esc(c.priority.value)}",
        f"Open for {fmt_duration(now - opp.opened_at)} (updated {fmt_duration(now - opp.updated_at)} ago)",
    ]
    if c.flags:
        lines.append(f"Flags: {esc(', '.join(c.flags))}")
    return "\n".join(lines)


def opportunities_page(
    items: Sequence[OpenOpportunity], page: int, pages: int, total: int, left_day: int | None
) -> str:
    head = f"<b>Open opportunities</b> ({total}) · page {page + 1}/{max(pages, 1)}"
    body = [opportunity_line(page * 5 + i + 1, o) for i, o in enumerate(items)]
    foot = f"Views left today: {fmt_quota(left_day)}. Tap a number for details."
    return "\n".join([head, "", *body, "", foot])


def fmt_money(value: float) -> str:
    """A signed USD amount with cents: ``+$12.34``, ``-$0.50``."""
    if not math.isfinite(value):
        return "n/a"
    return f"{'-' if value < 0 else '+'}${abs(value):,.2f}"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else fmt_duration(timedelta(seconds=value))


def backtest_funding(r: FundingCarryResult, days: int) -> str:
    """The "Backtest" button on a funding carry: what it would have earned after fees."""
    head = f"<b>Backtest · {esc(r.symbol)}</b> · funding carry · last {days} d"
    legs = f"long {esc(r.long)} / short {esc(r.short)} · {fmt_usd(r.notional_usd)} a leg"
    if r.settlements_long == 0 and r.settlements_short == 0:
        return "\n".join([head, legs, "", BACKTEST_NO_DATA])
    return "\n".join(
        [
            head,
            legs,
            f"Settlements: {r.settlements_long} {esc(r.long)} · {r.settlements_short} {esc(r.short)}",
            f"Funding earned: {fmt_money(r.earned_usd)}",
            f"Fees (open + close both legs): {fmt_money(-r.fees_usd)}",
            f"<b>Net after fees: {fmt_money(r.net_usd)}</b> ({fmt_apr(r.net_apr)})",
            "From the lake's funding history; price moves of the hedge are not included.",
        ]
    )


def backtest_spot(r: SpotSpreadResult, days: int) -> str:
    """The "Backtest" button on a spot spread: how often and how long it was open above the
    user's spot minimum, and its median net edge."""
    head = f"<b>Backtest · {esc(r.symbol)}</b> · spot spread · last {days} d"
    legs = f"buy {esc(r.buy)} → sell {esc(r.sell)} · above {fmt_bps(r.threshold_bps)} net of fees"
    if r.observations == 0:
        return "\n".join([head, legs, "", BACKTEST_NO_DATA])
    if r.episodes == 0:
        quoted = f"From {r.observations:,} quotes of both legs over {_seconds(r.quoted_s)}."
        return "\n".join([head, legs, "Never open above it in the window.", quoted])
    share = "n/a" if r.open_share is None else f"{100 * r.open_share:.1f}%"
    return "\n".join(
        [
            head,
            legs,
            f"Open {r.episodes} times, {_seconds(r.open_s)} in all ({share} of the quoted time)",
            f"Median episode: {_seconds(r.median_episode_s)} · longest: {_seconds(r.longest_episode_s)}",
            f"<b>Median net edge when open: {fmt_bps(r.median_net_bps)}</b>",
            f"From {r.observations:,} quotes of both legs in the lake.",
        ]
    )


BACKTEST_NO_DATA = "No history in the lake for this window yet."
BACKTEST_FAILED = "Backtest unavailable: the history could not be read right now. Try again later."


NO_OPPORTUNITIES = (
    "Nothing open matches your tier and settings right now. "
    "I'll alert you when something does; /settings widens the net."
)
OPPORTUNITY_CLOSED = "That opportunity has closed."


def quota_exhausted(policy: TierPolicy, now: datetime, *, hourly: bool, tz: str = "UTC") -> str:
    """The daily quota resets at the user's local midnight, the hourly one each UTC hour."""
    if hourly:
        reset = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        what = f"this hour's {policy.hourly_quota}"
    else:
        reset = next_local_midnight(now, tz)
        what = f"today's {policy.daily_quota}"
    return (
        f"📭 You've used {what} views/alerts ({tier_label(policy.tier)} tier). "
        f"Quota resets at {fmt_time(reset, tz)} (in {fmt_duration(reset - now)}). "
        "/subscription for higher limits."
    )


# -- admin ----------------------------------------------------------------------------------

ADMIN_ONLY = "This command is for SuperAdmins."
ADMIN_USAGE = (
    "<b>/admin</b> — stats\n<code>/admin tier &lt;user_id&gt; &lt;tier&gt;</code>\n"
    "<code>/admin broadcast &lt;text&gt;</code>\n"
    "<code>/admin why &lt;user_id&gt; &lt;opportunity_id&gt;</code>\n"
    "<code>/admin region &lt;user_id&gt; &lt;XX|none&gt;</code> — the user's country, for region rules\n"
    "<code>/admin beta &lt;user_id&gt; &lt;flag&gt; [off]</code> — beta features the user may receive\n"
    "<code>/admin replay [n]</code> — dead letters back into their queues"
)

LAYER_NAMES = {
    0: "eligible",
    1: "1 · session",
    2: "2 · subscription",
    3: "3 · preferences",
    4: "4 · rate limits",
    5: "5 · technical",
    6: "6 · context",
}


def admin_why(user_id: int, opportunity: Mapping[str, Any], layer: int, reason: str) -> str:
    """``/admin why``: the eligibility layer that decides one user for one opportunity."""
    what = (
        f"{esc(str(opportunity.get('kind', '')))} {esc(str(opportunity.get('symbol', '')))} "
        f"{esc(str(opportunity.get('buy_exchange') or ''))} → "
        f"{esc(str(opportunity.get('sell_exchange') or ''))}"
    )
    verdict = (
        "✅ <b>eligible</b>: it would be pushed"
        if layer == 0
        else f"⛔ decided by layer <b>{esc(LAYER_NAMES.get(layer, str(layer)))}</b>: "
        f"<code>{esc(reason)}</code>"
    )
    return "\n".join(
        [
            f"<b>Admin · why</b> user <code>{user_id}</code>",
            f"Opportunity <code>{esc(str(opportunity.get('opportunity_id', '')))}</code>: {what}",
            verdict,
        ]
    )


def admin_replayed(replayed: int | None, left: int) -> str:
    if replayed is None:
        return f"No distributor is running: {left} dead letters wait for one."
    return f"Replayed {replayed} dead letters into their queues; {left} left."


def admin_no_opportunity(opportunity_id: str) -> str:
    return f"No open opportunity <code>{esc(opportunity_id)}</code>."


def admin_stats(users: int, sessions: int, groups: int, deliveries: DeliveryFigures | None, opps: int) -> str:
    """``/admin``: Redis figures, then today's deliveries from the lake (n/a when unreadable)."""
    lines = [
        "<b>Admin · stats</b>",
        f"Users: {users}",
        f"Active sessions: {sessions}",
        f"Groups: {groups}",
        f"Open opportunities: {opps}",
    ]
    if deliveries is None:
        lines.append("Deliveries today: n/a")
    else:
        d = deliveries
        rate = "n/a" if d.engagement_rate is None else f"{100 * d.engagement_rate:.1f}%"
        p99 = "n/a" if d.p99_ms is None else f"{d.p99_ms:,.0f} ms"
        lines += [
            f"Deliveries today: {d.deliveries} (sent {d.sent} · skipped {d.skipped})",
            f"429s today: {d.throttled_429}",
            f"Engagement today: {rate}",
            f"Delivery p99 today: {p99}",
        ]
    return "\n".join([*lines, "", ADMIN_USAGE])


def admin_tier_set(user_id: int, tier: Tier) -> str:
    return f"User {user_id} is now <b>{tier_label(tier)}</b>."


def admin_no_user(user_id: str) -> str:
    return f"No user {esc(user_id)}."


def admin_bad_tier(value: str) -> str:
    tiers = ", ".join(t.value for t in Tier if t is not Tier.SUPERADMIN)
    return (
        f"Not a tier you can set: {esc(value)}. One of: {tiers} "
        "(SuperAdmins come from ARBFLOW_SUPERADMIN_IDS)."
    )


def broadcast_body(text: str) -> str:
    return f"📣 <b>Announcement</b>\n{esc(text)}"


def broadcast_done(sent: int, failed: int) -> str:
    return f"Broadcast sent to {sent} chats ({failed} failed)."


def tier_changed(tier: Tier) -> str:
    return f"Your tier is now <b>{tier_label(tier)}</b>. /help shows what that unlocks."


# -- groups ---------------------------------------------------------------------------------


def group_welcome(title: str) -> str:
    return (
        f"Hi {esc(title) or 'all'}! I post arbitrage alerts. Each member opts in with /start in a "
        "private chat; group admins change this group's settings with /settings."
    )


GROUP_ADMINS_ONLY = "Only this group's admins can change its settings."


def group_settings_text(title: str, pushes_on: bool, min_net_bps: int) -> str:
    return (
        f"<b>Group settings · {esc(title)}</b>\n"
        f"Alerts in this group: <b>{'on' if pushes_on else 'off'}</b>\n"
        f"Min net edge of spot spreads: {fmt_bps(min_net_bps)}"
    )


GROUP_UNKNOWN = "This group isn't registered yet: remove me and add me again."


# -- pushes ---------------------------------------------------------------------------------

PRIORITY_MARK: Mapping[Priority, str] = {Priority.HIGH: "🔥", Priority.MEDIUM: "⚡", Priority.LOW: "•"}
PUSH_DETAILS = "🔎 Details"
PUSH_MUTE = "🔕 Mute 1 h"
PUSH_MORE = "📋 More"
PUSH_MUTE_HOURS = 1
PUSH_DIGEST_BUTTONS = 5
"""A digest offers a details button for each of its first items, at most this many."""


def _push_legs(n: Notification) -> str:
    if n.kind is OpportunityKind.FUNDING_RATE:
        return f"long {esc(n.buy_exchange)} / short {esc(n.sell_exchange)}"
    if n.kind is OpportunityKind.TECHNICAL:
        return f"long on {esc(n.buy_exchange)}" if n.buy_exchange else f"short on {esc(n.sell_exchange)}"
    return f"buy {esc(n.buy_exchange)} → sell {esc(n.sell_exchange)}"


def _fit(text: str) -> str:
    """One message: the first part when (absurdly long values made) the text too long."""
    return text if len(text) <= TELEGRAM_LIMIT else split_message(text)[0]


TRANSFER_UNKNOWN_TEXT = "⚠️ Transfer status unknown: check deposits and withdrawals before trading."


def transfer_lines(network: str | None, fee_bps: float | None, unknown: bool) -> list[str]:
    """How the asset moves between the venues (spot), for a push and a details card."""
    lines = []
    if network:
        fee = f"withdrawal fee {fee_bps:.1f} bps, in the net" if fee_bps is not None else "fee not known"
        lines.append(f"Transfer: {esc(network)} network, {fee}")
    if unknown:
        lines.append(TRANSFER_UNKNOWN_TEXT)
    return lines


def fmt_price(value: float | None) -> str:
    """A price with the digits it needs (5 significant below 1, cents above)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.2f}"
    if abs(value) >= 1:
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    return f"{value:.5g}"


def fmt_fee(fraction: float | None) -> str:
    return "n/a" if fraction is None or not math.isfinite(fraction) else f"{fraction * 100:.2f}%"


def fmt_rate(fraction: float | None, hours: float | None) -> str:
    """A funding rate per its interval: ``+0.0100% / 8 h``."""
    if fraction is None or not math.isfinite(fraction):
        return "n/a"
    every = f" / {hours:g} h" if hours else ""
    return f"{fraction * 100:+.4f}%{every}"


def fmt_time(value: datetime, tz: str = "UTC", *, seconds: bool = False) -> str:
    """A time of day in the user's zone with the zone's abbreviation (``16:04 CET``; zones
    without one show their offset, ``+0545``)."""
    from zoneinfo import ZoneInfo

    local = value.astimezone(ZoneInfo(tz))
    return f"{local:%H:%M:%S %Z}" if seconds else f"{local:%H:%M %Z}"


def fmt_ago(delta: timedelta) -> str:
    secs = delta.total_seconds()
    if secs < 1:
        return "just now"
    return f"{fmt_duration(delta)} ago"


def _spot_lines(n: Notification) -> list[str]:
    lines = []
    if n.buy_vwap is not None and n.sell_vwap is not None:
        lines.append(
            f"Buy at {fmt_price(n.buy_vwap)} · sell at {fmt_price(n.sell_vwap)} "
            f"(average prices for {fmt_usd(n.notional_usd)})"
        )
    if n.executable_usd is not None:
        fees = ""
        if n.buy_fee is not None or n.sell_fee is not None:
            fees = f" · taker fees {fmt_fee(n.buy_fee)} + {fmt_fee(n.sell_fee)}, in the net"
        lines.append(f"Executable: {fmt_usd(n.executable_usd)} at this edge{fees}")
    return lines


def _funding_lines(n: Notification, tz: str, now: datetime | None) -> list[str]:
    lines = []
    if n.long_rate is not None or n.short_rate is not None:
        lines.append(
            f"Funding: long {esc(n.buy_exchange)} {fmt_rate(n.long_rate, n.long_interval_hours)} · "
            f"short {esc(n.sell_exchange)} {fmt_rate(n.short_rate, n.short_interval_hours)}"
        )
    if n.next_funding is not None:
        soon = now is not None and n.next_funding > now
        left = f" (in {fmt_duration(n.next_funding - now)})" if soon and now is not None else ""
        lines.append(f"Next funding: {fmt_time(n.next_funding, tz)}{left}")
    return lines


SIGNAL_TEXT: Mapping[str, str] = {
    "rsi_oversold": "RSI {v} — oversold",
    "rsi_overbought": "RSI {v} — overbought",
    "macd_cross_up": "MACD histogram crossed above zero ({v})",
    "macd_cross_down": "MACD histogram crossed below zero ({v})",
    "bb_break_upper": "Close {v} above the upper Bollinger band ({b})",
    "bb_break_lower": "Close {v} below the lower Bollinger band ({b})",
}


def _technical_lines(n: Notification) -> list[str]:
    if not n.signal:
        return []
    value = "n/a"
    if n.indicator is not None:
        value = f"{n.indicator:.1f}" if n.signal.startswith("rsi") else fmt_price(n.indicator)
        if n.signal.startswith("macd"):
            value = f"{n.indicator:+.4g}"
    template = SIGNAL_TEXT.get(n.signal, esc(n.signal) + " ({v})")
    line = template.format(v=value, b=fmt_price(n.band))
    if n.timeframe:
        line += f" on {esc(n.timeframe)} bars"
    lines = [line]
    if n.hit_rate is not None and n.hit_samples:
        lines.append(f"Right {n.hit_rate * 100:.0f}% of the last {n.hit_samples} times it fired here")
    return lines


def closed_after(seconds: float) -> str:
    return f"✅ Closed after {fmt_duration(timedelta(seconds=seconds))}"


def push_message(
    n: Notification, *, tz: str = "UTC", now: datetime | None = None, closed: float | None = None
) -> str:
    """One opportunity, pushed (HTML, at most 4096 characters): its edge in its kind's unit,
    what backs it (spot: prices, size, fees, transfer; funding: each leg's rate and the next
    funding; technical: the indicator and its past hit rate), times in ``tz``, and its age
    at ``now`` (the send time)."""
    lines = [
        f"{PRIORITY_MARK[n.priority]} <b>{esc(n.symbol)}</b> — {KIND_LABELS[n.kind]}",
        _push_legs(n),
    ]
    lines += edge_lines(n.kind, n.net_bps, n.gross_bps, n.gross_apr, n.net_apr, n.horizon_hours)
    if n.kind is OpportunityKind.SPOT_SPREAD:
        lines += _spot_lines(n)
        lines += transfer_lines(n.transfer_network, n.transfer_bps, n.transfer_unknown)
    elif n.kind is OpportunityKind.FUNDING_RATE:
        lines += _funding_lines(n, tz, now)
    else:
        lines += _technical_lines(n)
    confidence = f"{n.confidence * 100:.0f}%" if math.isfinite(n.confidence) else "n/a"
    if n.kind is OpportunityKind.SPOT_SPREAD and n.executable_usd is not None:
        lines.append(f"Confidence {confidence}")  # the size is on the executable line
    else:
        lines.append(f"Size: {fmt_usd(n.notional_usd)} · confidence {confidence}")
    age = f" · {fmt_ago(now - n.detected_at)}" if now is not None else ""
    lines.append(f"Detected {fmt_time(n.detected_at, tz, seconds=True)}{age}")
    if closed is not None:  # the sent message, edited when the opportunity closed
        lines.append(closed_after(closed))
    return _fit("\n".join(lines))


def push_line(i: int, n: Notification, closed: float | None = None) -> str:
    """One line of a digest (``closed``: its lifetime, once it closed)."""
    value = edge_value(n.kind, n.net_bps, n.net_apr, n.horizon_hours)
    value = f" · {value}" if value else ""
    end = f" · {closed_after(closed)}" if closed is not None else ""
    return (
        f"{i}. {PRIORITY_MARK[n.priority]} <b>{esc(n.symbol)}</b> {KIND_SHORT[n.kind]} · "
        f"{_push_legs(n)}{value}{end}"
    )


def push_digest(
    d: Digest, *, tz: str = "UTC", now: datetime | None = None, closed: Mapping[str, float] | None = None
) -> str:
    """Several opportunities in one message, most important first; trimmed to 4096 characters
    with a last line saying how many did not fit. ``closed``: opportunity id → lifetime (s)
    of those that closed since it was sent (the edit on close)."""
    closed = closed or {}
    if len(d) == 1:
        return push_message(d.top, tz=tz, now=now, closed=closed.get(d.top.opportunity_id))
    head = f"📬 <b>{len(d)} new opportunities</b>"
    foot = "Tap a number for details."
    lines = [head, ""]
    used = len(head) + 1 + len(foot) + 2
    for i, n in enumerate(d.items, start=1):
        line = _fit(push_line(i, n, closed.get(n.opportunity_id)))
        more = f"…and {len(d) - i + 1} more: /opportunities"
        if used + len(line) + 1 + len(more) + 1 > TELEGRAM_LIMIT:
            lines.append(more)
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join([*lines, "", foot])


def push_muted_answer(until: datetime, tz: str) -> str:
    """Plain text (a callback answer is not HTML)."""
    from zoneinfo import ZoneInfo

    return f"🔕 Muted until {until.astimezone(ZoneInfo(tz)):%H:%M} ({tz}). /mute 0 resumes alerts."


# -- operator alerts (SuperAdmins) -----------------------------------------------------------

ALERT_TITLES = {
    AlertKind.STALE_DATA: "stale market data",
    AlertKind.INGEST_LAG: "ingest lag",
    AlertKind.DELIVERY_FAILURES: "delivery failures",
    AlertKind.RATE_LIMITED: "Telegram 429s",
    AlertKind.SOURCE_DOWN: "market source cannot start",
}


def fmt_alert_value(kind: AlertKind, value: float) -> str:
    if kind is AlertKind.DELIVERY_FAILURES:
        return f"{value:.0%}"
    if kind is AlertKind.RATE_LIMITED:
        return f"{value:.0f}"
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def _alert_fact(kind: AlertKind, value: float, threshold: float, window_s: float | None) -> str:
    window = f" in the last {fmt_duration(timedelta(seconds=window_s))}" if window_s else ""
    v, th = fmt_alert_value(kind, value), fmt_alert_value(kind, threshold)
    if kind is AlertKind.STALE_DATA:
        return f"No market data for {v} (threshold {th})."
    if kind is AlertKind.INGEST_LAG:
        return f"Data arrives {v} after the exchange's timestamp (threshold {th})."
    if kind is AlertKind.DELIVERY_FAILURES:
        return f"{v} of pushes failed{window} (threshold {th})."
    if kind is AlertKind.SOURCE_DOWN:
        return f"The exchange's market source has failed to start for {v}; it keeps retrying."
    return f"{v} rate-limit answers (429){window} (threshold {th})."


def alert_notice(notice: AlertNotice, *, window_s: float | None = None) -> str:
    """An incident opened or resolved, for the SuperAdmins (one message per event)."""
    inc = notice.incident
    title = f"{ALERT_TITLES[inc.kind]} · <code>{esc(inc.subject)}</code>"
    if notice.event is NoticeEvent.OPENED:
        lines = [
            f"🚨 <b>Alert: {title}</b>",
            _alert_fact(inc.kind, inc.value, inc.threshold, window_s),
            f"Since {fmt_dt(inc.opened_at)}. You will hear again when it clears.",
        ]
    else:
        lasted = fmt_duration(notice.at - inc.opened_at)
        lines = [
            f"✅ <b>Resolved: {title}</b>",
            f"Lasted {lasted}; worst {fmt_alert_value(inc.kind, inc.peak)}, "
            f"now {fmt_alert_value(inc.kind, inc.last_value)}.",
        ]
    lines.append(f"<i>incident {esc(inc.id)}</i>")
    return _fit("\n".join(lines))


# -- missed while delayed --


def _missed_delay(seconds: int) -> str:
    from bot.i18n import _

    if seconds <= 0:
        return _("live")
    return _("{delay} delay").format(delay=fmt_duration(timedelta(seconds=seconds)))


def _missed_edge(item: MissedItem) -> str:
    from bot.i18n import _

    if item.kind == OpportunityKind.FUNDING_RATE and item.net_apr is not None:
        return _("{apr} net").format(apr=fmt_apr(item.net_apr))
    return _("{bps} net").format(bps=fmt_bps(item.net_bps))


def _missed_offer(offer: UpgradeOffer, total: int) -> str:
    from bot.i18n import _, ngettext

    tier = tier_label(offer.tier)
    if offer.shown >= total:
        if offer.delay_s <= 0:
            return _("{tier} shows them all live").format(tier=tier)
        return _("{tier} ({delay}) would have shown them all").format(
            tier=tier, delay=_missed_delay(offer.delay_s)
        )
    if offer.delay_s <= 0:
        return ngettext(
            "{tier} would have shown {n} of them live",
            "{tier} would have shown {n} of them live",
            offer.shown,
        ).format(tier=tier, n=offer.shown)
    return ngettext(
        "{tier} ({delay}) would have shown {n} of them",
        "{tier} ({delay}) would have shown {n} of them",
        offer.shown,
    ).format(tier=tier, delay=_missed_delay(offer.delay_s), n=offer.shown)


def missed_digest(digest: MissedDigest, *, tz: str = "UTC") -> str:
    """The "missed while delayed" digest (HTML, one message): what closed before the tier
    delay was over, best edge first, each with its edge and how long it lasted, then which
    tier would have shown it and where to upgrade. Rendered in ``digest.language``."""
    from bot.i18n import _, ngettext, use_locale

    with use_locale(digest.language):
        n = len(digest.items)
        title = _("Missed while delayed") if digest.cadence == "daily" else _("Missed this hour")
        lines = [
            f"🕑 <b>{title}</b>",
            ngettext(
                "{n} opportunity closed before your {tier} delay ({delay}) was over:",
                "{n} opportunities closed before your {tier} delay ({delay}) was over:",
                n,
            ).format(
                n=n, tier=tier_label(digest.tier), delay=fmt_duration(timedelta(seconds=digest.delay_s))
            ),
            "",
        ]
        for item in digest.items[:MISSED_LINES]:
            legs = " → ".join(esc(x) for x in (item.buy_exchange, item.sell_exchange) if x)
            lasted = _("lasted {duration}").format(duration=fmt_duration(timedelta(seconds=item.lifetime_s)))
            lines.append(
                f"• <b>{esc(item.symbol)}</b> {legs} · {esc(_missed_edge(item))} · {lasted}".replace(
                    "  ", " "
                )
            )
        if n > MISSED_LINES:
            more = n - MISSED_LINES
            lines.append(ngettext("… and {n} more", "… and {n} more", more).format(n=more))
        lines.append("")
        if digest.offers:
            offers = "; ".join(_missed_offer(o, n) for o in digest.offers)
            lines.append(_("⭐ {offers}: /subscription").format(offers=offers))
        else:
            lines.append(_("⭐ Faster plans: /subscription"))
        if digest.cadence == "daily":
            at = f"{digest.hour:02d}:00 {tz}"
            lines.append(
                "<i>"
                + esc(
                    _("Daily at {time}. Change it: /settings digest <hour>, or /settings digest off").format(
                        time=at
                    )
                )
                + "</i>"
            )
        else:
            lines.append("<i>" + esc(_("Every hour. Turn it off: /settings digest off")) + "</i>")
        return _fit("\n".join(lines))


MISSED_LINES = 20
"""At most this many opportunities listed in one digest (the rest are counted)."""


def digest_setting(hour: int | None, tz: str, *, cadence: str | None) -> str:
    """``/settings digest``: what is set, and how to change it."""
    from bot.i18n import _

    if hour is None:
        state = _('The "missed while delayed" digest is off.')
    elif cadence == "hourly":
        state = _('Your plan gets the "missed while delayed" digest every hour.')
    elif cadence is None:
        state = _("Your plan shows opportunities live: there is nothing to miss, so no digest.")
    else:
        state = _('The "missed while delayed" digest comes daily at {time}.').format(
            time=f"{hour:02d}:00 {tz}"
        )
    return (
        esc(state) + "\n" + esc(_("Set the hour: /settings digest 0-23 · turn it off: /settings digest off"))
    )


def digest_set(hour: int | None, tz: str) -> str:
    from bot.i18n import _

    if hour is None:
        return esc(_('The "missed while delayed" digest is off. Turn it on: /settings digest 9'))
    return esc(
        _('The "missed while delayed" digest now comes daily at {time}.').format(time=f"{hour:02d}:00 {tz}")
    )


def digest_usage() -> str:
    from bot.i18n import _

    return esc(_("Use /settings digest <hour 0-23> or /settings digest off."))
