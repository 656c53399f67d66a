"""What a delayed tier missed: which closed items count, when their digest goes, what upgrade shows them.

A Free or Basic user's push waits the tier's ``delay_s`` (``core.accounts.DEFAULT_TIERS``)
in a queue shard. An item still open at its due time is sent like any push; one whose
opportunity closed *while the tier delay held it* (:func:`was_missed`) becomes a
:class:`MissedItem` and goes into the user's "missed while delayed" digest instead of
vanishing. Pure: no I/O, times are Unix ms or UTC-aware datetimes passed in.

Decisions:

- **Missed** means closed before the item was due *and* within the tier delay counted
  from its queueing: an item held only by the user's own active hours is not "missed
  because of the tier" (an upgrade would hold it too). Items expired as stale, in
  cooldown or no longer pushable are not missed.
- **Cadence** (:func:`cadence_of`): tiers without a delay get no digest; Basic hourly (at
  the top of the hour); every other delayed tier (Free) daily at the user's
  ``Preferences.digest_hour`` on their local clock (``Preferences.timezone``). A user
  turns it off with ``digest_hour = None``. ``ARBFLOW_DISTRIBUTION__DIGEST_PERIOD_S``
  overrides both with a fixed period counted from the first missed item (the demo, tests).
- **Edge**: the net bps the push would have shown (the opportunity's edge when it was
  fanned out, the best the shard knows of it); **lifetime**: from its opening to the close
  the shard was told of.
- **The upgrade line** (:func:`upgrade_offers`): for each tier above the user's whose delay
  is shorter, how many of the missed items outlived that delay (would have been shown),
  up to the first tier that would have shown them all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.accounts import Tier, TierPolicy

Cadence = Literal["hourly", "daily"]

DEFAULT_DIGEST_HOUR = 9
"""The local hour a daily digest goes at unless the user picks another."""


@dataclass(frozen=True, slots=True)
class MissedItem:
    """One opportunity that closed while a delayed tier held its push."""

    opportunity_id: str
    kind: str
    symbol: str
    buy_exchange: str | None
    sell_exchange: str | None
    net_bps: float
    opened_ms: int
    closed_ms: int
    net_apr: float | None = None
    """Funding: the net return a year (fraction), when the event said it."""

    @property
    def lifetime_s(self) -> float:
        return max(0.0, (self.closed_ms - self.opened_ms) / 1000)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if isinstance(self.net_bps, float) and math.isnan(self.net_bps):
            out["net_bps"] = None
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MissedItem:
        net = raw.get("net_bps")
        return cls(
            opportunity_id=str(raw["opportunity_id"]),
            kind=str(raw.get("kind") or "spot_spread"),
            symbol=str(raw.get("symbol") or "?"),
            buy_exchange=raw.get("buy_exchange") or None,
            sell_exchange=raw.get("sell_exchange") or None,
            net_bps=math.nan if net is None else float(net),
            opened_ms=int(raw["opened_ms"]),
            closed_ms=int(raw["closed_ms"]),
            net_apr=None if raw.get("net_apr") is None else float(raw["net_apr"]),
        )


@dataclass(frozen=True, slots=True)
class UpgradeOffer:
    """``tier`` (its ``delay_s``) would have shown ``shown`` of the digest's items."""

    tier: Tier
    delay_s: int
    shown: int


@dataclass(frozen=True, slots=True)
class MissedDigest:
    """One "missed while delayed" message: the items best first, the user's tier and delay,
    and the upgrades that would have shown them."""

    items: tuple[MissedItem, ...]
    tier: Tier
    delay_s: int
    offers: tuple[UpgradeOffer, ...]
    cadence: Cadence
    language: str = "en"
    hour: int = DEFAULT_DIGEST_HOUR
    """The local hour a daily digest goes at (shown in its footer)."""

    @classmethod
    def of(
        cls,
        items: Iterable[MissedItem],
        policy: TierPolicy,
        policies: Mapping[Tier, TierPolicy],
        cadence: Cadence,
        language: str = "en",
        hour: int = DEFAULT_DIGEST_HOUR,
    ) -> MissedDigest:
        unique: dict[str, MissedItem] = {}
        for item in items:  # one line per opportunity: its latest close
            seen = unique.get(item.opportunity_id)
            if seen is None or item.closed_ms >= seen.closed_ms:
                unique[item.opportunity_id] = item
        ranked = sorted(unique.values(), key=_rank)
        return cls(
            tuple(ranked),
            policy.tier,
            policy.delay_s,
            upgrade_offers(ranked, policy, policies),
            cadence,
            language,
            hour,
        )


def _rank(item: MissedItem) -> tuple[float, int]:
    net = -math.inf if math.isnan(item.net_bps) else item.net_bps
    return (-net, -item.closed_ms)


def was_missed(*, delay_s: float, queued_ms: int, due_ms: int, closed_ms: int) -> bool:
    """Did the tier delay hide this item until its opportunity closed? (See the module doc.)"""
    if delay_s <= 0:
        return False
    return closed_ms < due_ms and closed_ms < queued_ms + int(delay_s * 1000)


def cadence_of(policy: TierPolicy) -> Cadence | None:
    """How often a tier's digest goes: none without a delay, Basic hourly, the others daily."""
    if policy.delay_s <= 0:
        return None
    return "hourly" if policy.tier is Tier.BASIC else "daily"


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def next_digest_at(
    now: datetime,
    cadence: Cadence,
    *,
    tz: str = "UTC",
    hour: int = DEFAULT_DIGEST_HOUR,
    period_s: float | None = None,
) -> datetime:
    """When the digest of items missed from ``now`` on goes (UTC-aware): ``now + period_s``
    if an override is set; hourly: the next top of the hour; daily: the next ``hour``:00 on
    the wall clock of ``tz`` (a DST gap moves it to the first instant after)."""
    now = now.astimezone(UTC)
    if period_s is not None and period_s > 0:
        return now + timedelta(seconds=period_s)
    if cadence == "hourly":
        return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    zone = _zone(tz)
    local = now.astimezone(zone)
    for offset in range(3):
        day = local.date() + timedelta(days=offset)
        at = datetime(day.year, day.month, day.day, hour, tzinfo=zone).astimezone(UTC)
        if at > now:
            return at
    return now + timedelta(days=1)  # unreachable: one of three days has the hour


def upgrade_offers(
    items: Iterable[MissedItem], policy: TierPolicy, policies: Mapping[Tier, TierPolicy]
) -> tuple[UpgradeOffer, ...]:
    """The tiers above ``policy``'s (SuperAdmin excluded) with a shorter delay that allow
    the items' kinds, each with how many items outlived its delay; cheapest first, ending at
    the first that shows them all."""
    missed = list(items)
    if not missed:
        return ()
    out: list[UpgradeOffer] = []
    best_shown = 0
    for tier in sorted(policies, key=lambda t: t.rank):
        other = policies[tier]
        if tier <= policy.tier or tier is Tier.SUPERADMIN or other.delay_s >= policy.delay_s:
            continue
        shown = sum(1 for i in missed if i.lifetime_s > other.delay_s and other.allows_kind(i.kind))
        if shown <= best_shown:
            continue
        out.append(UpgradeOffer(tier, other.delay_s, shown))
        best_shown = shown
        if shown == len(missed):
            break
    return tuple(out)


__all__ = [
    "DEFAULT_DIGEST_HOUR",
    "Cadence",
    "MissedDigest",
    "MissedItem",
    "UpgradeOffer",
    "cadence_of",
    "next_digest_at",
    "upgrade_offers",
    "was_missed",
]
