"""Opportunity lifecycle: dedup, opened → updated → closed, cooldown re-open.

The pure heart of an opportunity coordinator (one per exchange pair). No I/O, no
awaits; ``now`` is injected and ids come from an injectable factory.

- **Dedup key** ``(kind, symbol, buy_exchange, sell_exchange)``: funding puts the long
  leg as buy and the short leg as sell; a technical signal puts its exchange on the
  side of its direction (long → buy, short → sell) and ``""`` on the other side.
- **Live**: a candidate is an opportunity while ``net_bps > 0`` and it is not flagged
  ``below_threshold`` (technical signals: not flagged ``below_threshold``). Other
  blocking flags (depth, transfer, collision) keep it tracked with ``pushable=False``.
- **opened**: a live key the tracker does not hold. **updated**: only on a material
  change against the last *emitted* state (so slow drift adds up): ``|Δnet_bps| ≥
  material_bps`` or the executable size changed by ``≥ material_size_frac`` of it, or
  ``pushable`` flipped (distribution must learn that it became pushable or stopped
  being so). **closed**: a held key that has not been live for ``close_after_s``
  (hysteresis; the tracker's default 0 closes on the first tick without it, the system
  sets ``ARBFLOW_OPPORTUNITIES__CLOSE_AFTER_S``); ``lifetime_s = gone_at - opened_at``
  with ``gone_at`` the first tick without it (= ``closed_at`` without hysteresis: the
  wait before closing is not part of its life, so persistence is not inflated by it).
  A final tick (``observe(..., close_after_s=0)`` with nothing live) closes every one.
- **Cooldown**: a key live again within ``cooldown_s`` of its close is the *same*
  opportunity: the tracker emits ``opened`` with the same id, the original
  ``opened_at`` and ``reopened=True``. Per id the events therefore read
  ``opened (updated)* closed`` repeated, never two ``opened`` without a ``closed``
  between, and a consumer that dedups on ``opportunity_id`` does not see a new
  opportunity. ``lifetime_s`` of a later ``closed`` spans from the first opening
  (the whole life of the opportunity, its short gaps included).

Numbers are ``float``: candidates come from the vectorised detector's float64
columns and are only compared here; no money is computed in this module.
"""

from __future__ import annotations

import math
import secrets
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from core.candidates import _EPS, Candidate, OppKey, _aware, _dt
from core.models import (
    UNTRADEABLE_FLAGS,
    OpportunityKind,
)

if TYPE_CHECKING:
    pass


