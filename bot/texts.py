"""Every word the bot says, as Telegram HTML (parse mode HTML).

Rules: everything user-supplied (names, symbols, payloads, broadcast text) goes through
:func:`esc`; only the tags Telegram knows are used (``b i u s code pre a blockquote``);
messages are short, and :func:`split_message` cuts longer ones at line boundaries into
parts of at most 4096 characters without breaking a tag or an entity. Renderers take
data (users, sessions, opportunities) and return strings: no I/O here.

Every word is translated (``bot.i18n``): renderers call ``_()``/``ngettext`` when they
run, in the locale of the update (or of the push, ``use_locale``). Module-level texts are
resolved when read: the mappings (``KIND_LABELS``…) translate on lookup, and the constant
texts (``texts.NOT_AVAILABLE``…) are kept in :data:`_CONSTANTS` and served by the module's
``__getattr__``, so ``texts.X`` is always a ``str`` in the current language.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from aiogram.utils.i18n.lazy_proxy import LazyProxy

from bot.i18n import _, lazy, ngettext, use_locale
from core.accounts import Command, Preferences, Tier, TierPolicy, User, next_local_midnight
from core.alerts import AlertKind, AlertNotice, NoticeEvent
from core.lifecycle import OpenOpportunity
from core.missed import MissedDigest, MissedItem, UpgradeOffer
from core.models import OpportunityKind, Priority, RejectReason
from core.notifications import PRIORITY_RANK, Digest, Notification
from core.payments import TierPrice
from core.sessions import Session

if TYPE_CHECKING:
    from pipeline.analytics import DeliveryFigures
    from pipeline.backtest import FundingCarryResult, SpotSpreadResult

TELEGRAM_LIMIT = 4096

K = TypeVar("K")


class Translated(Mapping[K, str]):
    """A mapping of texts written with :func:`lazy`, translated when looked up."""

    def __init__(self, items: Mapping[K, LazyProxy]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: K) -> str:
        return str(self._items[key])

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


_CONSTANTS: dict[str, Callable[[], str]] = {}
"""The constant texts by name (``texts.SLOW_DOWN``), each rendered when read."""


def __getattr__(name: str) -> str:
    text = _CONSTANTS.get(name)
    if text is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return text()


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

KIND_LABELS: Mapping[OpportunityKind, str] = Translated(
    {
        OpportunityKind.SPOT_SPREAD: lazy("Spot spreads"),
        OpportunityKind.FUNDING_RATE: lazy("Funding rates"),
        OpportunityKind.TECHNICAL: lazy("Technical signals"),
    }
)
KIND_SHORT: Mapping[OpportunityKind, str] = Translated(
    {
        OpportunityKind.SPOT_SPREAD: lazy("spread"),
        OpportunityKind.FUNDING_RATE: lazy("funding"),
        OpportunityKind.TECHNICAL: lazy("signal"),
    }
)
TIER_LABELS: Mapping[Tier, str] = Translated(
    {
        Tier.FREE: lazy("Free"),
        Tier.BASIC: lazy("Basic"),
        Tier.PREMIUM: lazy("Premium"),
        Tier.ENTERPRISE: lazy("Enterprise"),
        Tier.SUPERADMIN: lazy("SuperAdmin"),
    }
)

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
        return _("{d}d {h}h").format(d=days, h=hours)
    if hours:
        return _("{h}h {m}m").format(h=hours, m=minutes)
    if minutes:
        return _("{m}m").format(m=minutes)
    return _("{s}s").format(s=secs)


def na() -> str:
    """ "Not available" in a figure's place."""
    return _("n/a")


