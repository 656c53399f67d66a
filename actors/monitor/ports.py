"""The alert monitor's ports (what it asks, where it keeps its state, how it sends) and
its outbox item (a notice and the SuperAdmins it reached)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from core.alerts import (
    AlertNotice,
    AlertState,
)


class StatsSource(Protocol):
    async def ask(self, name: str, method: str = "stats") -> dict[str, Any] | None:
        """The answer of actor ``name``'s ``method``; None when it is missing or does not answer."""
        ...


class AlertStore(Protocol):
    async def load(self) -> tuple[AlertState, list[OutboxItem]]: ...

    async def save(self, state: AlertState, outbox: Sequence[OutboxItem]) -> None: ...

    async def record(self, notices: Sequence[AlertNotice]) -> None: ...


class SendVerdict(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    """429, 5xx, network: try again at the next poll."""
    GAVE_UP = "gave_up"
    """403 (blocked), 400, 401: this chat will not get it."""


class AlertSender(Protocol):
    async def send(self, chat_id: int, text: str) -> SendVerdict: ...


# -- the outbox ------------------------------------------------------------------------------


@dataclass
class OutboxItem:
    """A notice and the SuperAdmins it reached (or who cannot be reached)."""

    notice: AlertNotice
    done: set[int] = field(default_factory=set)
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"notice": self.notice.to_dict(), "done": sorted(self.done), "attempts": self.attempts}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutboxItem:
        return cls(
            AlertNotice.from_dict(dict(d["notice"])), set(d.get("done", [])), int(d.get("attempts", 0))
        )
