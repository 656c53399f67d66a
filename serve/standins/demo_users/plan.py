"""Who the demo's simulated users are: a seeded plan per user (tier, time zone, deep link,
how far into the onboarding they go), decided up front."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from core.accounts import Tier

SCREENS = ("kinds", "exch", "minp", "tz", "hours", "tiers", "keys", "done")
# Where a simulated user stops (index into SCREENS): most finish, the rest drop off on the way.
STOP_WEIGHTS = (14, 9, 7, 6, 5, 4, 5, 50)
TIER_WEIGHTS = {Tier.FREE: 50, Tier.BASIC: 25, Tier.PREMIUM: 15, Tier.ENTERPRISE: 10}
TIMEZONE_WEIGHTS = {
    "UTC": 14,
    "Europe/Berlin": 14,
    "America/New_York": 14,
    "Asia/Tokyo": 10,
    "Asia/Kolkata": 10,
    "Europe/London": 10,
    "America/Los_Angeles": 8,
    "Asia/Singapore": 8,
    "Australia/Sydney": 6,
    "Asia/Dubai": 6,
}
PAYLOADS = (("", 60), ("ref_demo", 28), ("campaign_launch", 12))
LANGS = ("en", "de", "ja", "hi", "es", "fr")
PRESS_BASE = 0.25
"""A simulated user's mean chance to press a push's button (each user has their own, around it)."""
PRESS_LIFT = 0.25
"""The planted effect: users in any variant but the control press this much more often (a
compact push is quicker to act on, the demo pretends), so the experiment's report shows a
real difference."""
NAMES = ("Ada", "Bo", "Chen", "Dana", "Emeka", "Femi", "Greta", "Hiro", "Ines", "Jon", "Kavya", "Lars")


def _pick(rng: random.Random, weighted: dict[Any, int] | tuple[tuple[Any, int], ...]) -> Any:
    items = list(weighted.items()) if isinstance(weighted, dict) else list(weighted)
    return rng.choices([k for k, _ in items], weights=[w for _, w in items])[0]


@dataclass
class UserPlan:
    """What one simulated user will do (decided up front from the seed)."""

    id: int
    first_name: str
    username: str
    language: str
    tier: Tier
    timezone: str
    payload: str
    stop_at: str
    """The last onboarding screen this user goes to (``done``: finishes)."""
    skip: bool
    """Leave with "Skip setup" at ``stop_at`` instead of stopping there."""
    tweak: bool
    """Change preferences on the screens on the way (kinds, exchanges, min profit, hours)."""
    opportunities: bool
    press: float = PRESS_BASE
    """This user's own chance to press a push's button before their variant's lift."""


def press_chance(plan: UserPlan, variant: str, control: str | None) -> float:
    """The chance that ``plan``'s user presses a push's button: their own, plus the planted
    lift unless they are in the control variant (or in no experiment, ``-``)."""
    lift = PRESS_LIFT if control is not None and variant not in (control, "-") else 0.0
    return min(0.95, plan.press + lift)


def plan_users(n: int, *, seed: int = 7, base_id: int | None = None) -> list[UserPlan]:
    """``n`` varied users. Ids are unique per run (the embedded Redis keeps earlier runs' users)."""
    rng = random.Random(seed)
    if base_id is None:
        base_id = 6_000_000_000 + (int(time.time()) % 10_000_000) * 10_000
    plans = []
    for i in range(n):
        stop_at = _pick(rng, tuple(zip(SCREENS, STOP_WEIGHTS, strict=True)))
        skip = stop_at != "done" and stop_at != "kinds" and rng.random() < 0.25
        name = rng.choice(NAMES)
        plans.append(
            UserPlan(
                id=base_id + i,
                first_name=name,
                username=f"{name.lower()}_{i}",
                language=rng.choice(LANGS),
                tier=_pick(rng, TIER_WEIGHTS),
                timezone=_pick(rng, TIMEZONE_WEIGHTS),
                payload=_pick(rng, PAYLOADS),
                stop_at=stop_at,
                skip=skip,
                tweak=rng.random() < 0.7,
                opportunities=rng.random() < 0.6,
                press=random.Random(seed * 1_000_003 + i).betavariate(2, 6),  # mean 0.25, users differ
            )
        )
    return plans
