"""The engagement model's vocabulary and arithmetic, pure (docs/personalization.md).

A user's model says, per *feature* of what they were pushed, how much more (or less) they
open pushes with it than their own average: an *affinity*, the log of the ratio of two
smoothed open rates, ``ln(rate(feature) / rate(user))``, clipped to ``±AFFINITY_CLIP``.
Four groups of features describe an opportunity:

- ``kind:<kind>`` (``kind:funding_rate``),
- ``symbol:<symbol>`` (``symbol:SOL/USDT``),
- ``exchange:<id>`` (each leg; the group's affinity is the mean over the legs),
- ``edge:<kind>:<bucket>``: the size of its edge, ``net_bps`` cut at :data:`EDGE_EDGES_BPS`
  within its kind (a funding return and a spot spread are never one bucket).

The predicted engagement of a user with an opportunity is their base rate times
``exp`` of the sum of the groups' affinities (at most 1); its *score* is that times the
edge (``net_bps``, at least :data:`MIN_EDGE_BPS`). Only a chat's own items are compared
by score, so the scale is of no importance; a user without a model has no score.

The model never decides *whether* a push goes (eligibility does, from the user's explicit
preferences); a score only orders what is already eligible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KIND, SYMBOL, EXCHANGE, EDGE = "kind", "symbol", "exchange", "edge"
GROUPS = (KIND, SYMBOL, EXCHANGE, EDGE)
"""The feature groups, each one term of the sum (the exchanges' term is their mean)."""
EDGE_EDGES_BPS: tuple[float, ...] = (5.0, 10.0, 20.0, 50.0, 100.0)
"""Upper bounds (exclusive) of the edge buckets 0-4, in ``net_bps``; bucket 5 is the rest."""
AFFINITY_CLIP = 3.0
"""An affinity is clipped to ``[-3, 3]``: one feature changes a prediction at most ~20-fold."""
MIN_EDGE_BPS = 1.0
"""The edge a score multiplies by is at least this (a technical signal has no edge)."""
MIN_P = 1e-4
"""The least predicted engagement (a score never reaches zero: ties keep their order)."""
MUTE_WEIGHT = 3.0
"""A muted push counts as this many pushes not opened; a blocked symbol or exchange as this
many pushes of it not opened."""


def edge_bucket(net_bps: float | None) -> int:
    """The edge bucket of ``net_bps`` (0 for none or below the first bound)."""
    if net_bps is None or not math.isfinite(net_bps):
        return 0
    return int(np.searchsorted(EDGE_EDGES_BPS, float(net_bps), side="right"))


def edge_buckets(net_bps: np.ndarray) -> np.ndarray:
    """:func:`edge_bucket` of an array (NaN: 0)."""
    values = np.nan_to_num(np.asarray(net_bps, dtype=np.float64), nan=0.0)
    return np.searchsorted(np.asarray(EDGE_EDGES_BPS), values, side="right").astype(np.int64)


def kind_feature(kind: str) -> str:
    return f"{KIND}:{kind}"


def symbol_feature(symbol: str) -> str:
    return f"{SYMBOL}:{symbol.upper()}"


def exchange_feature(exchange: str) -> str:
    return f"{EXCHANGE}:{exchange.lower()}"


def edge_feature(kind: str, bucket: int) -> str:
    return f"{EDGE}:{kind}:{bucket}"


def group_of(feature: str) -> str:
    return feature.split(":", 1)[0]


def opportunity_features(
    kind: str, symbol: str | None, exchanges: Iterable[str | None], net_bps: float | None
) -> dict[str, list[str]]:
    """The features of one opportunity, by group (the exchanges: one per distinct leg)."""
    legs = list(dict.fromkeys(exchange_feature(e) for e in exchanges if e))
    return {
        KIND: [kind_feature(kind)],
        SYMBOL: [symbol_feature(symbol)] if symbol else [],
        EXCHANGE: legs,
        EDGE: [edge_feature(kind, edge_bucket(net_bps))],
    }


def predicted(base: np.ndarray | float, logit: np.ndarray | float) -> np.ndarray:
    """Predicted engagement: ``base * exp(logit)``, within ``[MIN_P, 1]``."""
    out = np.asarray(base, dtype=np.float64) * np.exp(np.asarray(logit, dtype=np.float64))
    return np.clip(out, MIN_P, 1.0)


def scored(p: np.ndarray | float, net_bps: float) -> np.ndarray:
    """A score: predicted engagement times the edge (at least :data:`MIN_EDGE_BPS`)."""
    edge = max(float(net_bps), MIN_EDGE_BPS) if math.isfinite(float(net_bps)) else MIN_EDGE_BPS
    return np.asarray(p, dtype=np.float64) * edge


@dataclass(frozen=True, slots=True)
class UserModel:
    """One user's model as stored (the record of ``state.personalization``)."""

    base: float
    """The user's smoothed open rate (opens / pushes seen, decayed)."""
    events: int
    """Events it was computed from (pushes seen, opens, mutes; not decayed)."""
    affinities: Mapping[str, float] = field(default_factory=dict)

    def logit(self, features: Mapping[str, list[str]]) -> float:
        total = 0.0
        for names in features.values():
            values = [float(self.affinities.get(n, 0.0)) for n in names]
            if values:
                total += sum(values) / len(values)
        return total

    def predict(self, features: Mapping[str, list[str]]) -> float:
        return float(predicted(self.base, self.logit(features)))

    def top(self, n: int = 3) -> list[tuple[str, float]]:
        """The strongest affinities, either sign, strongest first."""
        return sorted(self.affinities.items(), key=lambda kv: -abs(kv[1]))[:n]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> UserModel:
        """From the stored JSON (``{"b": base, "n": events, "a": [{"f": feature, "v": value}]}``)."""
        pairs = record.get("a") or []
        return cls(
            base=float(record["b"]),
            events=int(record.get("n") or 0),
            affinities={str(p["f"]): float(p["v"]) for p in pairs},
        )


__all__ = [
    "AFFINITY_CLIP",
    "EDGE",
    "EDGE_EDGES_BPS",
    "EXCHANGE",
    "GROUPS",
    "KIND",
    "MIN_EDGE_BPS",
    "MIN_P",
    "MUTE_WEIGHT",
    "SYMBOL",
    "UserModel",
    "edge_bucket",
    "edge_buckets",
    "edge_feature",
    "exchange_feature",
    "group_of",
    "kind_feature",
    "opportunity_features",
    "predicted",
    "scored",
    "symbol_feature",
]
