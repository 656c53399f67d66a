"""Accounts: tiers and what they allow, users, their preferences and stored API keys.

Pure pydantic models and helpers (no I/O; ``now`` is always passed in). The bot
edits these, ``state.users.RedisUserStore`` keeps them in Redis, and the
distribution engine (issue 5) reads them into a columnar user directory.

Decisions:

- **Tier order** is ``free < basic < premium < enterprise < superadmin``; ``Tier``
  compares by that rank, not alphabetically (``Tier.BASIC >= Tier.FREE``).
- **Commands**: every tier has the session and preference commands. ``/apikeys``
  needs Basic or above: API keys only unlock the "only exchanges I trade on"
  filter, which matters once a user sees more than spot spreads, and storing
  encrypted exchange credentials for anonymous free accounts is liability with no
  benefit. ``/admin`` is SuperAdmin only.
- **Quotas**: ``None`` means unlimited (SuperAdmin). Quotas are counted in UTC
  days and hours (see ``state.quotas.RedisQuotaStore``).
- **Delay**: seconds a push waits after detection for the tier (Free 300, Basic 60).
- ``DEFAULT_TIERS`` is the built-in table; :func:`tier_policies` merges overrides
  (e.g. from settings) field by field.
- **Active hours** are whole local hours ``[start, end)`` in the user's IANA time
  zone, wrapping midnight when ``start > end`` (``22 -> 6`` is 22:00-05:59);
  ``end = 0`` means "until midnight". They follow the local wall clock across DST.
  ``None`` means always.
- **API keys**: only the masked key and a Fernet ciphertext of the credentials are
  stored (``bot.crypto``); the plaintext never reaches a model.
- **Thresholds per kind** (the kinds are not one unit, see ``docs/opportunities.md``):
  ``min_net_bps`` is the spot threshold (net edge in bps, an instant edge; the one
  field of earlier releases keeps its name and meaning), ``min_net_apr_pct`` the
  funding one (net APR in percent), ``min_confidence`` the technical one (a signal
  has no edge; 0..1, 0 = none). A record without the newer fields reads with them 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from core.models import OpportunityKind


class Tier(StrEnum):
    FREE = "free"
    BASIC = "basic"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"
    SUPERADMIN = "superadmin"

    @property
    def rank(self) -> int:
        return _TIER_RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Tier):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Tier):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Tier):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Tier):
            return NotImplemented
        return self.rank >= other.rank


_TIER_RANK: dict[Tier, int] = {t: i for i, t in enumerate(Tier)}


class Command(StrEnum):
    """Bot commands whose availability depends on the tier."""

    START = "start"
    HELP = "help"
    OPPORTUNITIES = "opportunities"
    SETTINGS = "settings"
    MUTE = "mute"
    STATUS = "status"
    SUBSCRIPTION = "subscription"
    APIKEYS = "apikeys"
    WEBHOOKS = "webhooks"
    STOP = "stop"
    FORGET = "forget"
    ADMIN = "admin"


BASE_COMMANDS: frozenset[Command] = frozenset(
    {
        Command.START,
        Command.HELP,
        Command.OPPORTUNITIES,
        Command.SETTINGS,
        Command.MUTE,
        Command.STATUS,
        Command.SUBSCRIPTION,
        Command.STOP,
        Command.FORGET,
    }
)
ALL_KINDS: frozenset[OpportunityKind] = frozenset(OpportunityKind)
DEFAULT_COOLDOWN_S = 4 * 3600
"""Default cooldown per (user, dedup key) between two pushes of the same thing (issue 5)."""


class TierPolicy(BaseModel):
    """What one tier may do. ``None`` quotas are unlimited."""

    model_config = ConfigDict(frozen=True)

    tier: Tier
    kinds: frozenset[OpportunityKind]
    daily_quota: int | None = Field(ge=0)
    hourly_quota: int | None = Field(ge=0)
    delay_s: int = Field(default=0, ge=0)
    cooldown_s: int = Field(default=DEFAULT_COOLDOWN_S, ge=0)
    commands: frozenset[Command] = BASE_COMMANDS

    @property
    def unlimited(self) -> bool:
        return self.daily_quota is None and self.hourly_quota is None

    def allows_kind(self, kind: OpportunityKind | str) -> bool:
        return OpportunityKind(kind) in self.kinds

    def allows_command(self, command: Command | str) -> bool:
        try:
            return Command(command.lstrip("/")) in self.commands
        except ValueError:
            return False


DEFAULT_TIERS: Mapping[Tier, TierPolicy] = {
    Tier.FREE: TierPolicy(
        tier=Tier.FREE,
        kinds=frozenset({OpportunityKind.SPOT_SPREAD}),
        daily_quota=5,
        hourly_quota=2,
        delay_s=300,
    ),
    Tier.BASIC: TierPolicy(
        tier=Tier.BASIC,
        kinds=frozenset({OpportunityKind.SPOT_SPREAD, OpportunityKind.FUNDING_RATE}),
        daily_quota=20,
        hourly_quota=5,
        delay_s=60,
        commands=BASE_COMMANDS | {Command.APIKEYS},
    ),
    Tier.PREMIUM: TierPolicy(
        tier=Tier.PREMIUM,
        kinds=ALL_KINDS,
        daily_quota=100,
        hourly_quota=20,
        commands=BASE_COMMANDS | {Command.APIKEYS, Command.WEBHOOKS},
    ),
    Tier.ENTERPRISE: TierPolicy(
        tier=Tier.ENTERPRISE,
        kinds=ALL_KINDS,
        daily_quota=500,
        hourly_quota=60,
        commands=BASE_COMMANDS | {Command.APIKEYS, Command.WEBHOOKS},
    ),
    Tier.SUPERADMIN: TierPolicy(
        tier=Tier.SUPERADMIN,
        kinds=ALL_KINDS,
        daily_quota=None,
        hourly_quota=None,
        commands=frozenset(Command),
    ),
}


def tier_policies(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[Tier, TierPolicy]:
    """``DEFAULT_TIERS`` with per-tier field overrides, e.g. ``{"free": {"daily_quota": 10}}``."""
    table = dict(DEFAULT_TIERS)
    for name, fields in (overrides or {}).items():
        tier = Tier(name)
        table[tier] = TierPolicy.model_validate({**table[tier].model_dump(), **fields, "tier": tier})
    return table


def effective_tier(user_id: int, stored: Tier, superadmin_ids: frozenset[int] | set[int] | list[int]) -> Tier:
    """SuperAdmins come from ``ARBFLOW_SUPERADMIN_IDS`` only, whatever tier is stored: a
    stored SuperAdmin tier of someone not (or no longer) in the list counts as Free."""
    if user_id in superadmin_ids:
        return Tier.SUPERADMIN
    return Tier.FREE if stored is Tier.SUPERADMIN else stored


# -- preferences ---------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin')") from exc


_EPOCH = date(1970, 1, 1)


def local_day(now: datetime, tz: str = "UTC") -> int:
    """Days since the epoch of ``now``'s date on the wall clock of ``tz``: a daily quota's
    window, so it resets at the user's local midnight (an unknown zone counts as UTC)."""
    try:
        zone = _zone(tz)
    except ValueError:
        zone = ZoneInfo("UTC")
    return (now.astimezone(zone).date() - _EPOCH).days


