"""``alerts:monitor``, the Ray actor of the alert monitor (:class:`AlertMonitorActor`: an
:class:`~actors.monitor.engine.AlertMonitor` polling from construction, the session and
paid-tier sweeps) and :func:`get_monitor`."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import ray

from actors.lazy import stop_task
from actors.market_data import coordinator_name
from actors.monitor.adapters import PoolAlertSender, RayStatsSource, RedisAlertStore, TelegramAlertSender
from actors.monitor.engine import AlertMonitor
from actors.monitor.metrics import MetricsExporter
from actors.monitor.ports import SendVerdict
from core.alerts import (
    AlertRules,
)
from core.settings import Settings

log = logging.getLogger(__name__)

MONITOR_NAME = "alerts:monitor"
DEFAULT_INTERVAL_S = 5.0
SESSION_SWEEP_S = 60.0
"""How often the monitor ends the sessions that expired (each an ``expired`` lake event)
and returns the users whose tier paid in Telegram Stars ended to Free (with a notice)."""


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class AlertMonitorActor:
    """``alerts:monitor``: an :class:`AlertMonitor` polling every ``interval_s`` from construction."""

    def __init__(
        self,
        settings: Settings,
        interval_s: float = DEFAULT_INTERVAL_S,
        rules: AlertRules | None = None,
        exchanges: list[str] | None = None,
        shards: int | None = None,
        key_prefix: str = "",
    ) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.rules = rules
        self.exchanges = exchanges
        self.shards = shards
        self.key_prefix = key_prefix
        self.impl: AlertMonitor | None = None
        self.errors = 0
        self._sender: TelegramAlertSender | PoolAlertSender | None = None
        self.sessions_swept = 0
        self._last_sweep = float("-inf")
        self._sessions: Any = None
        self._emit: Any = None
        self.tiers_expired = 0
        self._payments: Any = None
        self._tier_sender: TelegramAlertSender | PoolAlertSender | None = None
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._loop())

    def _hosted(self) -> dict[str, tuple[str, str]]:
        """The market-data coordinators that live in ``md:host:NN`` actors (see ``coordinator_layout``)."""
        from actors.market_data import coordinator_layout

        s = self.settings
        keys = list(self.exchanges or (["replay"] if s.market.source == "replay" else s.market.exchanges))
        return {
            coordinator_name(key): (actor, key)
            for key, actor in coordinator_layout(s, keys).items()
            if actor != coordinator_name(key)
        }

    def _telegram_sender(self) -> TelegramAlertSender | PoolAlertSender:
        """Notices through the bot: with a pool of bots, each through the bot its chat talks
        to (docs/bot-pool.md), else the one bot."""
        from notify.client import build_bot

        if len(self.settings.telegram.pool) > 1:
            from state.redis import redis_client

            return PoolAlertSender(self.settings, redis_client(self.settings.redis.url))
        return TelegramAlertSender(build_bot(self.settings))

    async def _ensure(self) -> AlertMonitor:
        if self.impl is None:
            from state.redis import redis_client

            sender: Any = None
            if self.settings.telegram.token and self.settings.superadmin_ids:
                sender = self._sender = self._telegram_sender()
            self.impl = AlertMonitor(
                self.settings,
                source=RayStatsSource(self.settings.ray.namespace, hosted=self._hosted()),
                store=RedisAlertStore(redis_client(self.settings.redis.url), self.key_prefix),
                sender=sender,
                metrics=MetricsExporter(),
                rules=self.rules,
                exchanges=self.exchanges,
                shards=self.shards,
            )
        return self.impl

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await (await self._ensure()).poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("monitor: poll failed")
            if started - self._last_sweep >= SESSION_SWEEP_S:
                self._last_sweep = started
                try:
                    await self.sweep_sessions()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: the next sweep catches up
                    log.warning("monitor: session sweep failed: %r", exc)
                try:
                    await self.sweep_tiers()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away: the next sweep catches up
                    log.warning("monitor: paid tier sweep failed: %r", exc)
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def sweep_sessions(self) -> int:
        """End every session that expired (``RedisSessionStore.sweep``) and write one
        ``expired`` event each to ``session_events``; returns how many ended."""
        if self._sessions is None:
            from state.redis import redis_client
            from state.sessions import RedisSessionStore

            self._sessions = RedisSessionStore(redis_client(self.settings.redis.url))  # the bot's keys
        self._emitter()
        from core.sessions import end_event
        from state.sessions import SESSION_EVENTS_DATASET, session_events_table

        ended = await self._sessions.sweep(datetime.now(UTC))
        if ended:
            await self._emitter()(SESSION_EVENTS_DATASET, session_events_table([end_event(s) for s in ended]))
            self.sessions_swept += len(ended)
        return len(ended)

    def _emitter(self) -> Any:
        if self._emit is None:
            from actors.lazy import sink_emitter

            self._emit = sink_emitter(self.settings, name="alerts:monitor")
        return self._emit

    async def sweep_tiers(self) -> int:
        """Return every user whose tier paid in Telegram Stars ended to Free, with a notice
        through the bot and ``expired`` rows (``actors.tiers.expire_paid_tiers``); how many."""
        from actors.tiers import expire_paid_tiers
        from state.payments import RedisPaymentStore

        if self._payments is None:
            from state.redis import redis_client
            from state.users import RedisUserStore

            self._payments = RedisPaymentStore(RedisUserStore(redis_client(self.settings.redis.url)))

        async def notify(chat_id: int, text: str) -> None:
            sender = self._tier_sender
            if sender is None:  # built for the first notice: aiogram's import is not paid before
                sender = self._tier_sender = self._telegram_sender()
            for attempt in range(3):  # 429 / 5xx / network: a few tries, then it is logged
                verdict = await sender.send(chat_id, text)
                if verdict is not SendVerdict.RETRY:
                    return
                await asyncio.sleep(1.0 + attempt)

        send = notify if self.settings.telegram.token else None
        n = await expire_paid_tiers(self._payments, self._emitter(), send, datetime.now(UTC))
        self.tiers_expired += n
        return n

    async def poll(self) -> dict[str, Any]:
        """One poll now (besides the loop's)."""
        return await (await self._ensure()).poll()

    async def status(self) -> dict[str, Any]:
        impl = await self._ensure()
        return {
            **impl.summary(),
            "running": self._task is not None and not self._task.done(),
            "errors": self.errors,
            "sessions_swept": self.sessions_swept,
            "tiers_expired": self.tiers_expired,
        }

    async def metrics(self) -> dict[str, dict[str, float]]:
        """What was exported, as ``{metric: {"tag=value": value}}`` (counters as totals)."""
        return (await self._ensure()).metrics.snapshot()

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        if self._sender is not None:
            await self._sender.close()
            self._sender = None
        if self._tier_sender is not None:
            await self._tier_sender.close()
            self._tier_sender = None
        if self._emit is not None:
            from actors.lazy import drain_emitter

            await drain_emitter(self._emit)
        return await self.status()


def get_monitor(settings: Settings, **options: Any) -> Any:
    """Start (or find) ``alerts:monitor``; it polls from the start.

    ``options``: ``interval_s``, ``rules`` (:class:`core.alerts.AlertRules`), ``exchanges``,
    ``shards``, ``key_prefix`` (of its Redis keys), and Ray actor options (``lifetime``,
    ``resources``, …).
    """
    init = {
        k: options.pop(k)
        for k in ("interval_s", "rules", "exchanges", "shards", "key_prefix")
        if k in options
    }
    return AlertMonitorActor.options(  # type: ignore[attr-defined]
        name=MONITOR_NAME, namespace=settings.ray.namespace, get_if_exists=True, **options
    ).remote(settings, **init)
