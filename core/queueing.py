"""Per-chat priority queues, digests and retry timing: the pure part of the queue shards.

A queue shard (``actors.queues``) holds the pending notifications of the chats that
hash to it (:func:`shard_of`). For each chat it keeps a :class:`ChatQueue`: items are
due at their ``due_ms`` (the tier's delay, or the start of the user's active hours);
when a chat's turn comes, :meth:`ChatQueue.take_due` hands out what is due, high
priority before medium before low and newest first within a priority (or, ranking, by the
score the distributor gave each item: predicted engagement times edge), several at
once becoming one digest message; legs of one thing a user acts on (the same symbol from
several venues to one, :func:`core.notifications.leg_groups`) are one unit
(:func:`leg_units`): one push, one quota unit. Nothing here does I/O; times are Unix ms.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from core.models import Priority
from core.notifications import PRIORITY_RANK, Notification, leg_groups


def shard_of(chat: int | str, shards: int) -> int:
    """The queue shard of a chat: its id modulo ``shards`` (a channel's ``@name`` by CRC32)."""
    if isinstance(chat, str):
        try:
            return int(chat) % shards
        except ValueError:
            return zlib.crc32(chat.encode()) % shards
    return chat % shards


@dataclass(slots=True)
class QueueItem:
    """One notification for one chat. The opportunity's text lives once per shard."""

    opportunity_id: str
    batch: str
    """The fan-out batch it came in (its Redis record in the shard)."""
    chat: int | str
    """A chat id, or a channel's ``@name``."""
    user_id: int | None
    audience: str
    tier: str
    priority: str
    kind: str
    net_bps: float
    detected_ms: int
    queued_ms: int
    due_ms: int
    silent: bool = False
    attempt: int = 0
    charged_ms: int | None = None
    """When its quota was drawn (the first send attempt); ``None``: not drawn yet. A retry
    does not draw again, and an item that ends unsent gives it back (same day/hour)."""
    alone: bool = False
    """Goes as a push of its own: joining the chat's last push (an edit) failed once."""
    score: float | None = None
    """Predicted engagement times edge for its user (``core.personalization``), from the
    distributor; ``None``: no model for the user (or an item of an older release)."""

    @property
    def rank(self) -> tuple[int, int]:
        """Sort key: priority first, then newest first."""
        return (PRIORITY_RANK.get(Priority(self.priority), 1), -self.detected_ms)

    @property
    def ranked_key(self) -> tuple[float, int, int]:
        """Sort key when ranking: best score first, then :attr:`rank`."""
        return (-(self.score or 0.0), *self.rank)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def by_score(items: Sequence[QueueItem]) -> bool:
    """Whether ``items`` can be ordered by score: each of them has one (a user with a model)."""
    return bool(items) and all(i.score is not None and i.score == i.score for i in items)


@dataclass(slots=True)
class ChatQueue:
    """The pending items of one chat."""

    items: dict[str, QueueItem] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: QueueItem) -> bool:
        if item.opportunity_id in self.items:
            return False
        self.items[item.opportunity_id] = item
        return True

    def take_due(self, now_ms: int, *, limit: int, ranked: bool = False) -> list[QueueItem]:
        """Remove and return what is due now, best first, at most ``limit`` items: by priority,
        then newest; ``ranked`` (the user's strategy ranks) and every due item scored: by
        score first (:attr:`QueueItem.ranked_key`). Only the order changes, never what is due."""
        due = [i for i in self.items.values() if i.due_ms <= now_ms]
        due.sort(key=(lambda i: i.ranked_key) if ranked and by_score(due) else (lambda i: i.rank))
        taken = due[:limit]
        for item in taken:
            del self.items[item.opportunity_id]
        return taken

    def drop(self, opportunity_id: str) -> QueueItem | None:
        return self.items.pop(opportunity_id, None)

    def drain(self) -> list[QueueItem]:
        out = list(self.items.values())
        self.items.clear()
        return out


def target_of(item: QueueItem) -> int | None:
    """Whose quota, cooldown and pending mark an item is: the user, or the group's chat id;
    ``None`` for a channel (channels have none of these)."""
    if item.audience == "user":
        return item.user_id
    if item.audience == "group" and isinstance(item.chat, int):
        return item.chat
    return None


def is_stale(item: QueueItem, now_ms: int, max_age_s: float) -> bool:
    """Too old to be worth sending: past its due time by more than ``max_age_s``."""
    return now_ms - item.due_ms > max_age_s * 1000


def retry_delay_s(attempt: int, base_s: float, *, cap_s: float = 300.0, jitter: float = 0.0) -> float:
    """Exponential backoff for the ``attempt``-th retry (1-based); ``jitter`` in [0, 1)."""
    delay = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    return delay * (1.0 + 0.25 * jitter)


def leg_units(items: Sequence[QueueItem], notes: Mapping[str, Notification]) -> list[list[QueueItem]]:
    """``items`` (taken together for one chat, best first) as units of one push each: the
    legs of one group (:func:`~core.notifications.leg_groups`, best net first) or an item
    alone; units keep the order of their first item in ``items``. An item whose
    notification is unknown stays alone. A unit draws one quota unit: its first item's."""
    known = [notes[i.opportunity_id] for i in items if i.opportunity_id in notes]
    position = {i.opportunity_id: k for k, i in enumerate(items)}
    by_id = {i.opportunity_id: i for i in items}
    units: list[list[QueueItem]] = []
    grouped: set[str] = set()
    for group in leg_groups(known):
        units.append([by_id[n.opportunity_id] for n in group])
        grouped.update(n.opportunity_id for n in group)
    units += [[i] for i in items if i.opportunity_id not in grouped]
    return sorted(units, key=lambda unit: min(position[i.opportunity_id] for i in unit))