class EventType(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"
    CLOSED = "closed"


def new_opportunity_id(now: datetime) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix ms of ``now`` + 74 random bits; sorts by time."""
    ms = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    rand = secrets.randbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


# --------------------------------------------------------------------------- events and state


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One row of the ``opportunities`` dataset.

    ``candidate`` is the state the event reports (``closed``: the last live state
    seen). ``at`` is the tick time the event was decided at (``detected_at`` in the lake).
    """

    event: EventType
    opportunity_id: str
    candidate: Candidate
    at: datetime
    opened_at: datetime
    lifetime_s: float | None = None
    reopened: bool = False

    @property
    def key(self) -> OppKey:
        return self.candidate.key


@dataclass(frozen=True, slots=True)
class OpenOpportunity:
    """An open opportunity as the tracker (and Redis) hold it: its last emitted state."""

    opportunity_id: str
    candidate: Candidate
    opened_at: datetime
    updated_at: datetime
    reopened: bool = False
    seen_at: datetime | None = None
    """When a coordinator last saw it live (wall clock); None in records of older releases."""

    @property
    def key(self) -> OppKey:
        return self.candidate.key

    @property
    def last_seen(self) -> datetime:
        """``seen_at``, else (a record of an older release) ``updated_at``."""
        return self.seen_at or self.updated_at

    def to_dict(self) -> dict[str, Any]:
        out = {
            "opportunity_id": self.opportunity_id,
            **self.candidate.to_dict(),
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "reopened": self.reopened,
        }
        if self.seen_at is not None:
            out["seen_at"] = self.seen_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpenOpportunity:
        seen = data.get("seen_at")
        return cls(
            opportunity_id=str(data["opportunity_id"]),
            candidate=Candidate.from_dict(data),
            opened_at=_dt(data["opened_at"]),
            updated_at=_dt(data.get("updated_at") or data["opened_at"]),
            reopened=bool(data.get("reopened", False)),
            seen_at=_dt(seen) if seen else None,
        )


@dataclass(frozen=True, slots=True)
class ClosedOpportunity:
    """A closed opportunity kept for the cooldown (so a re-open keeps its id)."""

    opportunity_id: str
    candidate: Candidate
    opened_at: datetime
    closed_at: datetime

    @property
    def key(self) -> OppKey:
        return self.candidate.key

    def to_dict(self) -> dict[str, Any]:
        return {
            "opportunity_id": self.opportunity_id,
            **self.candidate.to_dict(),
            "opened_at": self.opened_at.isoformat(),
            "closed_at": self.closed_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClosedOpportunity:
        return cls(
            opportunity_id=str(data["opportunity_id"]),
            candidate=Candidate.from_dict(data),
            opened_at=_dt(data["opened_at"]),
            closed_at=_dt(data["closed_at"]),
        )


@dataclass(slots=True)
class _Open:
    opportunity_id: str
    opened_at: datetime
    emitted: Candidate
    updated_at: datetime
    last: Candidate
    last_live: datetime
    reopened: bool = False
    gone_at: datetime | None = None
    """The first tick it was not live since it last was (its lifetime ends there)."""


def _blocked(c: Candidate) -> bool:
    return any(f in UNTRADEABLE_FLAGS for f in c.flags)


def is_material(
    prev: Candidate, new: Candidate, material_bps: float = 5.0, material_size_frac: float = 0.20
) -> bool:
    """Whether ``new`` differs materially from ``prev`` (the last emitted state).

    An opportunity that cannot be pushed either way (a probable ticker collision, a
    closed transfer…) changes materially only when its flags change: its edge is not
    actionable, and a collision's thousands of bps move by more than 5 bps every tick.
    """
    if prev.pushable != new.pushable:
        return True
    if not prev.pushable and not new.pushable and _blocked(prev) and _blocked(new):
        return set(prev.flags) != set(new.flags)
    if math.isfinite(prev.net_bps) and math.isfinite(new.net_bps):
        if abs(new.net_bps - prev.net_bps) >= material_bps - _EPS:
            return True
    elif math.isfinite(prev.net_bps) != math.isfinite(new.net_bps):
        return True
    old, size = prev.size_usd, new.size_usd
    if not (math.isfinite(old) and math.isfinite(size)):
        return math.isfinite(old) != math.isfinite(size)
    if old > 0:
        return abs(size - old) / old >= material_size_frac - _EPS
    return size > 0


class OpportunityTracker:
    """Dedup and lifecycle of the opportunities of one coordinator (see the module docstring).

    ``observe`` gets *everything* detected for this tracker's keys in one tick; a held
    key missing from it (or no longer live) closes once it has not been live for
    ``close_after_s``. ``kinds`` limits which held keys a tick speaks for (a funding
    tick does not close spot spreads).
    """

    def __init__(
        self,
        material_bps: float = 5.0,
        material_size_frac: float = 0.20,
        cooldown_s: float = 60.0,
        close_after_s: float = 0.0,
        *,
        id_factory: Callable[[datetime], str] = new_opportunity_id,
    ) -> None:
        if material_bps < 0 or material_size_frac < 0 or cooldown_s < 0 or close_after_s < 0:
            raise ValueError("thresholds and durations must be non-negative")
        self.material_bps = material_bps
        self.material_size_frac = material_size_frac
        self.cooldown_s = cooldown_s
        self.close_after_s = close_after_s
        self._new_id = id_factory
        self._open: dict[OppKey, _Open] = {}
        self._closed: dict[OppKey, ClosedOpportunity] = {}

    def __len__(self) -> int:
        return len(self._open)

    def observe(
        self,
        candidates: Iterable[Candidate],
        now: datetime,
        *,
        kinds: Collection[OpportunityKind | str] | None = None,
        close_after_s: float | None = None,
    ) -> list[LifecycleEvent]:
        """Advance by one tick; return the events it causes (opened/updated first, then closed).

        ``close_after_s`` overrides the hysteresis for this tick (0 with no candidates: a
        final tick that closes everything held, as on a clean stop).
        """
        now = _aware(now)
        close_after = self.close_after_s if close_after_s is None else close_after_s
        self._expire(now)
        live: dict[OppKey, Candidate] = {}
        for cand in candidates:
            if not cand.live:
                continue
            seen = live.get(cand.key)
            if seen is None or cand.net_bps > seen.net_bps:
                live[cand.key] = cand
        events: list[LifecycleEvent] = []
        for key, cand in live.items():
            state = self._open.get(key)
            if state is not None:
                state.last, state.last_live, state.gone_at = cand, now, None
                if is_material(state.emitted, cand, self.material_bps, self.material_size_frac):
                    state.emitted, state.updated_at = cand, now
                    events.append(self._event(EventType.UPDATED, state, cand, now))
                continue
            closed = self._closed.pop(key, None)
            if closed is not None:
                state = _Open(closed.opportunity_id, closed.opened_at, cand, now, cand, now, reopened=True)
            else:
                state = _Open(self._new_id(now), now, cand, now, cand, now)
            self._open[key] = state
            events.append(self._event(EventType.OPENED, state, cand, now))
        scope = None if kinds is None else {OpportunityKind(k).value for k in kinds}
        absent = [key for key in self._open if key not in live and (scope is None or key[0] in scope)]
        for key in absent:
            if self._open[key].gone_at is None:
                self._open[key].gone_at = now
        gone = [key for key in absent if (now - self._open[key].last_live).total_seconds() >= close_after]
        for key in sorted(gone):
            state = self._open.pop(key)
            ended = state.gone_at or now  # the hysteresis wait is not part of its life
            lifetime = max(0.0, (ended - state.opened_at).total_seconds())
            events.append(self._event(EventType.CLOSED, state, state.last, now, lifetime))
            if self.cooldown_s > 0:
                self._closed[key] = ClosedOpportunity(state.opportunity_id, state.last, state.opened_at, now)
        return events

    @staticmethod
    def _event(
        kind: EventType, state: _Open, cand: Candidate, now: datetime, lifetime: float | None = None
    ) -> LifecycleEvent:
        return LifecycleEvent(
            event=kind,
            opportunity_id=state.opportunity_id,
            candidate=cand,
            at=now,
            opened_at=state.opened_at,
            lifetime_s=lifetime,
            reopened=state.reopened,
        )

    def _expire(self, now: datetime) -> None:
        for key in [
            k for k, c in self._closed.items() if (now - c.closed_at).total_seconds() > self.cooldown_s
        ]:
            del self._closed[key]

    # -- restart -------------------------------------------------------------------
    def snapshot(self) -> list[OpenOpportunity]:
        """The open opportunities, each with its last emitted state (what Redis holds)."""
        return [
            OpenOpportunity(s.opportunity_id, s.emitted, s.opened_at, s.updated_at, s.reopened)
            for s in self._open.values()
        ]

    def recently_closed(self) -> list[ClosedOpportunity]:
        return list(self._closed.values())

    def live_ids(self, now: datetime) -> list[str]:
        """Ids of the open opportunities that were live in the tick at ``now``."""
        now = _aware(now)
        return [s.opportunity_id for s in self._open.values() if s.last_live == now]

    def restore(
        self,
        open_opps: Iterable[OpenOpportunity],
        recently_closed: Iterable[ClosedOpportunity] = (),
        *,
        now: datetime | None = None,
    ) -> None:
        """Rebuild state after a restart (from Redis): no event is emitted for it.

        A restored key present in the next tick continues (``updated`` only on a
        material change); absent, it closes as usual, ``close_after_s`` after it was last
        seen live (``OpenOpportunity.last_seen``, at most ``now``: a clock of another
        kind, a replay's, never keeps it open).
        """
        bound = None if now is None else _aware(now)
        for closed in recently_closed:
            if closed.key not in self._open:
                self._closed[closed.key] = closed
        for opp in open_opps:
            self._closed.pop(opp.key, None)
            self._open[opp.key] = _Open(
                opp.opportunity_id,
                opp.opened_at,
                opp.candidate,
                opp.updated_at,
                opp.candidate,
                opp.last_seen if bound is None else min(opp.last_seen, bound),
                opp.reopened,
            )


__all__ = [
    "ClosedOpportunity",
    "EventType",
    "LifecycleEvent",
    "OpenOpportunity",
    "OpportunityTracker",
    "is_material",
    "new_opportunity_id",
]
