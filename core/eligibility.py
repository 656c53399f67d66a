"""Eligibility: who gets one opportunity, decided for every push target at once (issue 5).

Pure: data in, decisions out; ``now`` is injected. The user directory is one Polars
frame (:data:`DIRECTORY_SCHEMA`, one row per push target) that ``actors.directory``
materialises from Redis and keeps current; :func:`evaluate` runs the six layers as
Polars expressions over all rows and says, for every row, the *first* layer that
failed (``0`` = eligible) with a stable reason string. :func:`evaluate_loop` is the
same rules as a plain per-row Python loop (the benchmark's baseline and the tests'
cross-check); :func:`explain` is ``/admin why``.

The layers, in order (the first failing one decides; within a layer the reasons are
checked in the order of :class:`Reason`):

1. **Session** — ``session.none`` (no session in the directory), ``session.expired``
   (``expires <= now``). Groups have no session: they always pass.
2. **Subscription** — ``subscription.kind`` (the tier does not include the kind),
   ``subscription.beta`` (the opportunity needs a beta flag — its own ``beta_flag`` or
   the policy's per-kind one — that the user lacks; SuperAdmins pass).
3. **Preferences** — ``preferences.off``, ``.kind``, ``.exchange`` (every leg must be in
   a non-empty set), ``.symbol``, ``.min_profit`` (below the target's minimum *for the
   opportunity's kind*, each in its own unit: spot ``net_bps < min_net_bps``, funding
   ``net_apr · 100 < min_net_apr_pct``, technical ``confidence < min_confidence``),
   ``.muted`` (``now < muted_until``), ``.hours``: outside the active hours with
   ``outside_hours="hold"`` the target is *eligible* with ``due_at`` = the next window
   opening (the queue drops what closed meanwhile); only when the policy sets
   ``max_hold_s`` and the window opens later than that does ``preferences.hours``
   decide. Outside the hours with ``"silent"``: eligible, ``silent=True`` (sent with
   ``disable_notification``), due as usual.
4. **Rate limits** — ``rate.daily``, ``rate.hourly`` (the tier's quotas against the
   directory's counters of the current UTC day/hour; ``None`` = unlimited; users only,
   groups are limited in layer 6), ``rate.cooldown`` (the target is in ``cooled``).
5. **Technical** — ``technical.api_keys`` (``only_my_exchanges`` and no API key for a
   leg), ``technical.ai_key`` (an AI-enhanced opportunity and no AI key).
6. **Context** — ``context.restricted``, ``context.region`` (the policy's region
   blocks), ``context.group_limit`` (a group's quotas: ``group_multiplier`` times Free's),
   ``context.blocked`` (the chat blocked the bot / the bot left the group).

``due_at`` (every row; it matters for eligible ones) is ``now`` + the tier's
``delay_s``, or the next opening of the active hours when that is later and the target
is held. Groups are Free for kinds and delay, and have no preferences but ``pushes_on``
and ``min_net_bps`` (their spot threshold; their funding and technical minimums are 0).

Encoding (:class:`Vocabulary`, owned by the policy the directory was built with: a
directory frame is only meaningful with the vocabulary that encoded it):

- ``kinds``: bit ``i`` = ``list(OpportunityKind)[i]``.
- ``exchanges`` / ``key_exchanges``: bit = the exchange's index in
  ``vocab.exchanges`` (0..62); bit 63 stands for "some exchange beyond the first 63",
  which no opportunity leg matches. ``exchanges == 0`` means all.
- symbols: ``symbols_n`` picked (0 = all), ``symbols_mask`` bits for the first 64
  symbol codes, ``symbols_extra`` the codes beyond (exact for any number of symbols).
- ``beta``: bit = index in ``vocab.beta_flags`` (first 64 flags).
- ``tz`` / ``region`` / ``lang``: indices into ``vocab.timezones`` / ``vocab.regions`` /
  ``vocab.languages`` (region 0 = unknown, language 0 = English; :func:`language_of`).
  ``window`` = ``start * 24 + end`` of the active hours (whole local hours,
  ``[start, end)``, wrapping midnight when ``start > end``), ``-1`` = always.
- times are Int64 epoch ms (UTC); quotas are ``day_used`` for the target's local day
  ``day_bucket`` (days since the epoch on the wall clock of its zone, ``tz``: the daily
  quota resets at the user's local midnight) and ``hour_used`` for UTC hour ``hour_bucket`` (hours since
  the epoch): a counter of another bucket counts as 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from core.accounts import (
    THRESHOLD_FIELDS,
    Tier,
    TierPolicy,
    User,
    effective_tier,
    local_day,
    tier_policies,
)
from core.funding import DEFAULT_HORIZON_HOURS, HOURS_PER_YEAR
from core.models import OpportunityKind, Priority

if TYPE_CHECKING:
    from core.settings import Settings

# --------------------------------------------------------------------------- layers


class Layer(IntEnum):
    ELIGIBLE = 0
    SESSION = 1
    SUBSCRIPTION = 2
    PREFERENCES = 3
    RATE_LIMITS = 4
    TECHNICAL = 5
    CONTEXT = 6


class Reason(StrEnum):
    """Why a target does not get an opportunity; the order is the order of the checks."""

    ELIGIBLE = "eligible"
    SESSION_NONE = "session.none"
    SESSION_EXPIRED = "session.expired"
    SUBSCRIPTION_KIND = "subscription.kind"
    SUBSCRIPTION_BETA = "subscription.beta"
    PREFERENCES_OFF = "preferences.off"
    PREFERENCES_KIND = "preferences.kind"
    PREFERENCES_EXCHANGE = "preferences.exchange"
    PREFERENCES_SYMBOL = "preferences.symbol"
    PREFERENCES_BLOCKED = "preferences.blocked"
    PREFERENCES_MIN_PROFIT = "preferences.min_profit"
    PREFERENCES_MIN_SIZE = "preferences.min_size"
    PREFERENCES_MUTED = "preferences.muted"
    PREFERENCES_HOURS = "preferences.hours"
    RATE_DAILY = "rate.daily"
    RATE_HOURLY = "rate.hourly"
    RATE_COOLDOWN = "rate.cooldown"
    TECHNICAL_API_KEYS = "technical.api_keys"
    TECHNICAL_AI_KEY = "technical.ai_key"
    CONTEXT_RESTRICTED = "context.restricted"
    CONTEXT_REGION = "context.region"
    CONTEXT_GROUP_LIMIT = "context.group_limit"
    CONTEXT_BLOCKED = "context.blocked"

    @property
    def layer(self) -> Layer:
        return _REASON_LAYER[self]

    @property
    def code(self) -> int:
        return _REASON_CODE[self]


_LAYER_OF_PREFIX = {
    "eligible": Layer.ELIGIBLE,
    "session": Layer.SESSION,
    "subscription": Layer.SUBSCRIPTION,
    "preferences": Layer.PREFERENCES,
    "rate": Layer.RATE_LIMITS,
    "technical": Layer.TECHNICAL,
    "context": Layer.CONTEXT,
}
REASONS: tuple[Reason, ...] = tuple(Reason)
_REASON_LAYER: dict[Reason, Layer] = {r: _LAYER_OF_PREFIX[r.value.split(".")[0]] for r in REASONS}
_REASON_CODE: dict[Reason, int] = {r: i for i, r in enumerate(REASONS)}

KINDS: tuple[OpportunityKind, ...] = tuple(OpportunityKind)
KIND_BIT: dict[OpportunityKind, int] = {k: 1 << i for i, k in enumerate(KINDS)}
ALL_KINDS_MASK = (1 << len(KINDS)) - 1
TIERS: tuple[Tier, ...] = tuple(Tier)
AUDIENCES = ("user", "group")
MASK_BITS = 64
OVERFLOW_BIT = 1 << 63
EXCHANGE_SLOTS = 63
"""Exchanges with their own bit; the others share :data:`OVERFLOW_BIT`."""
NO_EXPIRY_MS = 2**62
"""``session_expires_ms`` of groups (no session)."""

TIER_DTYPE = pl.Enum([t.value for t in TIERS])
AUDIENCE_DTYPE = pl.Enum(list(AUDIENCES))
REASON_DTYPE = pl.Enum([r.value for r in REASONS])
UTC_MS = pl.Datetime("ms", "UTC")

_DIRECTORY_COLUMNS: dict[str, Any] = {
    "user_id": pl.Int64,  # the target: a Telegram user id, or a group's (negative) chat id
    "chat_id": pl.Int64,  # where pushes go (a user's private chat id is the user id)
    "audience": AUDIENCE_DTYPE,  # user | group
    "tier": TIER_DTYPE,  # effective tier (SuperAdmin ids applied); groups: free
    "session_expires_ms": pl.Int64,  # null: no session; groups: NO_EXPIRY_MS
    "blocked": pl.Boolean,  # the chat blocked the bot / the bot left the group
    "pushes_on": pl.Boolean,
    "kinds": pl.UInt8,  # bitmask over KINDS
    "exchanges": pl.UInt64,  # bitmask over vocab.exchanges, 0 = all
    "symbols_n": pl.UInt16,  # symbols picked, 0 = all
    "symbols_mask": pl.UInt64,  # bits of symbol codes < 64
    "symbols_extra": pl.List(pl.UInt32),  # symbol codes >= 64
    "blocked_exchanges": pl.UInt64,  # bitmask over vocab.exchanges, 0 = none blocked
    "blocked_symbols_mask": pl.UInt64,  # bits of blocked symbol codes < 64
    "blocked_symbols_extra": pl.List(pl.UInt32),  # blocked symbol codes >= 64
    "min_size_usd": pl.Float64,  # minimum executable size, 0 = any
    "min_net_bps": pl.Float64,  # spot: minimum net edge, bps
    "min_net_apr_pct": pl.Float64,  # funding: minimum net APR, percent
    "min_confidence": pl.Float64,  # technical: minimum confidence, 0..1
    "muted_until_ms": pl.Int64,  # null: not muted
    "tz": pl.UInt16,  # index into vocab.timezones
    "window": pl.Int16,  # active hours start * 24 + end (local), -1: always active
    "outside_silent": pl.Boolean,  # outside_hours == "silent" (else "hold")
    "only_my_exchanges": pl.Boolean,
    "key_exchanges": pl.UInt64,  # bitmask of exchanges with an API key
    "has_ai_key": pl.Boolean,
    "beta": pl.UInt64,  # bitmask over vocab.beta_flags
    "restricted": pl.Boolean,
    "region": pl.UInt16,  # index into vocab.regions, 0 = unknown
    "lang": pl.UInt16,  # index into vocab.languages: the language of its pushes (0 = English)
    "day_bucket": pl.Int32,  # local days since the epoch (in the row's tz) of day_used
    "day_used": pl.Int32,
    "hour_bucket": pl.Int32,  # UTC hours since the epoch of hour_used
    "hour_used": pl.Int32,
}
DIRECTORY_SCHEMA = pl.Schema(_DIRECTORY_COLUMNS)
"""The user directory: one row per push target (users, and groups with audience ``group``)."""

_RESULT_COLUMNS: dict[str, Any] = {
    "user_id": pl.Int64,
    "chat_id": pl.Int64,
    "audience": AUDIENCE_DTYPE,
    "tier": TIER_DTYPE,
    "layer": pl.Int8,
    "reason": REASON_DTYPE,
    "silent": pl.Boolean,
    "due_at": UTC_MS,
    "tz": pl.UInt16,  # the target's zone (index into vocab.timezones): pushes show its times
    "lang": pl.UInt16,  # the target's language (index into vocab.languages): pushes speak it
}
RESULT_SCHEMA = pl.Schema(_RESULT_COLUMNS)
"""What :func:`evaluate` returns: one row per directory row, in the directory's order."""

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return int(dt.timestamp() * 1000)


