"""One opportunity as the filter sees it (kind, legs, edge in its unit, flags) and the policy
the filter applies (tiers, thresholds, region blocks)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.accounts import (
    THRESHOLD_FIELDS,
    Tier,
    TierPolicy,
    tier_policies,
)
from core.eligibility.schema import _finite_or_nan
from core.funding import DEFAULT_HORIZON_HOURS, HOURS_PER_YEAR
from core.models import OpportunityKind, Priority

if TYPE_CHECKING:
    from core.settings import Settings
from core.eligibility.vocabulary import Vocabulary


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
