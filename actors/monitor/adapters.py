"""The alert monitor's adapters: the named actors asked through Ray, the state and outbox
in Redis, the notices sent through an aiogram ``Bot``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import ray

from actors.monitor.ports import OutboxItem, SendVerdict
from core.alerts import (
    AlertNotice,
    AlertState,
)

log = logging.getLogger(__name__)

STATE_KEY = "alerts:state"
OUTBOX_KEY = "alerts:outbox"
LOG_KEY = "alerts:log"
LOG_KEEP = 1_000
ASK_TIMEOUT_S = 3.0


class RayStatsSource:
    """Asks named actors in one namespace; caches handles and forgets them when they fail."""

    def __init__(
        self,
        namespace: str,
        timeout_s: float = ASK_TIMEOUT_S,
        hosted: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.hosted = dict(hosted or {})
        """Names that live in a host actor: ``md:binance`` → (``md:host:00``, ``binance``)."""
        self._handles: dict[str, Any] = {}

    async def ask(self, name: str, method: str = "stats") -> dict[str, Any] | None:
        actor = name
        args: tuple[str, ...] = ()
        if name in self.hosted:
            actor, key = self.hosted[name]
            args = (key,)
        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = ray.get_actor(actor, namespace=self.namespace)
            except ValueError:
                return None
            self._handles[name] = handle
        try:
            ref = getattr(handle, method).remote(*args)
            return dict(await asyncio.wait_for(asyncio.wrap_future(ref.future()), self.timeout_s))
        except (TimeoutError, ray.exceptions.ActorUnavailableError):
            return None  # restarting or busy: ask again next time
        except Exception as exc:  # dead for good, or replaced: look it up by name again
            log.debug("monitor: %s.%s failed: %r", name, method, exc)
            self._handles.pop(name, None)
            return None


class RedisAlertStore:
    """The alert state and outbox in Redis (one JSON value each) and a capped log of notices."""

    def __init__(self, client: Any, prefix: str = "") -> None:
        self.client = client
        self.state_key = prefix + STATE_KEY
        self.outbox_key = prefix + OUTBOX_KEY
        self.log_key = prefix + LOG_KEY

    async def load(self) -> tuple[AlertState, list[OutboxItem]]:
        state, outbox = await self.client.mget([self.state_key, self.outbox_key])
        items = [OutboxItem.from_dict(d) for d in json.loads(outbox)] if outbox else []
        return AlertState.from_json(state), items

    async def save(self, state: AlertState, outbox: Sequence[OutboxItem]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.state_key, state.to_json())
        pipe.set(self.outbox_key, json.dumps([item.to_dict() for item in outbox]))
        await pipe.execute()

    async def record(self, notices: Sequence[AlertNotice]) -> None:
        if not notices:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.lpush(self.log_key, *[json.dumps(n.to_dict()) for n in notices])
        pipe.ltrim(self.log_key, 0, LOG_KEEP - 1)
        await pipe.execute()


class PoolAlertSender:
    """A :class:`TelegramAlertSender` per bot of a pool (docs/bot-pool.md): each notice goes
    through the bot its chat talks to (``state.bots``; a bot may only write to chats that
    started it), built on first use; the primary for a chat bound to none."""

    def __init__(self, settings: Any, client: Any) -> None:
        from state.bots import RedisBotBindings

        self.settings = settings
        self.bindings = RedisBotBindings(client)
        self.senders: dict[str, TelegramAlertSender] = {}

    async def send(self, chat_id: int, text: str) -> SendVerdict:
        token = await self.bindings.token_for(chat_id, self.settings.telegram.pool)
        sender = self.senders.get(token)
        if sender is None:
            from notify.client import build_bot

            sender = self.senders[token] = TelegramAlertSender(build_bot(self.settings, token=token))
        return await sender.send(chat_id, text)

    async def close(self) -> None:
        for sender in self.senders.values():
            await sender.close()
        self.senders.clear()
        await self.bindings.client.aclose()


class TelegramAlertSender:
    """Sends an alert's HTML text through an aiogram ``Bot`` (Telegram or the sandbox)."""

    def __init__(self, bot: Any, timeout_s: float = 10.0) -> None:
        self.bot = bot
        self.timeout_s = timeout_s

    async def send(self, chat_id: int, text: str) -> SendVerdict:
        from aiogram.enums import ParseMode
        from aiogram.exceptions import (
            ClientDecodeError,
            TelegramAPIError,
            TelegramNetworkError,
            TelegramRetryAfter,
            TelegramServerError,
        )

        try:
            async with asyncio.timeout(self.timeout_s):
                await self.bot.send_message(chat_id, text, parse_mode=ParseMode.HTML)
        except (TelegramRetryAfter, TelegramServerError, TelegramNetworkError, TimeoutError) as exc:
            log.info("alert to %s: will retry: %s", chat_id, exc)
            return SendVerdict.RETRY
        except TelegramAPIError as exc:  # 400, 401, 403, 404: this chat cannot get it
            log.warning("alert to %s: gave up: %s", chat_id, exc)
            return SendVerdict.GAVE_UP
        except (ClientDecodeError, OSError) as exc:
            log.info("alert to %s: will retry: %r", chat_id, exc)
            return SendVerdict.RETRY
        return SendVerdict.SENT

    async def close(self) -> None:
        await self.bot.session.close()