def day_bucket(now: datetime) -> int:
    return to_ms(now) // DAY_MS


def hour_bucket(now: datetime) -> int:
    return to_ms(now) // HOUR_MS


# --------------------------------------------------------------------------- vocabulary


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass
class Vocabulary:
    """Name ↔ code tables of the directory's columns. Append-only: codes never change."""

    exchanges: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    beta_flags: list[str] = field(default_factory=list)
    timezones: list[str] = field(default_factory=lambda: ["UTC"])
    regions: list[str] = field(default_factory=lambda: [""])
    languages: list[str] = field(default_factory=lambda: ["en"])
    _index: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    def _table(self, name: str) -> dict[str, int]:
        table = self._index.get(name)
        values: list[str] = getattr(self, name)
        if table is None or len(table) != len(values):
            table = {v: i for i, v in enumerate(values)}
            self._index[name] = table
        return table

    def code(self, table: str, value: str, *, add: bool = True) -> int | None:
        """The code of ``value`` in ``table`` (added when new and ``add``), else None."""
        codes = self._table(table)
        found = codes.get(value)
        if found is None and add:
            values: list[str] = getattr(self, table)
            found = len(values)
            values.append(value)
            codes[value] = found
        return found

    def exchange_bit(self, name: str, *, add: bool = True) -> int:
        """The exchange's bit (0 when unknown and not added)."""
        code = self.code("exchanges", name.strip().lower(), add=add)
        if code is None:
            return 0
        return 1 << code if code < EXCHANGE_SLOTS else OVERFLOW_BIT

    def exchange_mask(self, names: Iterable[str], *, add: bool = True) -> int:
        mask = 0
        for name in names:
            mask |= self.exchange_bit(name, add=add)
        return mask

    def beta_mask(self, flags: Iterable[str], *, add: bool = True) -> int:
        mask = 0
        for flag in flags:
            code = self.code("beta_flags", flag, add=add)
            if code is not None and code < MASK_BITS:
                mask |= 1 << code
        return mask

    def symbol_columns(self, symbols: Iterable[str], *, add: bool = True) -> tuple[int, int, list[int]]:
        """``(symbols_n, symbols_mask, symbols_extra)`` for a set of symbols."""
        n, mask, extra = 0, 0, []
        for symbol in symbols:
            code = self.code("symbols", symbol, add=add)
            n += 1
            if code is None:
                continue
            if code < MASK_BITS:
                mask |= 1 << code
            else:
                extra.append(code)
        return n, mask, sorted(extra)

    def tz_code(self, name: str) -> int:
        code = self.code("timezones", name)
        assert code is not None
        return code

    def language_code(self, language: str | None) -> int:
        if not language:
            return 0
        code = self.code("languages", language)
        assert code is not None
        return code

    def region_code(self, region: str | None) -> int:
        if not region:
            return 0
        code = self.code("regions", region.strip().upper())
        assert code is not None
        return code


