"""Updates by long polling (``getUpdates``) into the same bot shards as the webhook.

``arbflow run`` polls when a bot token is set and ``ARBFLOW_TELEGRAM__PUBLIC_URL`` is
not (a bot behind NAT). The poller is the webhook's twin: each update goes through the
same :class:`serve.forwarder.UpdateForwarder` (``update_id`` dedup in Redis, one
``handle_many`` per shard, ``chat_id % N``), so the shards' aiogram handler answers it
with the same pacing (``ratelimit:global``), lake events (``sink:lake``) and pushes.

Offsets: a batch is confirmed (the next ``getUpdates`` asks from its last id + 1) only
once every update of it is on its shard; when the forwarder fails the batch is asked
for again after a backoff, and the dedup drops the part that went through. A restart
asks from Telegram's unconfirmed updates, so nothing acknowledged by us is lost.

While it polls, the poller keeps ``<prefix>bot:poller`` in Redis (a heartbeat that
expires ``poll timeout + 15 s`` after the last answer), which ``/readyz`` checks.

It imports neither aiogram nor the bot: updates are plain dicts here; the shards
validate them into aiogram objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import threading
import time
from typing import Any

from core.bots import BOT_FIELD, bot_id
from core.settings import Settings
from serve.dispatch import UpdateRouter
from serve.forwarder import ForwardFailed, UpdateForwarder
from serve.webhook import ALLOWED_UPDATES

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "bot:poller"
POLL_TIMEOUT_S = 25
RETRY_S = (0.5, 15.0)


def heartbeat_key(prefix: str = "") -> str:
    return f"{prefix}{HEARTBEAT_KEY}"


class PollingError(Exception):
    """``getUpdates`` / ``deleteWebhook`` answered not ok (``retry_after`` for a 429)."""

    def __init__(self, method: str, answer: dict[str, Any], status: int) -> None:
        super().__init__(f"{method}: {answer.get('description') or status}")
        self.status = status
        self.retry_after = float((answer.get("parameters") or {}).get("retry_after") or 0)


class UpdatePoller:
    """Long-polls ``getUpdates`` on its own thread and event loop; :meth:`stop` ends it."""

    def __init__(
        self,
        settings: Settings,
        shards: UpdateRouter,
        *,
        poll_timeout_s: int = POLL_TIMEOUT_S,
        dedup_prefix: str = "",
        allowed_updates: tuple[str, ...] = ALLOWED_UPDATES,
        token: str | None = None,
    ) -> None:
        """``token``: the bot of the pool this poller asks for (default the primary); with a
        pool of several bots each update is marked with its bot (``core.bots.BOT_FIELD``)."""
        token = token or settings.telegram.token
        if not token:
            raise ValueError("polling needs a bot token (ARBFLOW_TELEGRAM__TOKEN)")
        if token != settings.telegram.token:  # this bot's settings: its menus, its getUpdates
            settings = settings.model_copy(
                update={"telegram": settings.telegram.model_copy(update={"token": token})}
            )
        self.bot: int | None = bot_id(token) if len(settings.telegram.pool) > 1 else None
        self.settings = settings
        self.shards = shards
        self.poll_timeout_s = poll_timeout_s
        self.dedup_prefix = dedup_prefix
        self.allowed_updates = list(allowed_updates)
        self.offset = 0
        self.polls = 0
        self.menus_set = 0
        """How many command menus ``setMyCommands`` set (once, before the first poll)."""
        self.received = 0
        self.forwarded = 0
        self.duplicates = 0
        self.errors = 0
        self.last_error: str | None = None
        self.first_poll_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.first_batch = threading.Event()
        """Set once the first ``getUpdates`` answer is handed to the shards (or failed)."""

    @property
    def base(self) -> str:
        tg = self.settings.telegram
        return f"{tg.api_base.rstrip('/')}/bot{tg.token}"

    def start(self) -> UpdatePoller:
        name = "telegram-poller" if self.bot is None else f"telegram-poller-{self.bot}"
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._task = loop.create_task(self.run())
        self._started.set()
        try:
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("telegram poller stopped on an error")
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop asking for updates; what was taken is on the shards (the forwarder drains)."""
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.stats()

    def stats(self) -> dict[str, Any]:
        return {
            "polls": self.polls,
            "received": self.received,
            "forwarded": self.forwarded,
            "duplicates": self.duplicates,
            "errors": self.errors,
            "offset": self.offset,
            "last_error": self.last_error,
        }

    # -- the loop ------------------------------------------------------------------------

    async def _call(self, http: Any, method: str, payload: dict[str, Any], timeout_s: float) -> Any:
        resp = await http.post(f"{self.base}/{method}", json=payload, timeout=timeout_s)
        try:
            answer: dict[str, Any] = resp.json()
        except ValueError:
            answer = {"ok": False, "description": resp.text[:200]}
        if not answer.get("ok"):
            raise PollingError(method, answer, resp.status_code)
        return answer.get("result")

    async def run(self) -> None:
        import httpx

        from state.dedup import RedisUpdateDedup
        from state.redis import redis_client

        redis = redis_client(self.settings.redis.url)
        dedup = RedisUpdateDedup(redis, prefix=self.dedup_prefix)
        forwarder = UpdateForwarder(self.shards, redis, dedup._key, ttl_s=dedup.ttl_s)
        beat = heartbeat_key(self.dedup_prefix)
        delay = RETRY_S[0]
        try:
            async with httpx.AsyncClient() as http:
                while True:  # a webhook left from a webhook-mode run makes getUpdates answer 409
                    try:
                        await self._call(http, "deleteWebhook", {"drop_pending_updates": False}, 10.0)
                        break
                    except (httpx.HTTPError, PollingError) as exc:
                        self.first_batch.set()  # nobody waits for a first batch behind an outage
                        delay = await self._backoff(exc, delay)
                # the menus' texts import aiogram's i18n: imported off the loop, not to delay polling
                menus = await asyncio.to_thread(importlib.import_module, "bot.menus")
                self.menus_set = await menus.register_commands(self.settings)
                while True:
                    try:
                        first = self.polls == 0
                        updates = await self._call(
                            http,
                            "getUpdates",
                            {
                                "offset": self.offset,
                                # the first poll answers at once: /readyz needs its heartbeat
                                "timeout": 0 if first else self.poll_timeout_s,
                                "allowed_updates": self.allowed_updates,
                            },
                            self.poll_timeout_s + 10.0,
                        )
                        self.polls += 1
                        if first:
                            self.first_poll_at = time.time()
                        await redis.set(beat, json.dumps({"at": time.time()}), ex=self.poll_timeout_s + 15)
                        if updates:
                            await self._forward(forwarder, list(updates))
                        self.first_batch.set()
                        delay = RETRY_S[0]
                    except (httpx.HTTPError, PollingError, ForwardFailed, OSError) as exc:
                        self.first_batch.set()
                        delay = await self._backoff(exc, delay)
                    except Exception as exc:  # Redis errors and the like: keep polling
                        self.first_batch.set()
                        delay = await self._backoff(exc, delay)
        finally:
            self.first_batch.set()
            with contextlib.suppress(Exception):
                await forwarder.drain(5.0)
            forwarder.close()
            with contextlib.suppress(Exception):
                await redis.delete(beat)
            with contextlib.suppress(Exception):
                await redis.aclose()

    async def _forward(self, forwarder: UpdateForwarder, updates: list[dict[str, Any]]) -> None:
        self.received += len(updates)
        if self.bot is not None:
            for update in updates:
                update[BOT_FIELD] = self.bot
        outcomes = await asyncio.gather(*(forwarder.submit(u) for u in updates), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        self.forwarded += sum(o == "enqueued" for o in outcomes)
        self.duplicates += sum(o == "duplicate" for o in outcomes)
        if failed:  # ask for the batch again; the dedup drops what went through
            raise ForwardFailed(f"{len(failed)} of {len(updates)} updates: {failed[0]}", store=False)
        self.offset = max(int(u["update_id"]) for u in updates) + 1

    async def _backoff(self, exc: BaseException, delay: float) -> float:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        wait = delay
        if isinstance(exc, PollingError) and exc.retry_after:
            wait = exc.retry_after
        log.warning("telegram poller: %s (retrying in %.1f s)", self.last_error, wait)
        await asyncio.sleep(wait)
        return min(delay * 2, RETRY_S[1])


__all__ = ["HEARTBEAT_KEY", "PollingError", "UpdatePoller", "heartbeat_key"]
