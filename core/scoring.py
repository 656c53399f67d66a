"""Confidence in [0, 1] and a priority for an evaluated opportunity.

Each input becomes a component in [0, 1]; the confidence is their weighted geometric
mean (``Π cᵢ^(wᵢ/Σw)``) over the components that are known, so one component at 0
(no edge, no depth) gives 0, and unknown inputs (persistence, volatility) neither
help nor hurt. Every component is monotone in its input, hence so is the confidence:
more net edge, more depth coverage, more freshness slack, more persistence → higher;
more volatility → lower.

=============  ==================================================================
component      value
=============  ==================================================================
edge           ``clamp((net_bps - min_net_bps) / (full_edge_bps - min_net_bps))``
depth          ``clamp(executable_usd / notional_usd)``
freshness      ``1 - 0.5 · clamp(age_s / freshness_s)`` (a stale quote never gets here)
persistence    the historical probability (0..1) that a similar spread lived long enough
volatility     ``clamp(1 - volatility_bps / max_volatility_bps)``
=============  ==================================================================

Priority: ``high`` at ``confidence ≥ high_threshold`` (0.85), ``medium`` at
``≥ push_threshold`` (0.7: what goes to distribution), else ``low``.
The same formula is vectorised in ``pipeline.detect.confidence_expr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.models import Priority

Num = float | int | Decimal


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    min_net_bps: float = 0.0
    full_edge_bps: float = 20.0
    """Net edge (bps) at which the edge component saturates at 1."""
    max_volatility_bps: float = 100.0
    push_threshold: float = 0.7
    high_threshold: float = 0.85
    w_edge: float = 0.35
    w_depth: float = 0.25
    w_freshness: float = 0.15
    w_persistence: float = 0.15
    w_volatility: float = 0.10

    def __post_init__(self) -> None:
        if self.full_edge_bps <= self.min_net_bps:
            raise ValueError("full_edge_bps must exceed min_net_bps")
        if not 0.0 <= self.push_threshold <= self.high_threshold <= 1.0:
            raise ValueError("need 0 <= push_threshold <= high_threshold <= 1")


SPOT_SCORING = ScoringConfig()
FUNDING_SCORING = ScoringConfig(full_edge_bps=50.0)
"""Funding ``net_bps`` is the net return over the holding horizon (7 days by default)."""


@dataclass(frozen=True, slots=True)
class ScoreInputs:
    net_bps: Num
    notional_usd: Num
    executable_usd: Num
    age_s: Num = 0.0
    """Age of the older leg."""
    freshness_s: Num = 2.0
    persistence: Num | None = None
    volatility_bps: Num | None = None


@dataclass(frozen=True, slots=True)
class Score:
    confidence: float
    priority: Priority
    meets_threshold: bool
    components: dict[str, float]


def clamp01(x: float) -> float:
    return 0.0 if x <= 0.0 else 1.0 if x >= 1.0 else x


def components(inputs: ScoreInputs, config: ScoringConfig = SPOT_SCORING) -> dict[str, float]:
    """The known components, each in [0, 1]."""
    span = config.full_edge_bps - config.min_net_bps
    out = {
        "edge": clamp01((float(inputs.net_bps) - config.min_net_bps) / span),
        "depth": clamp01(float(inputs.executable_usd) / float(inputs.notional_usd))
        if float(inputs.notional_usd) > 0
        else 0.0,
        "freshness": 1.0 - 0.5 * clamp01(float(inputs.age_s) / float(inputs.freshness_s))
        if float(inputs.freshness_s) > 0
        else 0.5,
    }
    if inputs.persistence is not None:
        out["persistence"] = clamp01(float(inputs.persistence))
    if inputs.volatility_bps is not None:
        out["volatility"] = clamp01(1.0 - float(inputs.volatility_bps) / config.max_volatility_bps)
    return out


def priority_of(confidence: float, config: ScoringConfig = SPOT_SCORING) -> Priority:
    if confidence >= config.high_threshold:
        return Priority.HIGH
    if confidence >= config.push_threshold:
        return Priority.MEDIUM
    return Priority.LOW


def score(inputs: ScoreInputs, config: ScoringConfig = SPOT_SCORING) -> Score:
    comps = components(inputs, config)
    weights = {
        "edge": config.w_edge,
        "depth": config.w_depth,
        "freshness": config.w_freshness,
        "persistence": config.w_persistence,
        "volatility": config.w_volatility,
    }
    total = sum(weights[name] for name in comps)
    confidence = 1.0
    for name, value in comps.items():
        confidence *= value ** (weights[name] / total)
    confidence = clamp01(confidence)
    return Score(
        confidence=confidence,
        priority=priority_of(confidence, config),
        meets_threshold=confidence >= config.push_threshold,
        components=comps,
    )
