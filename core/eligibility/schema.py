"""The vocabulary of the filter: its layers and reasons, the columns of the user directory and
of a result, the time buckets of the quota counters."""

from __future__ import annotations

import math
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any

import polars as pl

from core.accounts import (
    Tier,
)
from core.models import OpportunityKind

if TYPE_CHECKING:
    pass


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
OUT_OF_SCOPE: frozenset[Reason] = frozenset(
    {
        Reason.PREFERENCES_OFF,
        Reason.PREFERENCES_KIND,
        Reason.PREFERENCES_EXCHANGE,
        Reason.PREFERENCES_SYMBOL,
        Reason.PREFERENCES_BLOCKED,
    }
)
"""Reasons that say the target asked for none of this (pushes off, another kind, exchange or
symbol, a blocked one): like a missing session they are counted per opportunity, not recorded
per target (:meth:`core.eligibility.Decisions.rows_recorded`) — most targets are out of scope
of most opportunities, and a row for each would be the directory's size per opportunity."""
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


def _finite_or_nan(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan
