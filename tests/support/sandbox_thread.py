"""The Telegram sandbox on its own event-loop thread, reachable from Ray workers and subprocesses.

Tests that run the push side or the monitor on Ray need the sandbox up while the test's
own thread blocks on ``ray.get``; what the bot sent is read on the sandbox's loop (its
dicts are not for other threads).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from serve.standins.sandbox import SandboxHandle, start_sandbox


class SandboxThread:
    def __init__(self, **options: Any) -> None:
        """``options``: :func:`start_sandbox`'s (``tokens=`` for a pool of bots, config fields)."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.handle: SandboxHandle = self.call(start_sandbox(port=0, **options))

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def texts(self, chat: int) -> list[str]:
        """What the bot sent to ``chat``, oldest first."""

        async def read() -> list[str]:
            log = self.handle.sandbox.bot().chats.get(chat)
            entries = [] if log is None else list(log.entries.values())
            return [str(e.message.get("text", "")) for e in entries if e.from_bot]

        return list(self.call(read()))

    def sent_to(self, chats: list[int]) -> dict[int, int]:
        """How many messages the bot sent to each chat."""
        return {c: len(self.texts(c)) for c in chats}

    @property
    def too_many(self) -> int:
        """429 answers so far."""

        async def read() -> int:
            return int(self.handle.sandbox.too_many)

        return int(self.call(read()))

    def stop(self) -> None:
        self.call(self.handle.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def sandbox() -> Iterator[SandboxThread]:
    sb = SandboxThread()
    yield sb
    sb.stop()
