"""Experiments on notification strategies: their definition and who gets which variant.

An :class:`Experiment` names two or more :class:`Variant`\\ s of how pushes reach a user
(the :class:`Strategy`: ranking on or off, the digest window, the message layout, a
send-time shift). Users are assigned deterministically: a hash of the experiment's name and
the user's id picks a point in ``[0, 1)``; the first ``traffic`` of that range takes part,
split between the variants by weight. The same user gets the same variant in every
process, on every restart, with nothing stored.

Several experiments may run at once; a user takes part in at most one of them (the first,
in the order given, whose traffic includes them), so a delivery row names one experiment
and one variant and the variants' strategies never mix. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

Layout = Literal["full", "compact"]

_SCALE = float(1 << 64)


@dataclass(frozen=True, slots=True)
class Strategy:
    """How pushes reach one user. The defaults are what every user not in an experiment
    gets; a variant overrides some of them."""

    ranking: bool = True
    """Order a user's due items (and a digest's lines) by predicted engagement times edge; off:
    by priority, then newest."""
    digest_window_s: float | None = None
    """Items due within this many seconds go out in one digest (``None``: the distribution
    setting ``digest_window_s``)."""
    layout: Layout = "full"
    """The push's text: ``full`` (every figure) or ``compact`` (one line per item)."""
    send_shift_s: float = 0.0
    """Pushes to this user are held this much longer before they are due."""


class Variant(BaseModel):
    """One arm of an experiment: its name, its share of the traffic and what it changes."""

    name: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    weight: float = Field(default=1.0, gt=0)
    ranking: bool | None = None
    digest_window_s: float | None = Field(default=None, ge=0, le=3600)
    layout: Layout | None = None
    send_shift_s: float | None = Field(default=None, ge=0, le=3600)

    def strategy(self, base: Strategy = Strategy()) -> Strategy:
        """``base`` with this variant's overrides."""
        changes: dict[str, Any] = {
            name: value
            for name in ("ranking", "digest_window_s", "layout", "send_shift_s")
            if (value := getattr(self, name)) is not None
        }
        if not changes:
            return base
        fields = {name: getattr(base, name) for name in Strategy.__dataclass_fields__}
        return Strategy(**(fields | changes))


class Experiment(BaseModel):
    """A named split of users between variants (``ARBFLOW_EXPERIMENTS``, a JSON list)."""

    name: str = Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9_.-]+$")
    variants: list[Variant] = Field(min_length=2)
    traffic: float = Field(default=1.0, gt=0, le=1)
    """The share of users taking part (the rest get the default strategy, no variant)."""
    enabled: bool = True
    description: str = ""

    @field_validator("variants")
    @classmethod
    def _distinct(cls, variants: list[Variant]) -> list[Variant]:
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must differ: {names}")
        return variants

    def point(self, user_id: int) -> float:
        """The user's place in ``[0, 1)`` for this experiment (blake2b of name and id)."""
        digest = hashlib.blake2b(f"{self.name}\x00{user_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / _SCALE

    def variant_for(self, user_id: int) -> Variant | None:
        """The user's variant, or ``None`` when they fall outside the traffic share."""
        if not self.enabled:
            return None
        point = self.point(user_id)
        if point >= self.traffic:
            return None
        scaled = point / self.traffic * sum(v.weight for v in self.variants)
        for variant in self.variants:
            if scaled < variant.weight:
                return variant
            scaled -= variant.weight
        return self.variants[-1]  # rounding at the top of the range


@dataclass(frozen=True, slots=True)
class Assignment:
    """What one user gets: the experiment and variant (both ``None`` outside any) and the
    resulting strategy."""

    experiment: str | None
    variant: str | None
    strategy: Strategy


NO_ASSIGNMENT = Assignment(None, None, Strategy())


def named(experiments: Sequence[Experiment], name: str) -> Experiment | None:
    return next((e for e in experiments if e.name == name), None)


def assign(user_id: int | None, experiments: Sequence[Experiment]) -> Assignment:
    """The user's assignment (groups and channels, ``user_id=None``, take part in none)."""
    if user_id is None:
        return NO_ASSIGNMENT
    for experiment in experiments:
        variant = experiment.variant_for(user_id)
        if variant is not None:
            return Assignment(experiment.name, variant.name, variant.strategy())
    return NO_ASSIGNMENT
