"""Polling's first answers from the command's own process, while the bot shards start.

A cold ``arbflow run`` used to answer its first update only once a bot shard actor had
started: Ray up (≈ 6 s here), then the shard's process importing aiogram (≈ 6 s of one
core: aiogram builds the schemas of its 444 Telegram types at import). The two cannot
overlap while the bot lives only in an actor, so the floor was ≈ 12-16 s on 2 cores
(docs/performance.md).

In polling mode the command's process does the first answers itself:

- :func:`preload_bot` imports the bot's heavy modules on a thread at the very start, so
  the import runs while Redis and Ray start;
- :class:`HandoverShards` is what the poller hands updates to: a :class:`serve.dispatch.
  UpdateShard` in this process (the same handler, pacing, Redis stores and lake events as
  a shard actor) takes every update until the shard actors are attached and ready, then the
  actors take over. The switch waits until the local shard has handled everything it took,
  so a chat's updates are still answered in order; then the local shard is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from serve.dispatch import UpdateShard, UpdateShards

log = logging.getLogger(__name__)

PRELOAD = ("aiogram.types", "bot.app", "bot.deps", "serve.handlers")
"""What the bot's handler imports, heaviest first."""
READY_POLL_S = 0.2


def preload_bot(modules: Sequence[str] = PRELOAD) -> threading.Thread:
    """Import ``modules`` on a daemon thread (Python's import lock makes a later import of
    the same module wait for it rather than start again); returns the thread."""

    def work() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # the handler's own build reports it properly
                log.debug("preloading %s failed: %r", name, exc)
                return

    thread = threading.Thread(target=work, name="bot-preload", daemon=True)
    thread.start()
    return thread


class HandoverShards:
    """The poller's shards: ``local`` answers until the shard actors take over.

    ``submit_many`` has :meth:`serve.dispatch.UpdateShards.submit_many`'s shape (called
    from the forwarder's event loop). :meth:`attach` gives the shard actors; a watcher
    thread waits until every one is ready and the local shard is idle, then switches (under
    the lock that ``submit_many`` holds, so no update is routed while it switches) and
    closes the local shard.
    """

    def __init__(self, local: UpdateShard) -> None:
        self.local: UpdateShard | None = local
        self.remote: UpdateShards | None = None
        self.switched_at: float | None = None
        self.local_stats: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def switched(self) -> bool:
        return self.switched_at is not None

    def submit_many(self, updates: Sequence[dict[str, Any]]) -> dict[int, tuple[Any, list[int]]]:
        with self._lock:
            if self.switched and self.remote is not None:
                return self.remote.submit_many(updates)
            assert self.local is not None
            answer = self.local.accept_many(list(updates))
        done = asyncio.get_running_loop().create_future()
        done.set_result(answer)
        return {0: (done, list(range(len(updates))))}

    def attach(self, remote: UpdateShards) -> None:
        """The shard actors (created, maybe still building): switch to them once ready."""
        self.remote = remote
        self._watcher = threading.Thread(target=self._watch, name="bot-handover", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        assert self.remote is not None
        while not self._stop.is_set():
            try:
                states = self.remote.ready(30.0)
            except Exception as exc:
                log.warning("bot handover: asking the shards: %r", exc)
                states = []
            if states and all(s.get("ready") for s in states) and self._switch():
                return
            self._stop.wait(READY_POLL_S)

    def _switch(self) -> bool:
        with self._lock:
            local = self.local
            if local is None or not local.idle():
                return False
            self.switched_at = time.time()
        log.info("bot handover: the shard actors answer from now on")
        self.local_stats = local.shutdown(5.0)
        self.local = None
        return True

    def ready(self) -> dict[str, Any]:
        """The local shard's ``ready``; once switched, ready (the actors were)."""
        local = self.local
        if local is None:
            return {"ready": True, "error": None, "shard": "handover"}
        return local.ready(0.0)

    def stats(self) -> dict[str, Any]:
        local = self.local
        return local.stats() if local is not None else dict(self.local_stats)

    def close(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop watching; drain and close the local shard if it still answers."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout_s)
        with self._lock:
            local, self.local = self.local, None
        if local is not None:
            with contextlib.suppress(Exception):
                self.local_stats = local.shutdown(timeout_s)
        return dict(self.local_stats)


__all__ = ["HandoverShards", "preload_bot"]