def next_local_midnight(now: datetime, tz: str = "UTC") -> datetime:
    """The instant the day of ``now`` ends on the wall clock of ``tz`` (UTC-aware)."""
    try:
        zone = _zone(tz)
    except ValueError:
        zone = ZoneInfo("UTC")
    today = now.astimezone(zone).date()
    return datetime.combine(today + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)


def _aware_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value.astimezone(UTC)


class Preferences(BaseModel):
    """What a user wants pushed, and when. Empty ``exchanges``/``symbols`` mean all."""

    model_config = ConfigDict(validate_assignment=True)

    pushes_on: bool = True
    kinds: set[OpportunityKind] = Field(default_factory=lambda: set(OpportunityKind))
    exchanges: set[str] = Field(default_factory=set)
    symbols: set[str] = Field(default_factory=set)
    blocked_exchanges: set[str] = Field(default_factory=set)
    """Never alert about an opportunity with a leg on one of these (a blacklist)."""
    blocked_symbols: set[str] = Field(default_factory=set)
    """Never alert about these symbols."""
    min_size_usd: Decimal = Decimal(0)
    """Only opportunities whose executable size (USD) is at least this (0: any size);
    a technical signal has no size and is not filtered by it."""
    min_net_bps: Decimal = Decimal(0)
    """Spot: the minimum net edge in bps (instant, after fees)."""
    min_net_apr_pct: Decimal = Decimal(0)
    """Funding: the minimum net APR in percent (``10`` = 10 % a year)."""
    min_confidence: Decimal = Decimal(0)
    """Technical: the minimum confidence, 0..1 (0 = every signal)."""
    only_my_exchanges: bool = False
    timezone: str = "UTC"
    active_hours: tuple[int, int] | None = None
    outside_hours: Literal["hold", "silent"] = "hold"
    muted_until: datetime | None = None
    language: str | None = None
    """The language the user chose (``/settings language``); None: their Telegram app's.
    Stored as ``pref.lang``: releases before the setting stored ``pref.language = "en"`` for
    everyone, which was never a choice and is ignored (``state.users``)."""
    digest_hour: int | None = 9
    """The local hour (0-23, in ``timezone``) of the daily "missed while delayed" digest
    (``core.missed``); ``None``: no digest. Records without it read as 9."""

    @field_validator("min_confidence")
    @classmethod
    def _unit_interval(cls, value: Decimal) -> Decimal:
        if not Decimal(0) <= value <= Decimal(1):
            raise ValueError("min_confidence is between 0 and 1")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        _zone(value)
        return value

    @field_validator("active_hours")
    @classmethod
    def _valid_hours(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is None:
            return None
        start, end = value
        if not (0 <= start <= 23 and 0 <= end <= 23):
            raise ValueError("active hours are whole hours 0-23")
        if start == end:
            raise ValueError("active hours need start != end (use None for always)")
        return value

    @field_validator("muted_until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _aware_utc(value)

    @field_validator("digest_hour")
    @classmethod
    def _digest_hour(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 23:
            raise ValueError("the digest hour is a whole hour 0-23 (or None: off)")
        return value

    @field_validator("exchanges", "blocked_exchanges")
    @classmethod
    def _lower(cls, value: set[str]) -> set[str]:
        return {v.strip().lower() for v in value if v.strip()}

    @field_validator("min_size_usd")
    @classmethod
    def _not_negative(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError("min_size_usd is 0 or more")
        return value

    @field_serializer("kinds", "exchanges", "symbols", "blocked_exchanges", "blocked_symbols")
    def _sorted(self, value: set[str]) -> list[str]:
        return sorted(value)

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def threshold(self, kind: OpportunityKind) -> Decimal:
        """The minimum for ``kind`` in that kind's unit (:data:`THRESHOLD_UNITS`)."""
        return getattr(self, THRESHOLD_FIELDS[kind])


THRESHOLD_FIELDS: dict[OpportunityKind, str] = {
    OpportunityKind.SPOT_SPREAD: "min_net_bps",
    OpportunityKind.FUNDING_RATE: "min_net_apr_pct",
    OpportunityKind.TECHNICAL: "min_confidence",
}
"""The :class:`Preferences` field holding each kind's minimum."""
THRESHOLD_UNITS: dict[OpportunityKind, str] = {
    OpportunityKind.SPOT_SPREAD: "net bps",
    OpportunityKind.FUNDING_RATE: "net APR %",
    OpportunityKind.TECHNICAL: "confidence",
}


def is_active_hour(prefs: Preferences, now: datetime) -> bool:
    """Is ``now`` inside the user's active hours (local wall clock of their zone)?"""
    if prefs.active_hours is None:
        return True
    hour = now.astimezone(prefs.zone).hour
    start, end = prefs.active_hours
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


def next_active_start(prefs: Preferences, now: datetime) -> datetime:
    """When held pushes may go: ``now`` if inside the window, else the next window opening (UTC)."""
    if is_active_hour(prefs, now):
        return now
    assert prefs.active_hours is not None
    zone = prefs.zone
    local_date = now.astimezone(zone).date()
    for offset in range(3):
        day = local_date + timedelta(days=offset)
        opening = datetime(day.year, day.month, day.day, prefs.active_hours[0], tzinfo=zone).astimezone(UTC)
        if opening > now and is_active_hour(prefs, opening):
            return opening
    # A window that falls entirely in a DST gap on three days running cannot happen;
    # be safe anyway and walk hour by hour.
    probe = now.replace(minute=0, second=0, microsecond=0)
    for _ in range(72):
        probe += timedelta(hours=1)
        if is_active_hour(prefs, probe):
            return probe
    return now


def is_muted(prefs: Preferences, now: datetime) -> bool:
    return prefs.muted_until is not None and now < prefs.muted_until


# -- users ---------------------------------------------------------------------


def mask(secret: str) -> str:
    """``abcd…wxyz`` for display; shorter secrets reveal less (``…wxyz``, then ``…``)."""
    secret = secret.strip()
    if len(secret) >= 12:
        return f"{secret[:4]}…{secret[-4:]}"
    if len(secret) >= 8:
        return f"…{secret[-4:]}"
    return "…"


class StoredApiKey(BaseModel):
    """An exchange API key at rest: the exchange and the masked key (what the "only my
    exchanges" filter and ``/apikeys`` use). ``secret_ciphertext``: the Fernet ciphertext of
    the credentials, kept only where a feature uses them — none does today, so ``/apikeys
    add`` stores None; records of earlier releases keep theirs (read as before)."""

    model_config = ConfigDict(frozen=True)

    exchange: str
    key_masked: str
    secret_ciphertext: str | None = None
    added_at: datetime
    read_only: bool = True

    @field_validator("added_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        out = _aware_utc(value)
        assert out is not None
        return out

    def __repr__(self) -> str:  # the ciphertext is not a secret, but keep logs short
        return (
            f"StoredApiKey(exchange={self.exchange!r}, key={self.key_masked!r}, read_only={self.read_only})"
        )

    __str__ = __repr__


class OnboardingStep(StrEnum):
    """The onboarding funnel, in order; ``done`` once the user finished or skipped it."""

    NEW = "new"
    OPTED_IN = "opted_in"
    KINDS = "kinds"
    EXCHANGES = "exchanges"
    MIN_PROFIT = "min_profit"
    TIMEZONE = "timezone"
    HOURS = "hours"
    TIERS = "tiers"
    API_KEYS = "api_keys"
    DONE = "done"


class User(BaseModel):
    """A Telegram user (``id`` is the Telegram user id)."""

    model_config = ConfigDict(validate_assignment=True)

    id: int
    username: str | None = None
    first_name: str | None = None
    tier: Tier = Tier.FREE
    preferences: Preferences = Field(default_factory=Preferences)
    api_keys: dict[str, StoredApiKey] = Field(default_factory=dict)
    created_at: datetime
    last_seen_at: datetime
    onboarding_step: OnboardingStep = OnboardingStep.NEW
    referral: str | None = None
    """The ``/start <payload>`` deep-link payload of the first start (referral, campaign)."""
    beta_flags: set[str] = Field(default_factory=set)
    restricted: bool = False
    region: str | None = None
    """ISO 3166-1 alpha-2 country code when known, for region rules (``core.regions``)."""
    region_by_admin: bool = False
    """The region was set by an admin (``/admin region``): the user cannot change it.
    Records written before this field read as False."""
    tier_expires_at: datetime | None = None
    """The end of a tier paid in Telegram Stars (``core.payments``); None: the tier does
    not expire (Free, or set by an admin). Records written before this field read as None."""
    language_code: str | None = None
    """The Telegram app's language (``language_code``) seen last: the language of pushes
    when the user chose none. Records written before this field read as None (English)."""

    @field_validator("created_at", "last_seen_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        out = _aware_utc(value)
        assert out is not None
        return out

    @field_validator("tier_expires_at")
    @classmethod
    def _utc_or_none(cls, value: datetime | None) -> datetime | None:
        return _aware_utc(value)

    @field_serializer("beta_flags")
    def _sorted(self, value: set[str]) -> list[str]:
        return sorted(value)

    @classmethod
    def new(
        cls,
        user_id: int,
        now: datetime,
        *,
        username: str | None = None,
        first_name: str | None = None,
        referral: str | None = None,
        tier: Tier = Tier.FREE,
        timezone: str = "UTC",
        language: str | None = None,
        language_code: str | None = None,
        region: str | None = None,
    ) -> User:
        return cls(
            id=user_id,
            username=username,
            first_name=first_name,
            tier=tier,
            preferences=Preferences(timezone=timezone, language=language),
            created_at=now,
            last_seen_at=now,
            referral=referral,
            region=region,
            language_code=language_code,
        )

    @property
    def key_exchanges(self) -> set[str]:
        """Exchanges the user holds API keys for (the "only my exchanges" filter)."""
        return set(self.api_keys)