# --------------------------------------------------------------------------- the opportunity


@dataclass(frozen=True, slots=True)
class OpportunityView:
    """What eligibility needs of an opportunity. ``net_bps`` is a float (vectorised edge).

    ``net_apr`` (funding: the net return a year, a fraction; NaN for the other kinds) is
    what a funding opportunity is judged by: its ``net_bps`` is a return over the
    detector's horizon (168 h by default), not comparable with a spot edge.
    """

    opportunity_id: str
    kind: OpportunityKind
    symbol: str
    buy_exchange: str | None
    sell_exchange: str | None
    """None for a single-exchange kind (technical: the exchange is on the side it trades)."""
    net_bps: float
    priority: Priority
    confidence: float
    dedup_key: str
    detected_at: datetime
    ai_enhanced: bool = False
    beta_flag: str | None = None
    net_apr: float = math.nan
    executable_usd: float = math.nan
    """The size that trades at the edge (NaN: unknown or sizeless, never filtered by size)."""

    @property
    def threshold_value(self) -> float:
        """The figure the kind's user minimum is compared with (:data:`THRESHOLD_COLUMN`)."""
        if self.kind is OpportunityKind.FUNDING_RATE:
            return self.net_apr * 100.0
        if self.kind is OpportunityKind.TECHNICAL:
            return self.confidence
        return self.net_bps

    @property
    def exchanges(self) -> tuple[str, ...]:
        """The legs (one or two exchanges, lower case)."""
        return tuple(e.lower() for e in (self.buy_exchange, self.sell_exchange) if e)

    @staticmethod
    def make_dedup_key(kind: str, symbol: str, buy: str | None, sell: str | None) -> str:
        return f"{kind}:{symbol}:{buy or ''}:{sell or ''}"

    @classmethod
    def from_event(cls, data: Mapping[str, Any]) -> OpportunityView:
        """From an opportunity event dict (``OpenOpportunity.to_dict``, a lifecycle event) or an
        ``opportunities`` row. ``ai_enhanced`` / ``beta_flag`` may sit at the top level or in
        ``details``."""
        details = data.get("details") or {}
        if isinstance(details, str):
            details = json.loads(details) if details else {}
        kind = OpportunityKind(data["kind"])
        buy = data.get("buy_exchange") or None
        sell = data.get("sell_exchange") or None
        detected = data.get("detected_at") or data.get("ts")
        if isinstance(detected, str):
            detected = datetime.fromisoformat(detected)
        if not isinstance(detected, datetime):
            raise ValueError("an opportunity needs detected_at")
        if detected.tzinfo is None:
            raise ValueError("detected_at must be timezone-aware (UTC)")
        net = data.get("net_bps")
        conf = data.get("confidence")
        beta = data.get("beta_flag", details.get("beta_flag"))
        apr = funding_net_apr(kind, net, data.get("net_apr", details.get("net_apr")), details)
        return cls(
            opportunity_id=str(data.get("opportunity_id") or ""),
            kind=kind,
            symbol=str(data["symbol"]),
            buy_exchange=buy,
            sell_exchange=sell,
            net_bps=math.nan if net is None else float(net),
            priority=Priority(data.get("priority") or Priority.MEDIUM),
            confidence=math.nan if conf is None else float(conf),
            dedup_key=cls.make_dedup_key(kind.value, str(data["symbol"]), buy, sell),
            detected_at=detected.astimezone(UTC),
            ai_enhanced=bool(data.get("ai_enhanced", details.get("ai_enhanced", False))),
            beta_flag=str(beta) if beta else None,
            net_apr=apr,
            executable_usd=_finite_or_nan(data.get("executable_usd")),
        )


def funding_net_apr(kind: OpportunityKind, net_bps: Any, net_apr: Any, details: Mapping[str, Any]) -> float:
    """A funding opportunity's net APR (fraction): ``net_apr`` when given, else derived from
    ``net_bps`` over ``details["horizon_hours"]`` (events of earlier releases carry neither
    the horizon nor always the APR: the default horizon, 168 h, is what they used)."""
    if kind is not OpportunityKind.FUNDING_RATE:
        return math.nan
    if net_apr is not None:
        return float(net_apr)
    if net_bps is None:
        return math.nan
    horizon = float(details.get("horizon_hours") or DEFAULT_HORIZON_HOURS)
    return float(net_bps) / 10_000.0 * float(HOURS_PER_YEAR) / horizon


THRESHOLD_COLUMN: dict[OpportunityKind, str] = dict(THRESHOLD_FIELDS)
"""The directory column with each kind's minimum (same names as the ``Preferences`` fields)."""


# --------------------------------------------------------------------------- the policy

DEFAULT_AI_KEY_NAMES = frozenset({"ai", "openai", "anthropic"})


@dataclass
class EligibilityPolicy:
    """The rules' parameters, from :class:`core.settings.Settings`, and the vocabulary."""

    tiers: dict[Tier, TierPolicy] = field(default_factory=tier_policies)
    group_multiplier: float = 2.0
    region_blocks: frozenset[str] = frozenset()
    beta_kinds: dict[OpportunityKind, str] = field(default_factory=dict)
    """Kinds still in beta → the flag a user needs for them."""
    superadmin_ids: frozenset[int] = frozenset()
    ai_key_names: frozenset[str] = DEFAULT_AI_KEY_NAMES
    """API-key names (``User.api_keys``) that count as an AI key, not an exchange."""
    max_hold_s: float | None = None
    """Held pushes whose window opens later than this are refused (``preferences.hours``)."""
    vocab: Vocabulary = field(default_factory=Vocabulary)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> EligibilityPolicy:
        dist = settings.distribution
        vocab = Vocabulary()
        for ex in settings.market.exchanges:
            vocab.exchange_bit(ex)
        for sym in settings.market.symbols:
            vocab.code("symbols", sym)
        base: dict[str, Any] = {
            "tiers": tier_policies(dist.tiers),
            "group_multiplier": dist.group_multiplier,
            "region_blocks": frozenset(r.strip().upper() for r in dist.region_blocks if r.strip()),
            "superadmin_ids": frozenset(settings.superadmin_ids),
            "vocab": vocab,
        }
        return cls(**{**base, **overrides})

    def group_quotas(self) -> tuple[int | None, int | None]:
        """A group's (daily, hourly) quotas: ``group_multiplier`` times Free's (floored)."""
        free = self.tiers[Tier.FREE]

        def scale(q: int | None) -> int | None:
            return None if q is None else math.floor(q * self.group_multiplier)

        return scale(free.daily_quota), scale(free.hourly_quota)

    def needed_beta(self, opp: OpportunityView) -> str | None:
        return opp.beta_flag or self.beta_kinds.get(opp.kind)


# --------------------------------------------------------------------------- directory rows


def language_of(user: User) -> str:
    """The language of a user's pushes: their setting, else their Telegram app's
    (``language_code``, its primary subtag: ``pt-br`` → ``pt``), else English. The bot
    renders a language it does not speak in English."""
    chosen = user.preferences.language or user.language_code or "en"
    return chosen.strip().replace("_", "-").split("-", 1)[0].lower() or "en"


def user_row(
    user: User,
    policy: EligibilityPolicy,
    *,
    session_expires_ms: int | None = None,
    blocked: bool = False,
    day_bucket: int = 0,
    day_used: int = 0,
    hour_bucket: int = 0,
    hour_used: int = 0,
) -> dict[str, Any]:
    """One directory row for a user (registers new names in ``policy.vocab``)."""
    prefs = user.preferences
    vocab = policy.vocab
    n, smask, extra = vocab.symbol_columns(prefs.symbols)
    _, bmask, bextra = vocab.symbol_columns(prefs.blocked_symbols)
    window = -1 if prefs.active_hours is None else prefs.active_hours[0] * 24 + prefs.active_hours[1]
    key_names = {k.strip().lower() for k in user.api_keys}
    ai = key_names & policy.ai_key_names
    return {
        "user_id": user.id,
        "chat_id": user.id,
        "audience": "user",
        "tier": effective_tier(user.id, user.tier, policy.superadmin_ids).value,
        "session_expires_ms": session_expires_ms,
        "blocked": blocked,
        "pushes_on": prefs.pushes_on,
        "kinds": sum(KIND_BIT[OpportunityKind(k)] for k in prefs.kinds),
        "exchanges": vocab.exchange_mask(prefs.exchanges),
        "symbols_n": n,
        "symbols_mask": smask,
        "symbols_extra": extra,
        "blocked_exchanges": vocab.exchange_mask(prefs.blocked_exchanges),
        "blocked_symbols_mask": bmask,
        "blocked_symbols_extra": bextra,
        "min_size_usd": float(prefs.min_size_usd),
        "min_net_bps": float(prefs.min_net_bps),
        "min_net_apr_pct": float(prefs.min_net_apr_pct),
        "min_confidence": float(prefs.min_confidence),
        "muted_until_ms": None if prefs.muted_until is None else to_ms(prefs.muted_until),
        "tz": vocab.tz_code(prefs.timezone),
        "window": window,
        "outside_silent": prefs.outside_hours == "silent",
        "only_my_exchanges": prefs.only_my_exchanges,
        "key_exchanges": vocab.exchange_mask(key_names - ai),
        "has_ai_key": bool(ai),
        "beta": vocab.beta_mask(user.beta_flags),
        "restricted": user.restricted,
        "region": vocab.region_code(user.region),
        "lang": vocab.language_code(language_of(user)),
        "day_bucket": day_bucket,
        "day_used": day_used,
        "hour_bucket": hour_bucket,
        "hour_used": hour_used,
    }


