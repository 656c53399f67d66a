"""The common ground of the texts: escaping, splitting long messages, small formats (money,
bps, times, durations), translated labels and the registry of constant texts."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

from aiogram.utils.i18n.lazy_proxy import LazyProxy

from core.accounts import Command, Preferences, Tier, TierPolicy
from core.models import OpportunityKind
from notify.i18n import _, lazy

if TYPE_CHECKING:
    pass


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


def constant(name: str) -> str:
    """The constant text ``name`` in the current language (``texts.NAME`` outside)."""
    text = _CONSTANTS.get(name)
    if text is None:
        raise AttributeError(f"module 'notify.texts' has no attribute {name!r}")
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


def language_name(language: str | None) -> str:
    """The user's language setting as shown (``None``: the Telegram app's language)."""
    from notify.i18n import LANGUAGES

    return LANGUAGES[language] if language in LANGUAGES else _("as in Telegram")


def on_off(on: bool) -> str:
    return _("on") if on else _("off")


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


def fmt_time(value: datetime, tz: str = "UTC", *, seconds: bool = False) -> str:
    """A time of day in the user's zone with the zone's abbreviation (``16:04 CET``; zones
    without one show their offset, ``+0545``)."""
    from zoneinfo import ZoneInfo

    local = value.astimezone(ZoneInfo(tz))
    return f"{local:%H:%M:%S %Z}" if seconds else f"{local:%H:%M %Z}"


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
        lines.append(constant("TRANSFER_UNKNOWN_TEXT"))
    return lines


def _fit(text: str) -> str:
    """One message: the first part when (absurdly long values made) the text too long."""
    return text if len(text) <= TELEGRAM_LIMIT else split_message(text)[0]
