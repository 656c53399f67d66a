"""Sent pushes a shard remembers, so that a close can edit them ("closed after 42 s").

A queue shard notes every push it sent (:class:`SentPush`: the chat, Telegram's message id,
what it showed and in which zone). When the distributor tells the shard an opportunity
closed, :meth:`SentPushes.close` hands back the pushes that showed it, each marked with the
opportunity's lifetime; the shard edits them through the same global rate limiter as its
sends (an edit counts against Telegram's flood limits like a message). A digest is edited
once per closing item: its line says "closed after …".

A leg of the same group taken for the chat shortly after (``GROUPING_WINDOW_S``) joins
the chat's last push (:meth:`SentPushes.recent`, :meth:`SentPushes.join`): the message is
edited to list every leg, so that one thing a user acts on stays one message.

Memory is bounded: at most ``max_messages`` notes (oldest opportunities forgotten first);
an edit is best effort (a user may have deleted the message).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.experiments import Layout
from core.notifications import Digest, Notification, payload_of

SENT_MAX = 50_000
"""Sent-push notes a shard keeps for edits on close (one per opportunity shown)."""


def moment_ms(value: Any) -> int | None:
    """Epoch ms of an event's time field (a datetime, an ISO 8601 string or epoch ms)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value)
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return int(moment.timestamp() * 1000) if moment.tzinfo is not None else None


@dataclass(slots=True, eq=False)
class SentPush:
    chat: int | str
    message_id: int
    sent_ms: int
    items: tuple[Notification, ...]
    tz: str
    group: bool
    opened_ms: dict[str, int]
    """Each shown opportunity's opening time (its lifetime counts from it)."""
    closed: dict[str, float] = field(default_factory=dict)
    """Shown opportunities that closed since → their lifetime in seconds."""
    layout: Layout = "full"
    """The layout it was sent in (``compact``: a user's experiment variant)."""
    ranked: bool = False
    """Its digest's lines were in score order (``core.personalization``): an edit keeps it."""

    @property
    def payload(self) -> Notification | Digest:
        """What was sent, rebuilt as it was (a group of legs stays ranked by net)."""
        return payload_of(self.items, layout=self.layout, ranked=self.ranked)


class SentPushes:
    def __init__(self, max_messages: int = SENT_MAX) -> None:
        self.max_messages = max_messages
        self.by_opportunity: OrderedDict[str, list[SentPush]] = OrderedDict()
        self.notes = 0
        self.last_by_chat: OrderedDict[int | str, SentPush] = OrderedDict()
        """Each chat's last push (a leg of its group may join it: :meth:`recent`)."""

    def note(self, push: SentPush) -> None:
        self._index(push, push.items)
        self.last_by_chat.pop(push.chat, None)
        self.last_by_chat[push.chat] = push
        while len(self.last_by_chat) > self.max_messages:
            self.last_by_chat.popitem(last=False)

    def join(self, push: SentPush, notes: tuple[Notification, ...], opened_ms: dict[str, int]) -> None:
        """``notes`` now show in ``push`` too (its message was edited to list them)."""
        push.items = push.items + notes
        push.opened_ms.update(opened_ms)
        self._index(push, notes)

    def recent(self, chat: int | str, now_ms: int, window_ms: int) -> SentPush | None:
        """``chat``'s last push when it was sent within ``window_ms`` and something it shows
        is still open."""
        push = self.last_by_chat.get(chat)
        if push is None or now_ms - push.sent_ms > window_ms:
            return None
        if all(n.opportunity_id in push.closed for n in push.items):
            return None
        return push

    def _index(self, push: SentPush, notes: tuple[Notification, ...]) -> None:
        for n in notes:
            self.by_opportunity.setdefault(n.opportunity_id, []).append(push)
            self.notes += 1
        while self.notes > self.max_messages and self.by_opportunity:
            _, dropped = self.by_opportunity.popitem(last=False)
            self.notes -= len(dropped)

    def close(self, opportunity_id: str, now_ms: int) -> list[SentPush]:
        """The pushes that showed ``opportunity_id``, marked closed at ``now_ms``."""
        pushes = self.by_opportunity.pop(opportunity_id, [])
        self.notes -= len(pushes)
        for push in pushes:
            opened = push.opened_ms.get(opportunity_id, push.sent_ms)
            push.closed[opportunity_id] = max(0.0, (now_ms - opened) / 1000)
        return pushes

    def __contains__(self, opportunity_id: object) -> bool:
        return opportunity_id in self.by_opportunity


__all__ = ["SENT_MAX", "SentPush", "SentPushes", "moment_ms"]