def group_row(
    chat_id: int,
    policy: EligibilityPolicy,
    *,
    active: bool = True,
    pushes_on: bool = True,
    min_net_bps: float = 0.0,
    min_net_apr_pct: float = 0.0,
    min_confidence: float = 0.0,
    day_bucket: int = 0,
    day_used: int = 0,
    hour_bucket: int = 0,
    hour_used: int = 0,
    lang: str | None = None,
) -> dict[str, Any]:
    """One directory row for a group (``user_id`` = ``chat_id``; Free kinds and delay;
    ``lang``: the language of its pushes, None: English)."""
    return {
        "user_id": chat_id,
        "chat_id": chat_id,
        "audience": "group",
        "tier": Tier.FREE.value,
        "session_expires_ms": NO_EXPIRY_MS,
        "blocked": not active,
        "pushes_on": pushes_on,
        "kinds": ALL_KINDS_MASK,
        "exchanges": 0,
        "symbols_n": 0,
        "symbols_mask": 0,
        "symbols_extra": [],
        "blocked_exchanges": 0,
        "blocked_symbols_mask": 0,
        "blocked_symbols_extra": [],
        "min_size_usd": 0.0,
        "min_net_bps": float(min_net_bps),
        "min_net_apr_pct": float(min_net_apr_pct),
        "min_confidence": float(min_confidence),
        "muted_until_ms": None,
        "tz": 0,
        "lang": policy.vocab.language_code(lang),
        "window": -1,
        "outside_silent": False,
        "only_my_exchanges": False,
        "key_exchanges": 0,
        "has_ai_key": False,
        "beta": 0,
        "restricted": False,
        "region": 0,
        "day_bucket": day_bucket,
        "day_used": day_used,
        "hour_bucket": hour_bucket,
        "hour_used": hour_used,
    }


