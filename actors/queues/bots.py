"""A queue shard's bots (docs/bot-pool.md): which bot of the pool each chat's pushes go
through, and the notifier that sends through it.

:class:`ChatBots` keeps each chat's bot as ``state.bots`` says (the bot the chat last
talked to), read in one round trip for the chats of a pump turn that it has not read in
the last :data:`REREAD_S` (a chat that moved to another bot is sent through it from then
on); a chat bound to no bot, or to a bot no longer in the pool, is the primary's. With one
bot it reads nothing and says ``None`` (the deliveries rows keep ``bot_id`` null).

:class:`PoolNotifier` is the shard's :class:`~actors.queues.base.Notifier` over one
:class:`notify.notifier.TelegramNotifier` per bot, choosing by the chat.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from core.missed import MissedDigest
from core.notifications import Digest, Notification, SendResult

if TYPE_CHECKING:  # base imports this module: the protocol is only named in annotations
    from actors.queues.base import Notifier

REREAD_S = 30.0
"""A chat's binding is read again after this long (when it has something to send)."""
KEPT_MAX = 200_000
"""Chats whose bot is remembered; past it the oldest reads are forgotten (read again)."""

ChatId = int | str


class BotBindings(Protocol):
    async def bots_of(self, chat_ids: Sequence[int]) -> list[int | None]: ...


class ChatBots:
    """Chat → bot of the pool, cached from ``state.bots`` (see the module doc)."""

    def __init__(
        self,
        bots: Sequence[int],
        bindings: BotBindings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        reread_s: float = REREAD_S,
    ) -> None:
        self.bots = list(bots)
        self.primary: int | None = self.bots[0] if self.bots else None
        self.pool = set(self.bots)
        self.bindings = bindings
        self.active = len(self.bots) > 1 and bindings is not None
        self.clock = clock
        self.reread_s = reread_s
        self._of: dict[ChatId, int] = {}
        self._read: dict[ChatId, float] = {}
        self.reads = 0

    @classmethod
    def single(cls) -> ChatBots:
        """One bot: every chat is its (``of`` says None)."""
        return cls([])

    def of(self, chat: ChatId) -> int | None:
        """The bot ``chat``'s pushes go through: None with one bot, else a bot id of the pool."""
        if not self.active:
            return None
        return self._of.get(chat, self.primary)

    def row_bot(self, chat: ChatId) -> int | None:
        """The ``bot_id`` of a deliveries row of ``chat``: its bot once its binding was read (a
        send was due), else None (one bot, or not known: an item that ended before its turn)."""
        if not self.active or chat not in self._read:
            return None
        return self._of.get(chat, self.primary)

    def note(self, chat: ChatId, bot: int | None) -> None:
        """``chat`` is bound to ``bot`` (None, or one not in the pool: the primary)."""
        if bot is not None and bot in self.pool and bot != self.primary:
            self._of[chat] = bot
        else:
            self._of.pop(chat, None)
        self._read[chat] = self.clock()

    async def load(self, chats: Iterable[ChatId]) -> None:
        """Read the bindings of ``chats`` not read lately (one round trip; nothing with one bot)."""
        if not self.active or self.bindings is None:
            return
        now = self.clock()
        todo = [
            c for c in chats if isinstance(c, int) and now - self._read.get(c, -math.inf) >= self.reread_s
        ]
        if not todo:
            return
        found = await self.bindings.bots_of(todo)
        self.reads += 1
        if len(self._read) + len(todo) > KEPT_MAX:
            for chat in list(self._read)[: len(self._read) // 2]:
                del self._read[chat]
                self._of.pop(chat, None)
        for chat, bot in zip(todo, found, strict=True):
            self.note(chat, bot)

    def stats(self) -> dict[str, Any]:
        per: dict[str, int] = {}
        for bot in self._of.values():
            per[str(bot)] = per.get(str(bot), 0) + 1
        return {"bots": len(self.bots), "bound_elsewhere": per, "reads": self.reads}


class PoolNotifier:
    """A :class:`~actors.queues.base.Notifier` per bot; each call goes through the chat's bot
    (``bot_of``: None → the primary, the first of ``notifiers``)."""

    def __init__(self, notifiers: Mapping[int, Notifier], bot_of: Callable[[ChatId], int | None]) -> None:
        if not notifiers:
            raise ValueError("a pool notifier needs at least one bot")
        self.notifiers = dict(notifiers)
        self.primary = next(iter(self.notifiers.values()))
        self.bot_of = bot_of

    def of(self, chat: ChatId) -> Notifier:
        bot = self.bot_of(chat)
        return self.primary if bot is None else self.notifiers.get(bot, self.primary)

    async def send(
        self,
        chat_id: int | str,
        item: Notification | Digest | MissedDigest,
        *,
        silent: bool,
        tz: str = "UTC",
        now: datetime | None = None,
        lang: str | None = None,
    ) -> SendResult:
        return await self.of(chat_id).send(chat_id, item, silent=silent, tz=tz, now=now, lang=lang)

    async def edit(
        self,
        chat_id: int | str,
        message_id: int,
        item: Notification | Digest,
        *,
        tz: str,
        sent: datetime,
        closed: Mapping[str, float],
        lang: str | None = None,
    ) -> SendResult:
        return await self.of(chat_id).edit(
            chat_id, message_id, item, tz=tz, sent=sent, closed=closed, lang=lang
        )


__all__ = ["REREAD_S", "ChatBots", "PoolNotifier"]