def fmt_bps(value: float | Decimal | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return na()
    return _("{v} bps").format(v=f"{float(value):+.1f}")


def fmt_apr(fraction: float | Decimal | None) -> str:
    """A return a year given as a fraction (``0.2``) → ``+20.0% APR``."""
    if fraction is None or not math.isfinite(float(fraction)):
        return na()
    return _("{v}% APR").format(v=f"{float(fraction) * 100:+.1f}")


def fmt_bps_day(apr_fraction: float | None) -> str:
    """A return a year (fraction) as basis points a day (365-day year)."""
    if apr_fraction is None or not math.isfinite(apr_fraction):
        return na()
    return _("{v} bps/day").format(v=f"{apr_fraction * 10_000 / 365:+.1f}")


def fmt_horizon(hours: float | None) -> str:
    if hours is None or not math.isfinite(hours):
        return na()
    return _("{v} h").format(v=f"{hours:g}")


def fmt_threshold(kind: OpportunityKind, value: Decimal) -> str:
    """One kind's user minimum in its unit."""
    if kind is OpportunityKind.FUNDING_RATE:
        return _("net ≥ {v}% APR").format(v=f"{float(value):g}") if value else _("any net APR")
    if kind is OpportunityKind.TECHNICAL:
        return _("confidence ≥ {v}").format(v=f"{float(value):.2f}") if value else _("any confidence")
    return _("net ≥ {v} bps").format(v=f"{float(value):g}") if value else _("any net edge")


def thresholds_text(prefs: Preferences, kinds: Iterable[OpportunityKind] = tuple(OpportunityKind)) -> str:
    """The user's minimums, one per kind: ``spread net ≥ 10 bps · funding net ≥ 20% APR …``."""
    return " · ".join(f"{KIND_SHORT[k]} {fmt_threshold(k, prefs.threshold(k))}" for k in kinds)


def fmt_usd(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return na()
    return f"${value:,.0f}"


def fmt_hours(hours: tuple[int, int] | None) -> str:
    if hours is None:
        return _("always")
    start, end = hours
    return f"{start:02d}:00-{end:02d}:00"


def fmt_quota(value: int | None) -> str:
    return _("unlimited") if value is None else str(value)


def tier_label(tier: Tier) -> str:
    return TIER_LABELS[tier]


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


def on_off(on: bool) -> str:
    return _("on") if on else _("off")


def language_name(language: str | None) -> str:
    """The user's language setting as shown (``None``: the Telegram app's language)."""
    from bot.i18n import LANGUAGES

    return LANGUAGES[language] if language in LANGUAGES else _("as in Telegram")


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


# -- settings -------------------------------------------------------------------------------


def settings_text(prefs: Preferences, policy: TierPolicy) -> str:
    kinds = ", ".join(KIND_LABELS[k] for k in OpportunityKind if k in prefs.kinds) or _("none")
    exchanges = ", ".join(sorted(prefs.exchanges)) if prefs.exchanges else _("all")
    symbols = ", ".join(sorted(prefs.symbols)) if prefs.symbols else _("all")
    return "\n".join(
        [
            _("<b>Settings</b> — tap to change"),
            _("Alerts: <b>{state}</b>").format(state=on_off(prefs.pushes_on)),
            _("Kinds: {kinds}").format(kinds=esc(kinds)),
            _("Exchanges: {exchanges}").format(exchanges=esc(exchanges)),
            _("Symbols: {symbols}").format(symbols=esc(symbols)),
            _("Blocked: {blocked}").format(blocked=esc(blocked_text(prefs))),
            _("Minimums: {minimums}; size {size}").format(
                minimums=esc(thresholds_text(prefs)), size=esc(min_size_text(prefs.min_size_usd))
            ),
            _("Time zone: {zone}").format(zone=esc(prefs.timezone)),
            _("Active hours: {hours}; outside them: {outside}").format(
                hours=fmt_hours(prefs.active_hours), outside=esc(outside_label(prefs.outside_hours))
            ),
            _("Only exchanges I hold keys for: {answer}").format(
                answer=_("yes") if prefs.only_my_exchanges else _("no")
            ),
            _("Language: {language}").format(language=language_name(prefs.language)),
        ]
    )


def outside_label(value: str) -> str:
    """What happens to alerts outside the active hours (``hold`` or ``silent``)."""
    return {"hold": _("hold"), "silent": _("silent")}.get(value, value)


SETTINGS_MENUS: Mapping[str, str] = Translated(
    {
        "kinds": lazy("<b>Kinds</b> — tap to toggle (🔒 needs a higher tier)"),
        "exch": lazy("<b>Exchanges</b> — none selected means all"),
        "sym": lazy("<b>Symbols</b> — alerts only for the ones you tick; none selected means all"),
        "minp": lazy(
            "<b>Minimum profit, per kind</b>\n"
            "spread: net edge after fees, bps · funding: net % APR · signal: confidence"
        ),
        "tz": lazy(
            "<b>Time zone</b>\nNot listed? Send <code>/settings tz Area/City</code>, "
            "e.g. <code>/settings tz Europe/Paris</code> (any IANA zone; a city alone works)."
        ),
        "hours": lazy("<b>Active hours</b> (local time)"),
        "lang": lazy(
            "<b>Language</b>\nBy default I speak your Telegram app's language. "
            "Also: <code>/settings language ru</code>, <code>/settings language en</code>, "
            "<code>/settings language auto</code>."
        ),
    }
)


def unknown_timezone(typed: str, suggestions: Sequence[str]) -> str:
    if not typed.strip():
        return _("Send <code>/settings tz Area/City</code>, e.g. <code>/settings tz Asia/Tokyo</code>.")
    hint = (
        _("Did you mean {zones}?").format(zones=", ".join(f"<code>{esc(z)}</code>" for z in suggestions))
        if suggestions
        else _("Use an IANA name such as <code>Europe/Berlin</code> or <code>America/New_York</code>.")
    )
    return _("I don't know the time zone <b>{typed}</b>. {hint}").format(
        typed=esc(typed.strip()[:64]), hint=hint
    )


def blocked_text(prefs: Preferences) -> str:
    names = sorted(prefs.blocked_exchanges) + sorted(prefs.blocked_symbols)
    return ", ".join(names) if names else _("nothing")


def blocked_now(prefs: Preferences) -> str:
    return _(
        "🚫 Blocked: <b>{blocked}</b>. No alert with a leg on a blocked exchange "
        "or about a blocked symbol. <code>/settings unblock NAME</code> takes one off."
    ).format(blocked=esc(blocked_text(prefs)))


def blocked_usage(exchanges: Sequence[str]) -> str:
    return _(
        "Block an exchange ({exchanges}) or a symbol: "
        "<code>/settings block bybit</code>, <code>/settings block DOGE/USDT</code>; "
        "<code>/settings unblock NAME</code> takes one off."
    ).format(exchanges=esc(", ".join(exchanges)))


def min_size_text(size: Decimal) -> str:
    return _("any") if not size else f"≥ {fmt_usd(float(size))}"


_CONSTANTS["MIN_SIZE_USAGE"] = lambda: _(
    "Send <code>/settings minsize 5000</code>: alerts only when at least that many USD can be "
    "traded at the edge (0: any size). Signals have no size and are not filtered by it."
)


def min_size_set(size: Decimal) -> str:
    return _("📏 Minimum executable size: <b>{size}</b>.").format(size=esc(min_size_text(size)))


def region_shown(region: str | None) -> str:
    now = f"<b>{esc(region)}</b>" if region else _("not set")
    return _(
        "Your region: {region}. Set it with <code>/settings region XX</code> (a two-letter country "
        "code such as <code>DE</code>), clear it with <code>/settings region none</code>."
    ).format(region=now)


def region_set(region: str | None) -> str:
    return (
        _("🌍 Region set to <b>{region}</b>.").format(region=esc(region))
        if region
        else _("🌍 Region cleared.")
    )


def region_locked(region: str | None) -> str:
    return _("Your region ({region}) was set by an admin and cannot be changed here.").format(
        region=esc(region or _("none"))
    )


def bad_region(typed: str) -> str:
    return _(
        "<b>{typed}</b> is not a country code: use two letters (ISO 3166-1), "
        "e.g. <code>/settings region DE</code>."
    ).format(typed=esc(typed[:16]))


def language_set(language: str | None) -> str:
    """``/settings language``: the new setting (``None``: follow the Telegram app)."""
    if language is None:
        return _("🗣 Language: as in your Telegram app.")
    return _("🗣 Language set to <b>{language}</b>.").format(language=language_name(language))


def bad_language(typed: str) -> str:
    from bot.i18n import LANGUAGES

    return _("I don't speak <b>{typed}</b> yet. Choose one of: {codes}, or <code>auto</code>.").format(
        typed=esc(typed[:16]), codes=", ".join(f"<code>{c}</code>" for c in LANGUAGES)
    )


def admin_beta_set(user_id: int, flags: Sequence[str]) -> str:
    shown = ", ".join(esc(f) for f in flags) if flags else _("none")
    return _("User {user}: beta flags <b>{flags}</b>.").format(user=user_id, flags=shown)


def admin_region_set(user_id: int, region: str | None) -> str:
    if region is None:
        return _("User {user}: region cleared (they may set one again).").format(user=user_id)
    return _("User {user}: region <b>{region}</b> (set by an admin: they cannot change it).").format(
        user=user_id, region=esc(region)
    )


def timezone_set(zone: str, now: datetime) -> str:
    return _("🕒 Time zone set to <b>{zone}</b>: it is {now} there.").format(
        zone=esc(zone), now=fmt_dt(now, zone)
    )


def kind_locked(kind: OpportunityKind) -> str:
    return _("{kind} need a higher tier — see /subscription.").format(kind=KIND_LABELS[kind])


_CONSTANTS["SAVED"] = lambda: _("Saved")


# -- API keys -------------------------------------------------------------------------------


def apikeys_howto(policy: TierPolicy) -> str:
    base = _(
        "Read-only keys let me limit alerts to exchanges you actually trade on "
        "(“only my exchanges” in /settings). Create a key with <b>read permission only</b> "
        "(no trading, no withdrawal), then send in a private chat:\n"
        "<code>/apikeys add &lt;exchange&gt; &lt;key&gt; &lt;secret&gt;</code>\n"
        "I delete that message right away and keep the key encrypted; it is only ever shown masked."
    )
    if Command.APIKEYS not in policy.commands:
        base += "\n" + _("API keys need the <b>Basic</b> tier or above (/subscription).")
    return base


def apikeys_list(user: User) -> str:
    if not user.api_keys:
        return _("<b>Your API keys</b>\nNone yet.") + "\n\n" + apikeys_usage()
    lines = [_("<b>Your API keys</b>")]
    for ex, key in sorted(user.api_keys.items()):
        lines.append(
            _("• {exchange}: <code>{key}</code> (added {added})").format(
                exchange=esc(ex), key=esc(key.key_masked), added=fmt_dt(key.added_at)
            )
        )
    return "\n".join(lines) + "\n\n" + apikeys_usage()


def apikeys_usage() -> str:
    return _(
        "Add: <code>/apikeys add &lt;exchange&gt; &lt;key&gt;</code> (a read-only key; the message "
        "is deleted at once and only the masked key is kept). Remove: the buttons below."
    )


def apikey_added(exchange: str, masked: str, deleted: bool) -> str:
    note = "" if deleted else "\n" + _("⚠️ I couldn't delete your message: please delete it yourself.")
    return (
        _(
            "🔐 <b>{exchange}</b> added (<code>{key}</code>): alerts can be limited to "
            'the exchanges you hold keys for (/settings, "Only my exchanges"). I keep only the '
            "exchange and this masked key — nothing I do uses your secret, so it was not stored."
        ).format(exchange=esc(exchange), key=esc(masked))
        + note
    )


def apikey_removed(exchange: str) -> str:
    return _("Key for {exchange} removed.").format(exchange=esc(exchange))


def unknown_exchange(exchange: str, known: Iterable[str]) -> str:
    return _("{exchange} isn't available. Exchanges: {known}.").format(
        exchange=esc(exchange), known=esc(", ".join(known))
    )


# -- opportunities --------------------------------------------------------------------------


def _legs(opp: OpenOpportunity) -> str:
    c = opp.candidate
    return legs_text(c.kind, c.buy_exchange, c.sell_exchange)


def legs_text(kind: OpportunityKind, buy: str | None, sell: str | None) -> str:
    """The venues of an opportunity: ``buy A → sell B``, ``long A / short B``, ``long on A``."""
    if kind is OpportunityKind.FUNDING_RATE:
        return _("long {buy} / short {sell}").format(buy=esc(buy), sell=esc(sell))
    if kind is OpportunityKind.TECHNICAL:
        return _("long on {ex}").format(ex=esc(buy)) if buy else _("short on {ex}").format(ex=esc(sell))
    return _("buy {buy} → sell {sell}").format(buy=esc(buy), sell=esc(sell))


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
        if horizon:
            return _("{edge} over {horizon}").format(edge=fmt_bps(net_bps), horizon=fmt_horizon(horizon))
        return fmt_bps(net_bps)
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
        return [
            _("Net: <b>{net}</b> (gross {gross}) · instant").format(
                net=fmt_bps(net_bps), gross=fmt_bps(gross_bps)
            )
        ]
    lines = []
    apr = _funding_apr(net_bps, net_apr, horizon)
    if apr is not None:
        lines.append(_("Net: <b>{apr}</b> · {per_day}").format(apr=fmt_apr(apr), per_day=fmt_bps_day(apr)))
        if not horizon and apr and math.isfinite(net_bps):  # the horizon the total is over
            horizon = round(net_bps / 10_000 * 8760 / apr, 1)
    if gross_apr is not None and math.isfinite(gross_apr):
        lines.append(_("Gross: {apr}").format(apr=fmt_apr(gross_apr)))
    if horizon:
        total = _("Total over {horizon}: net {net} (gross {gross})").format(
            horizon=fmt_horizon(horizon), net=fmt_bps(net_bps), gross=fmt_bps(gross_bps)
        )
    else:
        total = _("Total over the carry's horizon: net {net} (gross {gross})").format(
            net=fmt_bps(net_bps), gross=fmt_bps(gross_bps)
        )
    lines.append(total)
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
        _("Size: {size}").format(size=fmt_usd(c.size_usd)),
        _("Confidence: {confidence}% · priority {priority}").format(
            confidence=f"{c.confidence * 100:.0f}", priority=priority_label(c.priority)
        ),
        _("Open for {open} (updated {updated} ago)").format(
            open=fmt_duration(now - opp.opened_at), updated=fmt_duration(now - opp.updated_at)
        ),
    ]
    if c.flags:
        lines.append(_("Flags: {flags}").format(flags=esc(", ".join(c.flags))))
    return "\n".join(lines)


def priority_label(priority: Priority) -> str:
    return {Priority.HIGH: _("high"), Priority.MEDIUM: _("medium"), Priority.LOW: _("low")}.get(
        priority, esc(priority.value)
    )


def opportunities_page(
    items: Sequence[OpenOpportunity], page: int, pages: int, total: int, left_day: int | None
) -> str:
    head = _("<b>Open opportunities</b> ({total}) · page {page}/{pages}").format(
        total=total, page=page + 1, pages=max(pages, 1)
    )
    body = [opportunity_line(page * 5 + i + 1, o) for i, o in enumerate(items)]
    foot = _("Views left today: {left}. Tap a number for details.").format(left=fmt_quota(left_day))
    return "\n".join([head, "", *body, "", foot])


def fmt_money(value: float) -> str:
    """A signed USD amount with cents: ``+$12.34``, ``-$0.50``."""
    if not math.isfinite(value):
        return na()
    return f"{'-' if value < 0 else '+'}${abs(value):,.2f}"


def _seconds(value: float | None) -> str:
    return na() if value is None else fmt_duration(timedelta(seconds=value))


def backtest_funding(r: FundingCarryResult, days: int) -> str:
    """The "Backtest" button on a funding carry: what it would have earned after fees."""
    head = _("<b>Backtest · {symbol}</b> · funding carry · last {days} d").format(
        symbol=esc(r.symbol), days=days
    )
    legs = _("long {long} / short {short} · {notional} a leg").format(
        long=esc(r.long), short=esc(r.short), notional=fmt_usd(r.notional_usd)
    )
    if r.settlements_long == 0 and r.settlements_short == 0:
        return "\n".join([head, legs, "", __getattr__("BACKTEST_NO_DATA")])
    return "\n".join(
        [
            head,
            legs,
            _("Settlements: {n_long} {long} · {n_short} {short}").format(
                n_long=r.settlements_long, long=esc(r.long), n_short=r.settlements_short, short=esc(r.short)
            ),
            _("Funding earned: {usd}").format(usd=fmt_money(r.earned_usd)),
            _("Fees (open + close both legs): {usd}").format(usd=fmt_money(-r.fees_usd)),
            _("<b>Net after fees: {usd}</b> ({apr})").format(
                usd=fmt_money(r.net_usd), apr=fmt_apr(r.net_apr)
            ),
            _("From the lake's funding history; price moves of the hedge are not included."),
        ]
    )


def backtest_spot(r: SpotSpreadResult, days: int) -> str:
    """The "Backtest" button on a spot spread: how often and how long it was open above the
    user's spot minimum, and its median net edge."""
    head = _("<b>Backtest · {symbol}</b> · spot spread · last {days} d").format(
        symbol=esc(r.symbol), days=days
    )
    legs = _("buy {buy} → sell {sell} · above {threshold} net of fees").format(
        buy=esc(r.buy), sell=esc(r.sell), threshold=fmt_bps(r.threshold_bps)
    )
    if r.observations == 0:
        return "\n".join([head, legs, "", __getattr__("BACKTEST_NO_DATA")])
    if r.episodes == 0:
        quoted = _("From {n} quotes of both legs over {span}.").format(
            n=f"{r.observations:,}", span=_seconds(r.quoted_s)
        )
        return "\n".join([head, legs, _("Never open above it in the window."), quoted])
    share = na() if r.open_share is None else f"{100 * r.open_share:.1f}%"
    return "\n".join(
        [
            head,
            legs,
            ngettext(
                "Open {n} time, {open} in all ({share} of the quoted time)",
                "Open {n} times, {open} in all ({share} of the quoted time)",
                r.episodes,
            ).format(n=r.episodes, open=_seconds(r.open_s), share=share),
            _("Median episode: {median} · longest: {longest}").format(
                median=_seconds(r.median_episode_s), longest=_seconds(r.longest_episode_s)
            ),
            _("<b>Median net edge when open: {edge}</b>").format(edge=fmt_bps(r.median_net_bps)),
            _("From {n} quotes of both legs in the lake.").format(n=f"{r.observations:,}"),
        ]
    )


_CONSTANTS["BACKTEST_NO_DATA"] = lambda: _("No history in the lake for this window yet.")
_CONSTANTS["BACKTEST_FAILED"] = lambda: _(
    "Backtest unavailable: the history could not be read right now. Try again later."
)


_CONSTANTS["NO_OPPORTUNITIES"] = lambda: _(
    "Nothing open matches your tier and settings right now. "
    "I'll alert you when something does; /settings widens the net."
)
_CONSTANTS["OPPORTUNITY_CLOSED"] = lambda: _("That opportunity has closed.")


def quota_exhausted(policy: TierPolicy, now: datetime, *, hourly: bool, tz: str = "UTC") -> str:
    """The daily quota resets at the user's local midnight, the hourly one each UTC hour."""
    if hourly:
        reset = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        what = _("this hour's {n}").format(n=policy.hourly_quota)
    else:
        reset = next_local_midnight(now, tz)
        what = _("today's {n}").format(n=policy.daily_quota)
    return _(
        "📭 You've used {what} views/alerts ({tier} tier). "
        "Quota resets at {reset} (in {left}). "
        "/subscription for higher limits."
    ).format(
        what=what, tier=tier_label(policy.tier), reset=fmt_time(reset, tz), left=fmt_duration(reset - now)
    )


# -- admin ----------------------------------------------------------------------------------

_CONSTANTS["ADMIN_ONLY"] = lambda: _("This command is for SuperAdmins.")
_CONSTANTS["ADMIN_USAGE"] = lambda: _(
    "<b>/admin</b> — stats\n<code>/admin tier &lt;user_id&gt; &lt;tier&gt;</code>\n"
    "<code>/admin broadcast &lt;text&gt;</code>\n"
    "<code>/admin why &lt;user_id&gt; &lt;opportunity_id&gt;</code>\n"
    "<code>/admin region &lt;user_id&gt; &lt;XX|none&gt;</code> — the user's country, for region rules\n"
    "<code>/admin beta &lt;user_id&gt; &lt;flag&gt; [off]</code> — beta features the user may receive\n"
    "<code>/admin replay [n]</code> — dead letters back into their queues"
)

LAYER_NAMES: Mapping[int, str] = Translated(
    {
        0: lazy("eligible"),
        1: lazy("1 · session"),
        2: lazy("2 · subscription"),
        3: lazy("3 · preferences"),
        4: lazy("4 · rate limits"),
        5: lazy("5 · technical"),
        6: lazy("6 · context"),
    }
)


def admin_why(user_id: int, opportunity: Mapping[str, Any], layer: int, reason: str) -> str:
    """``/admin why``: the eligibility layer that decides one user for one opportunity."""
    what = (
        f"{esc(str(opportunity.get('kind', '')))} {esc(str(opportunity.get('symbol', '')))} "
        f"{esc(str(opportunity.get('buy_exchange') or ''))} → "
        f"{esc(str(opportunity.get('sell_exchange') or ''))}"
    )
    verdict = (
        _("✅ <b>eligible</b>: it would be pushed")
        if layer == 0
        else _("⛔ decided by layer <b>{layer}</b>: <code>{reason}</code>").format(
            layer=esc(LAYER_NAMES.get(layer, str(layer))), reason=esc(reason)
        )
    )
    return "\n".join(
        [
            _("<b>Admin · why</b> user <code>{user}</code>").format(user=user_id),
            _("Opportunity <code>{id}</code>: {what}").format(
                id=esc(str(opportunity.get("opportunity_id", ""))), what=what
            ),
            verdict,
        ]
    )


def admin_replayed(replayed: int | None, left: int) -> str:
    if replayed is None:
        return _("No distributor is running: {left} dead letters wait for one.").format(left=left)
    return _("Replayed {n} dead letters into their queues; {left} left.").format(n=replayed, left=left)


def admin_no_opportunity(opportunity_id: str) -> str:
    return _("No open opportunity <code>{id}</code>.").format(id=esc(opportunity_id))


def admin_stats(users: int, sessions: int, groups: int, deliveries: DeliveryFigures | None, opps: int) -> str:
    """``/admin``: Redis figures, then today's deliveries from the lake (n/a when unreadable)."""
    lines = [
        _("<b>Admin · stats</b>"),
        _("Users: {n}").format(n=users),
        _("Active sessions: {n}").format(n=sessions),
        _("Groups: {n}").format(n=groups),
        _("Open opportunities: {n}").format(n=opps),
    ]
    if deliveries is None:
        lines.append(_("Deliveries today: {n}").format(n=na()))
    else:
        d = deliveries
        rate = na() if d.engagement_rate is None else f"{100 * d.engagement_rate:.1f}%"
        p99 = na() if d.p99_ms is None else _("{v} ms").format(v=f"{d.p99_ms:,.0f}")
        lines += [
            _("Deliveries today: {n} (sent {sent} · skipped {skipped})").format(
                n=d.deliveries, sent=d.sent, skipped=d.skipped
            ),
            _("429s today: {n}").format(n=d.throttled_429),
            _("Engagement today: {rate}").format(rate=rate),
            _("Delivery p99 today: {p99}").format(p99=p99),
        ]
    return "\n".join([*lines, "", __getattr__("ADMIN_USAGE")])


def admin_tier_set(user_id: int, tier: Tier) -> str:
    return _("User {user} is now <b>{tier}</b>.").format(user=user_id, tier=tier_label(tier))


def admin_no_user(user_id: str) -> str:
    return _("No user {user}.").format(user=esc(user_id))


def admin_bad_tier(value: str) -> str:
    tiers = ", ".join(f"<code>{t.value}</code>" for t in Tier if t is not Tier.SUPERADMIN)
    return _(
        "Not a tier you can set: {value}. One of: {tiers} "
        "(SuperAdmins come from <code>ARBFLOW_SUPERADMIN_IDS</code>)."
    ).format(value=esc(value), tiers=tiers)


def broadcast_body(text: str) -> str:
    return _("📣 <b>Announcement</b>") + "\n" + esc(text)


def broadcast_done(sent: int, failed: int) -> str:
    return _("Broadcast sent to {sent} chats ({failed} failed).").format(sent=sent, failed=failed)


def tier_changed(tier: Tier) -> str:
    return _("Your tier is now <b>{tier}</b>. /help shows what that unlocks.").format(tier=tier_label(tier))


# -- groups ---------------------------------------------------------------------------------


def group_welcome(title: str) -> str:
    return _(
        "Hi {title}! I post arbitrage alerts. Each member opts in with /start in a "
        "private chat; group admins change this group's settings with /settings."
    ).format(title=esc(title) or _("all"))


_CONSTANTS["GROUP_ADMINS_ONLY"] = lambda: _("Only this group's admins can change its settings.")


def group_settings_text(title: str, pushes_on: bool, min_net_bps: int) -> str:
    return _(
        "<b>Group settings · {title}</b>\n"
        "Alerts in this group: <b>{state}</b>\n"
        "Min net edge of spot spreads: {edge}"
    ).format(title=esc(title), state=on_off(pushes_on), edge=fmt_bps(min_net_bps))


_CONSTANTS["GROUP_UNKNOWN"] = lambda: _("This group isn't registered yet: remove me and add me again.")


# -- pushes ---------------------------------------------------------------------------------

PRIORITY_MARK: Mapping[Priority, str] = {Priority.HIGH: "🔥", Priority.MEDIUM: "⚡", Priority.LOW: "•"}
_CONSTANTS["PUSH_DETAILS"] = lambda: _("🔎 Details")
_CONSTANTS["PUSH_MUTE"] = lambda: _("🔕 Mute 1 h")
_CONSTANTS["PUSH_MORE"] = lambda: _("📋 More")
PUSH_MUTE_HOURS = 1
PUSH_DIGEST_BUTTONS = 5
"""A digest offers a details button for each of its first items, at most this many."""


def _push_legs(n: Notification) -> str:
    return legs_text(n.kind, n.buy_exchange, n.sell_exchange)


def _fit(text: str) -> str:
    """One message: the first part when (absurdly long values made) the text too long."""
    return text if len(text) <= TELEGRAM_LIMIT else split_message(text)[0]


_CONSTANTS["TRANSFER_UNKNOWN_TEXT"] = lambda: _(
    "⚠️ Transfer status unknown: check deposits and withdrawals before trading."
)


def transfer_lines(network: str | None, fee_bps: float | None, unknown: bool) -> list[str]:
    """How the asset moves between the venues (spot), for a push and a details card."""
    lines = []
    if network:
        fee = (
            _("withdrawal fee {v} bps, in the net").format(v=f"{fee_bps:.1f}")
            if fee_bps is not None
            else _("fee not known")
        )
        lines.append(_("Transfer: {network} network, {fee}").format(network=esc(network), fee=fee))
    if unknown:
        lines.append(__getattr__("TRANSFER_UNKNOWN_TEXT"))
    return lines


def fmt_price(value: float | None) -> str:
    """A price with the digits it needs (5 significant below 1, cents above)."""
    if value is None or not math.isfinite(value):
        return na()
    if abs(value) >= 1000:
        return f"{value:,.2f}"
    if abs(value) >= 1:
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    return f"{value:.5g}"


def fmt_fee(fraction: float | None) -> str:
    return na() if fraction is None or not math.isfinite(fraction) else f"{fraction * 100:.2f}%"


def fmt_rate(fraction: float | None, hours: float | None) -> str:
    """A funding rate per its interval: ``+0.0100% / 8 h``."""
    if fraction is None or not math.isfinite(fraction):
        return na()
    every = f" / {fmt_horizon(hours)}" if hours else ""
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
        return _("just now")
    return _("{duration} ago").format(duration=fmt_duration(delta))


def _spot_lines(n: Notification) -> list[str]:
    lines = []
    if n.buy_vwap is not None and n.sell_vwap is not None:
        lines.append(
            _("Buy at {buy} · sell at {sell} (average prices for {notional})").format(
                buy=fmt_price(n.buy_vwap), sell=fmt_price(n.sell_vwap), notional=fmt_usd(n.notional_usd)
            )
        )
    if n.executable_usd is not None:
        fees = ""
        if n.buy_fee is not None or n.sell_fee is not None:
            fees = _(" · taker fees {buy} + {sell}, in the net").format(
                buy=fmt_fee(n.buy_fee), sell=fmt_fee(n.sell_fee)
            )
        lines.append(_("Executable: {usd} at this edge").format(usd=fmt_usd(n.executable_usd)) + fees)
    return lines


def _funding_lines(n: Notification, tz: str, now: datetime | None) -> list[str]:
    lines = []
    if n.long_rate is not None or n.short_rate is not None:
        lines.append(
            _("Funding: long {long} {long_rate} · short {short} {short_rate}").format(
                long=esc(n.buy_exchange),
                long_rate=fmt_rate(n.long_rate, n.long_interval_hours),
                short=esc(n.sell_exchange),
                short_rate=fmt_rate(n.short_rate, n.short_interval_hours),
            )
        )
    if n.next_funding is not None:
        soon = now is not None and n.next_funding > now
        left = (
            " " + _("(in {left})").format(left=fmt_duration(n.next_funding - now))
            if soon and now is not None
            else ""
        )
        lines.append(_("Next funding: {time}").format(time=fmt_time(n.next_funding, tz)) + left)
    return lines


SIGNAL_TEXT: Mapping[str, str] = Translated(
    {
        "rsi_oversold": lazy("RSI {v} — oversold"),
        "rsi_overbought": lazy("RSI {v} — overbought"),
        "macd_cross_up": lazy("MACD histogram crossed above zero ({v})"),
        "macd_cross_down": lazy("MACD histogram crossed below zero ({v})"),
        "bb_break_upper": lazy("Close {v} above the upper Bollinger band ({b})"),
        "bb_break_lower": lazy("Close {v} below the lower Bollinger band ({b})"),
    }
)


def _technical_lines(n: Notification) -> list[str]:
    if not n.signal:
        return []
    value = na()
    if n.indicator is not None:
        value = f"{n.indicator:.1f}" if n.signal.startswith("rsi") else fmt_price(n.indicator)
        if n.signal.startswith("macd"):
            value = f"{n.indicator:+.4g}"
    template = SIGNAL_TEXT.get(n.signal, esc(n.signal) + " ({v})")
    line = template.format(v=value, b=fmt_price(n.band))
    if n.timeframe:
        line += " " + _("on {timeframe} bars").format(timeframe=esc(n.timeframe))
    lines = [line]
    if n.hit_rate is not None and n.hit_samples:
        lines.append(
            ngettext(
                "Right {rate}% of the last {n} time it fired here",
                "Right {rate}% of the last {n} times it fired here",
                n.hit_samples,
            ).format(rate=f"{n.hit_rate * 100:.0f}", n=n.hit_samples)
        )
    return lines


def closed_after(seconds: float) -> str:
    return _("✅ Closed after {duration}").format(duration=fmt_duration(timedelta(seconds=seconds)))


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
    confidence = f"{n.confidence * 100:.0f}%" if math.isfinite(n.confidence) else na()
    if n.kind is OpportunityKind.SPOT_SPREAD and n.executable_usd is not None:
        lines.append(
            _("Confidence {confidence}").format(confidence=confidence)
        )  # the size is on the executable line
    else:
        lines.append(
            _("Size: {size} · confidence {confidence}").format(
                size=fmt_usd(n.notional_usd), confidence=confidence
            )
        )
    age = f" · {fmt_ago(now - n.detected_at)}" if now is not None else ""
    lines.append(_("Detected {time}").format(time=fmt_time(n.detected_at, tz, seconds=True)) + age)
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
    head = ngettext("📬 <b>{n} new opportunity</b>", "📬 <b>{n} new opportunities</b>", len(d)).format(
        n=len(d)
    )
    foot = _("Tap a number for details.")
    lines = [head, ""]
    used = len(head) + 1 + len(foot) + 2
    for i, n in enumerate(d.items, start=1):
        line = _fit(push_line(i, n, closed.get(n.opportunity_id)))
        more = _("…and {n} more: /opportunities").format(n=len(d) - i + 1)
        if used + len(line) + 1 + len(more) + 1 > TELEGRAM_LIMIT:
            lines.append(more)
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join([*lines, "", foot])


def push_muted_answer(until: datetime, tz: str) -> str:
    """Plain text (a callback answer is not HTML)."""
    from zoneinfo import ZoneInfo

    return _("🔕 Muted until {time} ({zone}). /mute 0 resumes alerts.").format(
        time=f"{until.astimezone(ZoneInfo(tz)):%H:%M}", zone=tz
    )


# -- operator alerts (SuperAdmins) -----------------------------------------------------------

ALERT_TITLES: Mapping[AlertKind, str] = Translated(
    {
        AlertKind.STALE_DATA: lazy("stale market data"),
        AlertKind.INGEST_LAG: lazy("ingest lag"),
        AlertKind.DELIVERY_FAILURES: lazy("delivery failures"),
        AlertKind.RATE_LIMITED: lazy("Telegram 429s"),
        AlertKind.SOURCE_DOWN: lazy("market source cannot start"),
    }
)


def fmt_alert_value(kind: AlertKind, value: float) -> str:
    if kind is AlertKind.DELIVERY_FAILURES:
        return f"{value:.0%}"
    if kind is AlertKind.RATE_LIMITED:
        return f"{value:.0f}"
    return _("{v} s").format(v=f"{value:.0f}" if value >= 10 else f"{value:.1f}")


def _alert_fact(kind: AlertKind, value: float, threshold: float, window_s: float | None) -> str:
    window = (
        " " + _("in the last {duration}").format(duration=fmt_duration(timedelta(seconds=window_s)))
        if window_s
        else ""
    )
    v, th = fmt_alert_value(kind, value), fmt_alert_value(kind, threshold)
    if kind is AlertKind.STALE_DATA:
        return _("No market data for {v} (threshold {th}).").format(v=v, th=th)
    if kind is AlertKind.INGEST_LAG:
        return _("Data arrives {v} after the exchange's timestamp (threshold {th}).").format(v=v, th=th)
    if kind is AlertKind.DELIVERY_FAILURES:
        return _("{v} of pushes failed{window} (threshold {th}).").format(v=v, window=window, th=th)
    if kind is AlertKind.SOURCE_DOWN:
        return _("The exchange's market source has failed to start for {v}; it keeps retrying.").format(v=v)
    return _("{v} rate-limit answers (429){window} (threshold {th}).").format(v=v, window=window, th=th)


def alert_notice(notice: AlertNotice, *, window_s: float | None = None) -> str:
    """An incident opened or resolved, for the SuperAdmins (one message per event)."""
    inc = notice.incident
    title = f"{ALERT_TITLES[inc.kind]} · <code>{esc(inc.subject)}</code>"
    if notice.event is NoticeEvent.OPENED:
        lines = [
            _("🚨 <b>Alert: {title}</b>").format(title=title),
            _alert_fact(inc.kind, inc.value, inc.threshold, window_s),
            _("Since {since}. You will hear again when it clears.").format(since=fmt_dt(inc.opened_at)),
        ]
    else:
        lasted = fmt_duration(notice.at - inc.opened_at)
        lines = [
            _("✅ <b>Resolved: {title}</b>").format(title=title),
            _("Lasted {lasted}; worst {worst}, now {now}.").format(
                lasted=lasted,
                worst=fmt_alert_value(inc.kind, inc.peak),
                now=fmt_alert_value(inc.kind, inc.last_value),
            ),
        ]
    lines.append(_("<i>incident {id}</i>").format(id=esc(inc.id)))
    return _fit("\n".join(lines))


# -- API key checks -------------------------------------------------------------------------
# (``/apikeys add`` asks the exchange what the key may do: pipeline/sources/permissions.py)


def apikey_not_deleted(deleted: bool) -> str:
    """A note to add when the message holding the key could not be deleted."""
    return "" if deleted else "\n⚠️ " + _("I couldn't delete your message: please delete it yourself.")


def apikeys_add_usage() -> str:
    return _(
        "Send <code>/apikeys add &lt;exchange&gt; &lt;key&gt; &lt;secret&gt;</code> "
        "(okx: add the passphrase after the secret). I need the secret once, to ask the "
        "exchange what the key may do; it is not stored."
    )


def apikey_read_only(exchange: str) -> str:
    return _("✅ Checked with {exchange}: this key is read-only.").format(exchange=esc(exchange))


def apikey_refused_permissions(exchange: str, permissions: Sequence[str]) -> str:
    """A key that can trade, withdraw or move funds: refused, naming what to turn off."""
    listed = "\n".join(f"• {esc(p)}" for p in permissions)
    return (
        _(
            "⛔ Not added: this {exchange} key can do more than read. I accept read-only keys "
            "only. Turn these permissions off in the key's settings on {exchange} (or create "
            "a new key with read permission only), then send it again:"
        ).format(exchange=esc(exchange))
        + "\n"
        + listed
    )


def apikey_rejected(exchange: str) -> str:
    return _(
        "⛔ Not added: {exchange} refused this key. Check the key and the secret "
        "(okx: and the passphrase), then send them again."
    ).format(exchange=esc(exchange))


def apikey_unverified(exchange: str) -> str:
    return _(
        "⛔ Not added: I could not verify this key — {exchange} did not answer. I add a key "
        "only after the exchange confirms it is read-only; please try again in a few minutes."
    ).format(exchange=esc(exchange))


def apikey_unsupported(exchange: str) -> str:
    return _(
        "⛔ Not added: {exchange} does not let me check a key's permissions, and I accept "
        "only keys I have verified as read-only."
    ).format(exchange=esc(exchange))


# -- grouped pushes -------------------------------------------------------------------------
# The legs of one thing a user acts on (the same symbol from several venues to one, due
# together for a chat) as one push ranked by net: core.notifications.leg_groups.


def _group_headline(kind: OpportunityKind, side: str, venue: str, n: int) -> str:
    v = esc(venue)
    if kind is OpportunityKind.FUNDING_RATE:
        if side == "sell":
            return ngettext(
                "Short {venue}, long on {n} venue", "Short {venue}, long on one of {n} venues", n
            ).format(venue=v, n=n)
        return ngettext(
            "Long {venue}, short on {n} venue", "Long {venue}, short on one of {n} venues", n
        ).format(venue=v, n=n)
    if side == "sell":
        return ngettext(
            "Sell on {venue}, buy on {n} venue", "Sell on {venue}, buy on one of {n} venues", n
        ).format(venue=v, n=n)
    return ngettext(
        "Buy on {venue}, sell on {n} venue", "Buy on {venue}, sell on one of {n} venues", n
    ).format(venue=v, n=n)


def grouped_leg_line(i: int, n: Notification, closed: float | None = None) -> str:
    """One leg of a grouped push: its venues, its net edge, its executable size (spot)."""
    parts = [f"{i}. {_push_legs(n)}"]
    value = edge_value(n.kind, n.net_bps, n.net_apr, n.horizon_hours)
    if value:
        parts.append(f"<b>{value}</b>")
    if n.kind is OpportunityKind.SPOT_SPREAD and n.executable_usd is not None:
        parts.append(_("{size} executable").format(size=fmt_usd(n.executable_usd)))
    if closed is not None:
        parts.append(closed_after(closed))
    return " · ".join(parts)


def grouped_push_message(
    d: Digest, *, tz: str = "UTC", now: datetime | None = None, closed: Mapping[str, float] | None = None
) -> str:
    """One push for the legs of one group (:func:`core.notifications.payload_of`): the symbol
    and the venue they share, every leg ranked by net (numbered like the detail buttons),
    then what backs the best leg (spot: prices, size, fees, transfer; funding: each leg's
    rate and the next funding), times in ``tz`` and the age at ``now``. ``closed``: legs that
    closed since it was sent → their lifetime (the edit on close marks each; when every leg
    closed, a last line says so)."""
    from core.notifications import by_net, shared_venue

    closed = closed or {}
    legs = by_net(d.items)
    best = legs[0]
    priority = min((n.priority for n in legs), key=lambda p: PRIORITY_RANK[p])
    lines = [f"{PRIORITY_MARK[priority]} <b>{esc(best.symbol)}</b> — {KIND_LABELS[best.kind]}"]
    shared = shared_venue(legs)
    if shared is not None:
        lines.append(_group_headline(best.kind, shared[0], shared[1], len(legs)))
    lines.append("")
    lines += [_fit(grouped_leg_line(i, n, closed.get(n.opportunity_id))) for i, n in enumerate(legs, start=1)]
    lines.append("")
    lines.append(_("Best route (1):"))
    if best.kind is OpportunityKind.SPOT_SPREAD:
        lines += _spot_lines(best)
        lines += transfer_lines(best.transfer_network, best.transfer_bps, best.transfer_unknown)
    elif best.kind is OpportunityKind.FUNDING_RATE:
        lines += _funding_lines(best, tz, now)
    first = min(n.detected_at for n in legs)
    detected = _("Detected {time}").format(time=fmt_time(first, tz, seconds=True))
    lines.append(detected + (f" · {fmt_ago(now - first)}" if now is not None else ""))
    if all(n.opportunity_id in closed for n in legs):
        lines.append(_("✅ Every route has closed."))
    lines.append(_("Tap a number for details."))
    return _fit("\n".join(lines))


# -- payments ---------------------------------------------------------------------------------
# Tiers paid in Telegram Stars (bot.routers.subscription, bot.payments, the monitor's sweep).


def fmt_stars(price: TierPrice) -> str:
    return _("{stars} ⭐ for {days} days").format(stars=price.stars, days=price.days)


def subscription_screen(
    tiers: Mapping[Tier, TierPolicy],
    prices: Mapping[Tier, TierPrice],
    current: Tier,
    paid_until: datetime | None,
    tz: str,
    now: datetime,
    buyable: Sequence[TierPrice],
) -> str:
    """``/subscription``: the tiers with their limits and prices, and how to upgrade."""
    lines = [_("<b>Your tier: {tier}</b>").format(tier=tier_label(current))]
    if paid_until is not None and paid_until > now:
        lines.append(
            _("Paid until {date} (in {left}); paying again extends it from then.").format(
                date=fmt_dt(paid_until, tz), left=fmt_duration(paid_until - now)
            )
        )
    lines.append("")
    for tier in Tier:
        if tier is Tier.SUPERADMIN:
            continue
        price = prices.get(tier)
        cost = (
            _("free") if tier is Tier.FREE else fmt_stars(price) if price is not None else _("not for sale")
        )
        mark = _(" ← you") if tier is current else ""
        lines.append(f"• {tier_line(tiers[tier])} — {cost}{mark}")
    lines.append(_("API keys (/apikeys) need Basic or above."))
    lines.append("")
    lines.append(
        _(
            "Quotas count alerts and /opportunities views together; the daily one resets at "
            "midnight in your time zone (/settings), the hourly one every hour."
        )
    )
    if buyable:
        lines.append(
            _(
                "Pay with Telegram Stars below: the tier applies at once for the period paid, "
                "then you return to Free (you are told)."
            )
        )
    elif current >= Tier.ENTERPRISE:
        lines.append(_("You have the top tier. Thank you!"))
    else:
        lines.append(_("No tier is for sale right now."))
    return "\n".join(lines)


def buy_button(price: TierPrice, current: Tier) -> str:
    if price.tier == current:
        return _("Extend {tier} · {stars} ⭐").format(tier=tier_label(price.tier), stars=price.stars)
    return _("Buy {tier} · {stars} ⭐ / {days} days").format(
        tier=tier_label(price.tier), stars=price.stars, days=price.days
    )


def invoice_title(price: TierPrice) -> str:
    """≤ 32 characters (Telegram's limit for an invoice title)."""
    return _("arbflow {tier}").format(tier=tier_label(price.tier))[:32]


def invoice_description(policy: TierPolicy, price: TierPrice) -> str:
    """≤ 255 characters."""
    return _("{tier} tier for {days} days: {limits}.").format(
        tier=tier_label(price.tier),
        days=price.days,
        limits=re.sub(r"<[^>]+>", "", re.sub(r"^<b>[^<]*</b>:\s*", "", tier_line(policy))),
    )[:255]


def invoice_label(price: TierPrice) -> str:
    return _("{tier}, {days} days").format(tier=tier_label(price.tier), days=price.days)


def invoice_sent() -> str:
    return _("Invoice sent: pay it below.")


def not_for_sale() -> str:
    return _("That tier is not for sale to you now: /subscription shows what is.")


def precheckout_error(reason: str) -> str:
    """The ``error_message`` Telegram shows when a checkout is refused."""
    if reason == "price_changed":
        return _("The price of this tier changed. Open /subscription for a new invoice.")
    if reason == "not_for_sale":
        return _("This tier is no longer for sale. Open /subscription to see what is.")
    if reason == "no_user":
        return _("We do not know you yet. Send /start, then /subscription.")
    if reason == "not_upgrade":
        return _("You already have this tier or a higher one. Open /subscription.")
    return _("This invoice is not valid. Open /subscription for a new one.")


def payment_thanks(tier: Tier, paid_until: datetime, tz: str) -> str:
    return _("⭐ Thank you! You are on <b>{tier}</b> until {date}. /status shows your limits.").format(
        tier=tier_label(tier), date=fmt_dt(paid_until, tz)
    )


def payment_unmatched() -> str:
    return _(
        "We received your payment but could not match it to a tier. An admin will sort it out; "
        "you can also ask for a refund."
    )


def tier_expired(tier: Tier) -> str:
    return _("Your paid <b>{tier}</b> period ended; you are on Free again. /subscription to renew.").format(
        tier=tier_label(tier)
    )


def payment_refunded(stars: int) -> str:
    return _("Your payment of {stars} ⭐ was refunded; you are on Free again.").format(stars=stars)


def admin_refund_usage() -> str:
    return _("<code>/admin refund &lt;telegram_payment_charge_id&gt;</code> — refund a Stars payment")


def admin_refund_unknown(charge_id: str) -> str:
    return _("No payment with charge id <code>{charge}</code>.").format(charge=esc(charge_id))


def admin_refund_already(charge_id: str) -> str:
    return _("Payment <code>{charge}</code> was already refunded.").format(charge=esc(charge_id))


def admin_refund_failed(charge_id: str, error: str) -> str:
    return _("Telegram refused to refund <code>{charge}</code>: {error}").format(
        charge=esc(charge_id), error=esc(error)
    )


def admin_refund_done(charge_id: str, user_id: int, stars: int) -> str:
    return _("Refunded {stars} ⭐ of <code>{charge}</code>; user {user} is on Free again.").format(
        stars=stars, charge=esc(charge_id), user=user_id
    )


# -- missed while delayed --


def _missed_delay(seconds: int) -> str:
    if seconds <= 0:
        return _("live")
    return _("{delay} delay").format(delay=fmt_duration(timedelta(seconds=seconds)))


def _missed_edge(item: MissedItem) -> str:
    if item.kind == OpportunityKind.FUNDING_RATE and item.net_apr is not None:
        return _("{apr} net").format(apr=fmt_apr(item.net_apr))
    return _("{bps} net").format(bps=fmt_bps(item.net_bps))


def _missed_offer(offer: UpgradeOffer, total: int) -> str:
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
                    _(
                        "Daily at {time}. Change it: /settings digest HOUR (0-23), or /settings digest off"
                    ).format(time=at)
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
    if hour is None:
        return esc(_('The "missed while delayed" digest is off. Turn it on: /settings digest 9'))
    return esc(
        _('The "missed while delayed" digest now comes daily at {time}.').format(time=f"{hour:02d}:00 {tz}")
    )


def digest_usage() -> str:
    return esc(_("Use /settings digest HOUR (0-23) or /settings digest off."))