def directory_frame(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows (dicts of every :data:`DIRECTORY_SCHEMA` column) → a directory frame."""
    return pl.DataFrame(list(rows), schema=DIRECTORY_SCHEMA, orient="row")


def empty_directory() -> pl.DataFrame:
    return pl.DataFrame(schema=DIRECTORY_SCHEMA)


# --------------------------------------------------------------------------- time zones


def next_opening(tz: ZoneInfo, start: int, end: int, now: datetime) -> datetime:
    """The next start of a local hour at which the window ``[start, end)`` is active (UTC).

    Scalar twin of ``core.accounts.next_active_start`` for a target outside its window
    (without building ``Preferences``): the same answer, across DST included.
    """
    local_date = now.astimezone(tz).date()
    for offset in range(3):
        day = local_date + timedelta(days=offset)
        opening = datetime(day.year, day.month, day.day, start, tzinfo=tz).astimezone(UTC)
        if opening > now and _inside(opening.astimezone(tz).hour, start, end):
            return opening
    probe = now.replace(minute=0, second=0, microsecond=0)
    for _ in range(72):
        probe += timedelta(hours=1)
        if _inside(probe.astimezone(tz).hour, start, end):
            return probe
    return now


def _inside(hour: int, start: int, end: int) -> bool:
    if start < 0:
        return True
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


_WINDOWS = 24 * 24
_W_START = np.repeat(np.arange(24), 24)
_W_END = np.tile(np.arange(24), 24)


def _openings(tz_name: str, now: datetime) -> np.ndarray:
    """For one zone at ``now``: the next opening (epoch ms) of every window ``start*24+end``."""
    local = now.astimezone(zone(tz_name))
    hour_start = now - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
    return _openings_from(tz_name, to_ms(hour_start))


@lru_cache(maxsize=4096)
def _openings_from(tz_name: str, hour_start_ms: int) -> np.ndarray:
    """Walk the next 48 local-hour starts after the one at ``hour_start_ms`` (as real instants,
    so DST gaps and repeats are what the wall clock does) and take, per window, the first
    one inside it: the answer of :func:`next_opening` for every window at once. Cached per
    (zone, local hour): it does not depend on where ``now`` is inside the hour.
    """
    tz = zone(tz_name)
    base = datetime.fromtimestamp(hour_start_ms / 1000, UTC)
    steps = [base + timedelta(hours=k) for k in range(1, 50)]
    hours = np.array([s.astimezone(tz).hour for s in steps])
    start = _W_START[:, None]
    end = _W_END[:, None]
    h = hours[None, :]
    inside = np.where(start < end, (h >= start) & (h < end), (h >= start) | (h < end))
    first = inside.argmax(axis=1)
    ms = np.array([to_ms(s) for s in steps], dtype=np.int64)
    out: np.ndarray = ms[first]
    out.flags.writeable = False
    return out


_SLOTS = _WINDOWS + 1
"""Per zone: slot 0 = always active, slot ``1 + start*24 + end`` = a window."""


def _inside_table(vocab: Vocabulary, now: datetime) -> np.ndarray:
    """``inside[tz * _SLOTS + window + 1]``: is the window open at ``now`` in that zone?"""
    hours = np.array([now.astimezone(zone(name)).hour for name in vocab.timezones], dtype=np.int16)
    h = hours[:, None]
    start, end = _W_START[None, :], _W_END[None, :]
    windows = np.where(start < end, (h >= start) & (h < end), (h >= start) | (h < end))
    table = np.ones((len(hours), _SLOTS), dtype=bool)
    table[:, 1:] = windows
    return table.ravel()


def _opening_table(vocab: Vocabulary, now: datetime) -> np.ndarray:
    """``opening[tz * _SLOTS + window + 1]``: the window's next opening (epoch ms; 0 for slot 0)."""
    table = np.zeros((len(vocab.timezones), _SLOTS), dtype=np.int64)
    for code, name in enumerate(vocab.timezones):
        table[code, 1:] = _openings(name, now)
    return table.ravel()


# --------------------------------------------------------------------------- evaluate


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything :func:`evaluate` and :func:`evaluate_loop` derive from (opp, now, policy)."""

    now_ms: int
    today: tuple[int, ...]
    """Per zone of the vocabulary, the local day of ``now`` (a daily quota's window)."""
    this_hour: int
    kind_bit: int
    tier_allows: tuple[bool, ...]
    daily: tuple[int, ...]  # per tier code, -1 unlimited
    hourly: tuple[int, ...]
    delay_ms: tuple[int, ...]
    beta_needed: bool
    beta_bit: int  # 0: nobody has it
    legs_mask: int
    legs_known: bool
    sym_code: int | None
    group_daily: int
    group_hourly: int
    region_blocked: tuple[bool, ...]
    max_hold_ms: int | None


def _plan(opp: OpportunityView, now: datetime, policy: EligibilityPolicy) -> _Plan:
    vocab = policy.vocab
    now_ms = to_ms(now)
    legs = opp.exchanges
    bits = [vocab.exchange_bit(e, add=False) for e in legs]
    known = all(b not in (0, OVERFLOW_BIT) for b in bits)
    flag = policy.needed_beta(opp)
    beta_bit = 0
    if flag is not None:
        code = vocab.code("beta_flags", flag, add=False)
        beta_bit = 1 << code if code is not None and code < MASK_BITS else 0
    gd, gh = policy.group_quotas()
    tiers = [policy.tiers[t] for t in TIERS]
    return _Plan(
        now_ms=now_ms,
        today=tuple(local_day(now, name) for name in vocab.timezones),
        this_hour=now_ms // HOUR_MS,
        kind_bit=KIND_BIT[opp.kind],
        tier_allows=tuple(p.allows_kind(opp.kind) for p in tiers),
        daily=tuple(-1 if p.daily_quota is None else p.daily_quota for p in tiers),
        hourly=tuple(-1 if p.hourly_quota is None else p.hourly_quota for p in tiers),
        delay_ms=tuple(p.delay_s * 1000 for p in tiers),
        beta_needed=flag is not None,
        beta_bit=beta_bit,
        legs_mask=int(np.bitwise_or.reduce(bits)) if bits else 0,
        legs_known=known,
        sym_code=vocab.code("symbols", opp.symbol, add=False),
        group_daily=-1 if gd is None else gd,
        group_hourly=-1 if gh is None else gh,
        region_blocked=tuple(r in policy.region_blocks for r in vocab.regions),
        max_hold_ms=None if policy.max_hold_s is None else int(policy.max_hold_s * 1000),
    )


_SUPER = TIERS.index(Tier.SUPERADMIN)


def _lut(values: Sequence[Any] | np.ndarray, dtype: Any) -> pl.Expr:
    return pl.lit(pl.Series(values, dtype=dtype))


def _by_tier(values: Sequence[Any], dtype: Any) -> pl.Expr:
    """A per-tier value for every row (a literal when every tier has the same)."""
    if len(set(values)) == 1:
        return pl.lit(values[0], dtype)
    return _lut(values, dtype).gather(pl.col("_tier"))


def _tier_in(flags: Sequence[bool]) -> pl.Expr:
    if all(flags) or not any(flags):
        return pl.lit(all(flags))
    codes = pl.Series([i for i, f in enumerate(flags) if f], dtype=pl.UInt8)
    return pl.col("_tier").is_in(codes.implode())


def cooled_mask(directory: pl.DataFrame, cooled: Iterable[int] | np.ndarray | pl.Series) -> pl.Series:
    """A boolean row mask of the cooled targets (what :func:`evaluate` takes fastest)."""
    if isinstance(cooled, pl.Series) and cooled.dtype == pl.Boolean:
        return cooled
    ids = _as_series(cooled)
    if not ids.len():
        return pl.Series("_cool", np.zeros(directory.height, dtype=bool))
    return directory.get_column("user_id").is_in(ids.implode()).alias("_cool")


def evaluate(
    directory: pl.DataFrame,
    opp: OpportunityView,
    now: datetime,
    policy: EligibilityPolicy,
    cooled_user_ids: Iterable[int] | np.ndarray | pl.Series = (),
) -> pl.DataFrame:
    """The deciding layer, reason, ``silent`` and ``due_at`` of every directory row (columnar).

    Returns :data:`RESULT_SCHEMA` rows in the directory's order. ``cooled_user_ids``: the
    targets for which ``opp.dedup_key`` is cooling down, as ids or as a boolean mask aligned
    with the directory's rows (:func:`cooled_mask`; ``actors.directory`` builds it from its
    index, which saves an ``is_in`` over every row).
    """
    p = _plan(opp, now, policy)
    vocab = policy.vocab
    u64 = pl.UInt64
    cool = cooled_mask(directory, cooled_user_ids)
    if cool.len() != directory.height:
        raise ValueError("a cooled mask must have one entry per directory row")

    # stage 1: what several checks share (evaluated in parallel)
    has_windows = bool((directory.get_column("window") >= 0).any())
    base = directory.lazy().with_columns(
        pl.col("tier").to_physical().alias("_tier"),
        (pl.col("tz").cast(pl.Int32) * _SLOTS + pl.col("window").cast(pl.Int32) + 1).alias("_slot"),
        pl.when(pl.col("day_bucket") == _lut(p.today, pl.Int32).gather(pl.col("tz")))
        .then(pl.col("day_used"))
        .otherwise(0)
        .alias("_day"),
        pl.when(pl.col("hour_bucket") == p.this_hour).then(pl.col("hour_used")).otherwise(0).alias("_hour"),
        (pl.col("audience") == "group").alias("_group"),
        pl.lit(cool.alias("_cool")),
    )
    # stage 2: the per-(zone, window) tables at ``now`` (few distinct zones), gathered
    inside = _lut(_inside_table(vocab, now), pl.Boolean).gather(pl.col("_slot"))
    stage2 = [inside.alias("_inside")]
    if has_windows:
        stage2.append(_lut(_opening_table(vocab, now), pl.Int64).gather(pl.col("_slot")).alias("_opening"))
    base = base.with_columns(stage2)

    held = ~pl.col("_inside") & ~pl.col("outside_silent")
    silent = ~pl.col("_inside") & pl.col("outside_silent")
    is_group = pl.col("_group")
    day_used, hour_used = pl.col("_day"), pl.col("_hour")
    daily = _by_tier(p.daily, pl.Int32)
    hourly = _by_tier(p.hourly, pl.Int32)

    def legs_in(mask_col: str) -> pl.Expr:
        if not p.legs_known:
            return pl.lit(False)
        return (pl.col(mask_col) & pl.lit(p.legs_mask, u64)) == pl.lit(p.legs_mask, u64)

    if p.sym_code is None:
        symbol_blocked = pl.lit(False)
    elif p.sym_code < MASK_BITS:
        symbol_blocked = (pl.col("blocked_symbols_mask") & pl.lit(1 << p.sym_code, u64)) != 0
    else:
        symbol_blocked = pl.col("blocked_symbols_extra").list.contains(pl.lit(p.sym_code, pl.UInt32))
    leg_blocked = pl.lit(False)
    if p.legs_mask:
        leg_blocked = (pl.col("blocked_exchanges") & pl.lit(p.legs_mask, u64)) != 0
    too_small = (
        pl.col("min_size_usd") > opp.executable_usd if math.isfinite(opp.executable_usd) else pl.lit(False)
    )

    if p.sym_code is None:
        symbol_ok = pl.lit(False)
    elif p.sym_code < MASK_BITS:
        symbol_ok = (pl.col("symbols_mask") & pl.lit(1 << p.sym_code, u64)) != 0
    else:
        symbol_ok = pl.col("symbols_extra").list.contains(pl.lit(p.sym_code, pl.UInt32))

    if p.beta_needed:
        beta_fail = pl.col("_tier") != _SUPER
        if p.beta_bit:
            beta_fail = beta_fail & ((pl.col("beta") & pl.lit(p.beta_bit, u64)) == 0)
    else:
        beta_fail = pl.lit(False)

    hours_fail: pl.Expr = pl.lit(False)
    if has_windows and p.max_hold_ms is not None:
        hours_fail = held & (pl.col("_opening") - p.now_ms > p.max_hold_ms)

    blocked_regions = [i for i, b in enumerate(p.region_blocked) if b]
    region_fail = (
        pl.col("region").is_in(pl.Series(blocked_regions, dtype=pl.UInt16).implode())
        if blocked_regions
        else pl.lit(False)
    )

    checks: list[tuple[Reason, pl.Expr]] = [
        (Reason.SESSION_NONE, pl.col("session_expires_ms").is_null()),
        (Reason.SESSION_EXPIRED, pl.col("session_expires_ms") <= p.now_ms),
        (Reason.SUBSCRIPTION_KIND, ~_tier_in(p.tier_allows)),
        (Reason.SUBSCRIPTION_BETA, beta_fail),
        (Reason.PREFERENCES_OFF, ~pl.col("pushes_on")),
        (Reason.PREFERENCES_KIND, (pl.col("kinds") & pl.lit(p.kind_bit, pl.UInt8)) == 0),
        (Reason.PREFERENCES_EXCHANGE, (pl.col("exchanges") != 0) & ~legs_in("exchanges")),
        (Reason.PREFERENCES_SYMBOL, (pl.col("symbols_n") > 0) & ~symbol_ok),
        (Reason.PREFERENCES_BLOCKED, leg_blocked | symbol_blocked),
        (Reason.PREFERENCES_MIN_PROFIT, pl.col(THRESHOLD_COLUMN[opp.kind]) > opp.threshold_value),
        (Reason.PREFERENCES_MIN_SIZE, too_small),
        (Reason.PREFERENCES_MUTED, pl.col("muted_until_ms") > p.now_ms),
        (Reason.PREFERENCES_HOURS, hours_fail),
        (Reason.RATE_DAILY, ~is_group & (daily >= 0) & (day_used >= daily)),
        (Reason.RATE_HOURLY, ~is_group & (hourly >= 0) & (hour_used >= hourly)),
        (Reason.RATE_COOLDOWN, pl.col("_cool")),
        (Reason.TECHNICAL_API_KEYS, pl.col("only_my_exchanges") & ~legs_in("key_exchanges")),
        (Reason.TECHNICAL_AI_KEY, ~pl.col("has_ai_key") if opp.ai_enhanced else pl.lit(False)),
        (Reason.CONTEXT_RESTRICTED, pl.col("restricted")),
        (Reason.CONTEXT_REGION, region_fail),
        (
            Reason.CONTEXT_GROUP_LIMIT,
            is_group
            & (
                ((p.group_daily >= 0) & (day_used >= p.group_daily))
                | ((p.group_hourly >= 0) & (hour_used >= p.group_hourly))
            ),
        ),
        (Reason.CONTEXT_BLOCKED, pl.col("blocked")),
    ]
    chain: Any = pl
    for reason, cond in checks:
        if _is_false(cond):
            continue
        chain = chain.when(cond).then(pl.lit(reason.code, pl.UInt8))
    code = chain.otherwise(pl.lit(0, pl.UInt8))

    due = p.now_ms + _by_tier(p.delay_ms, pl.Int64)
    if has_windows:
        due = pl.when(held).then(pl.max_horizontal(due, pl.col("_opening"))).otherwise(due)

    return (
        base.select(
            "user_id",
            "chat_id",
            "audience",
            "tier",
            code.alias("_code"),
            silent.alias("silent"),
            due.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").alias("due_at"),
            "tz",
            "lang",
        )
        .select(
            "user_id",
            "chat_id",
            "audience",
            "tier",
            _lut([r.layer.value for r in REASONS], pl.Int8).gather(pl.col("_code")).alias("layer"),
            _lut([r.value for r in REASONS], REASON_DTYPE).gather(pl.col("_code")).alias("reason"),
            "silent",
            "due_at",
            "tz",
            "lang",
        )
        .collect(engine="in-memory")
    )


def _finite_or_nan(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _is_false(expr: pl.Expr) -> bool:
    return expr.meta.eq(pl.lit(False))


def _as_series(ids: Iterable[int] | np.ndarray | pl.Series) -> pl.Series:
    if isinstance(ids, pl.Series):
        return ids.cast(pl.Int64)
    if isinstance(ids, np.ndarray):
        return pl.Series(ids.astype(np.int64, copy=False))
    return pl.Series(list(ids), dtype=pl.Int64)


def evaluate_loop(
    users: Sequence[Mapping[str, Any]],
    opp: OpportunityView,
    now: datetime,
    policy: EligibilityPolicy,
    cooled_user_ids: Iterable[int] | np.ndarray | pl.Series = (),
) -> pl.DataFrame:
    """The same rules, one row at a time in plain Python (the baseline and the cross-check).

    ``users`` are directory rows as dicts (``directory.to_dicts()``).
    """
    p = _plan(opp, now, policy)
    vocab = policy.vocab
    if isinstance(cooled_user_ids, pl.Series) and cooled_user_ids.dtype == pl.Boolean:
        flags = cooled_user_ids.to_list()
        cooled = {r["user_id"] for r, flag in zip(users, flags, strict=True) if flag}
    else:
        cooled = set(_as_series(cooled_user_ids).to_list())
    tier_code = {t.value: i for i, t in enumerate(TIERS)}
    out_layer: list[int] = []
    out_reason: list[str] = []
    out_silent: list[bool] = []
    out_due: list[datetime] = []
    for row in users:
        t = tier_code[row["tier"]]
        group = row["audience"] == "group"
        tz = zone(vocab.timezones[row["tz"]])
        window = row["window"]
        start, end = (-1, -1) if window < 0 else divmod(window, 24)
        inside = _inside(now.astimezone(tz).hour, start, end)
        silent = not inside and row["outside_silent"]
        held = not inside and not row["outside_silent"]
        opening_ms = to_ms(next_opening(tz, start, end, now)) if held else None
        due_ms = p.now_ms + p.delay_ms[t]
        if opening_ms is not None:
            due_ms = max(due_ms, opening_ms)
        day_used = row["day_used"] if row["day_bucket"] == p.today[row["tz"]] else 0
        hour_used = row["hour_used"] if row["hour_bucket"] == p.this_hour else 0
        reason = _loop_reason(row, p, opp, t, group, held, opening_ms, day_used, hour_used, cooled)
        out_layer.append(reason.layer.value)
        out_reason.append(reason.value)
        out_silent.append(bool(silent))
        out_due.append(datetime.fromtimestamp(due_ms / 1000, UTC))
    return pl.DataFrame(
        {
            "user_id": [r["user_id"] for r in users],
            "chat_id": [r["chat_id"] for r in users],
            "audience": [r["audience"] for r in users],
            "tier": [r["tier"] for r in users],
            "layer": out_layer,
            "reason": out_reason,
            "silent": out_silent,
            "due_at": out_due,
            "tz": [r["tz"] for r in users],
            "lang": [r.get("lang") or 0 for r in users],
        },
        schema=RESULT_SCHEMA,
    )


def _loop_reason(
    row: Mapping[str, Any],
    p: _Plan,
    opp: OpportunityView,
    t: int,
    group: bool,
    held: bool,
    opening_ms: int | None,
    day_used: int,
    hour_used: int,
    cooled: set[int],
) -> Reason:
    expires = row["session_expires_ms"]
    if expires is None:
        return Reason.SESSION_NONE
    if expires <= p.now_ms:
        return Reason.SESSION_EXPIRED
    if not p.tier_allows[t]:
        return Reason.SUBSCRIPTION_KIND
    if p.beta_needed and t != _SUPER and not (row["beta"] & p.beta_bit):
        return Reason.SUBSCRIPTION_BETA
    if not row["pushes_on"]:
        return Reason.PREFERENCES_OFF
    if not row["kinds"] & p.kind_bit:
        return Reason.PREFERENCES_KIND
    if row["exchanges"] and not (p.legs_known and row["exchanges"] & p.legs_mask == p.legs_mask):
        return Reason.PREFERENCES_EXCHANGE
    if row["symbols_n"] > 0:
        code = p.sym_code
        if code is None:
            return Reason.PREFERENCES_SYMBOL
        if code < MASK_BITS:
            if not row["symbols_mask"] & (1 << code):
                return Reason.PREFERENCES_SYMBOL
        elif code not in row["symbols_extra"]:
            return Reason.PREFERENCES_SYMBOL
    if p.legs_mask and row["blocked_exchanges"] & p.legs_mask:
        return Reason.PREFERENCES_BLOCKED
    code = p.sym_code
    if code is not None and (
        (code < MASK_BITS and row["blocked_symbols_mask"] & (1 << code))
        or (code >= MASK_BITS and code in row["blocked_symbols_extra"])
    ):
        return Reason.PREFERENCES_BLOCKED
    if row[THRESHOLD_COLUMN[opp.kind]] > opp.threshold_value:
        return Reason.PREFERENCES_MIN_PROFIT
    if math.isfinite(opp.executable_usd) and row["min_size_usd"] > opp.executable_usd:
        return Reason.PREFERENCES_MIN_SIZE
    muted = row["muted_until_ms"]
    if muted is not None and muted > p.now_ms:
        return Reason.PREFERENCES_MUTED
    if (
        held
        and p.max_hold_ms is not None
        and opening_ms is not None
        and opening_ms - p.now_ms > p.max_hold_ms
    ):
        return Reason.PREFERENCES_HOURS
    if not group:
        daily, hourly = p.daily[t], p.hourly[t]
        if daily >= 0 and day_used >= daily:
            return Reason.RATE_DAILY
        if hourly >= 0 and hour_used >= hourly:
            return Reason.RATE_HOURLY
    if row["user_id"] in cooled:
        return Reason.RATE_COOLDOWN
    if row["only_my_exchanges"] and not (p.legs_known and row["key_exchanges"] & p.legs_mask == p.legs_mask):
        return Reason.TECHNICAL_API_KEYS
    if opp.ai_enhanced and not row["has_ai_key"]:
        return Reason.TECHNICAL_AI_KEY
    if row["restricted"]:
        return Reason.CONTEXT_RESTRICTED
    if p.region_blocked[row["region"]]:
        return Reason.CONTEXT_REGION
    if group and (
        (p.group_daily >= 0 and day_used >= p.group_daily)
        or (p.group_hourly >= 0 and hour_used >= p.group_hourly)
    ):
        return Reason.CONTEXT_GROUP_LIMIT
    if row["blocked"]:
        return Reason.CONTEXT_BLOCKED
    return Reason.ELIGIBLE


def explain(
    directory: pl.DataFrame,
    user_id: int,
    opp: OpportunityView,
    now: datetime,
    policy: EligibilityPolicy,
    cooled: Iterable[int] | np.ndarray | pl.Series = (),
) -> tuple[Layer, str]:
    """``/admin why``: the deciding layer and reason for one target (``KeyError`` if unknown)."""
    rows = directory.filter(pl.col("user_id") == user_id)
    if rows.height == 0:
        raise KeyError(user_id)
    res = evaluate(rows.head(1), opp, now, policy, cooled)
    return Layer(int(res["layer"][0])), str(res["reason"][0])


__all__ = [
    "DIRECTORY_SCHEMA",
    "REASONS",
    "RESULT_SCHEMA",
    "THRESHOLD_COLUMN",
    "EligibilityPolicy",
    "Layer",
    "OpportunityView",
    "Reason",
    "Vocabulary",
    "cooled_mask",
    "day_bucket",
    "directory_frame",
    "empty_directory",
    "evaluate",
    "evaluate_loop",
    "explain",
    "funding_net_apr",
    "group_row",
    "hour_bucket",
    "language_of",
    "next_opening",
    "to_ms",
    "user_row",
]
