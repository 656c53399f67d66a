"""The demo's outbound webhook receiver: a local HTTP server standing in for the tools of the
demo's Premium users (docs/outbound-webhooks.md).

:class:`DemoWebhooks` runs an aiohttp server on loopback in a thread of its own, registers one
endpoint (``http://127.0.0.1:PORT/u/<user id>``; the demo allows ``127.0.0.0/8`` through
``ARBFLOW_OUTBOUND__ALLOW_PRIVATE``) for each simulated user of the Premium tier and above
once the simulation has planned them, verifies every POST's signature with that endpoint's
secret, answers 503 to the first attempt of every fifth delivery (so the demo shows retries)
and counts what it got. :meth:`table` is the summary the demo prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from core.accounts import Tier
from core.outbound import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from core.settings import Settings

DEMO_RANGES = ["127.0.0.0/8"]
RETRY_EVERY = 5
"""Every fifth delivery is answered 503 at its first attempt (then delivered on a retry)."""


def with_demo_webhooks(settings: Settings) -> Settings:
    """The demo's settings: loopback allowed for its receiver (unless set), fast retries."""
    outbound = settings.outbound
    update: dict[str, Any] = {"retry_base_s": min(outbound.retry_base_s, 0.5), "refresh_s": 1.0}
    if not outbound.allow_private:
        update["allow_private"] = DEMO_RANGES
    return settings.model_copy(update={"outbound": outbound.model_copy(update=update)})


@dataclass
class ReceiverStats:
    posts: int = 0
    verified: int = 0
    deliveries: set[str] = field(default_factory=set)
    answered_503: int = 0
    users: set[int] = field(default_factory=set)
    endpoints: int = 0
    schemas: set[str] = field(default_factory=set)


class DemoWebhooks:
    """The receiver and the registration (module docstring). ``plans`` returns the simulated
    users once planned (``TelegramDemo.plans``)."""

    def __init__(self, settings: Settings, plans: Callable[[], Sequence[Any]]) -> None:
        self.settings = settings
        self.plans = plans
        self.stats = ReceiverStats()
        self.secrets: dict[int, str] = {}
        self.port = 0
        self._seen: set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-webhooks", daemon=True)
        self.error: str | None = None

    # -- life ------------------------------------------------------------------------------
    def start(self) -> DemoWebhooks:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except Exception as exc:  # the demo goes on without it; the table says why
            self.error = f"{type(exc).__name__}: {exc}"[:200]
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/u/{uid}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._ready.set()
        try:
            await self._register_when_planned()
            await asyncio.to_thread(self._stop.wait)
        finally:
            await runner.cleanup()

    # -- registration ----------------------------------------------------------------------
    async def _register_when_planned(self) -> None:
        from state.redis import redis_client
        from state.webhooks import RedisWebhookStore

        deadline = time.monotonic() + 120
        while not self.plans() and time.monotonic() < deadline and not self._stop.is_set():  # noqa: ASYNC110 - the simulation's list, another thread's
            await asyncio.sleep(0.2)
        wanted = [p for p in self.plans() if Tier(p.tier).rank >= Tier(self.settings.outbound.min_tier).rank]
        if not wanted:
            return
        client = redis_client(self.settings.redis.url)
        try:
            store = RedisWebhookStore(client)
            now = datetime.now(UTC)
            for plan in wanted:
                url = f"http://127.0.0.1:{self.port}/u/{plan.id}"
                endpoint = await store.add(plan.id, url, now)  # as the user's own /webhooks add
                if endpoint is not None:
                    self.secrets[plan.id] = endpoint.secret
                    self.stats.endpoints += 1
        finally:
            await client.aclose()

    # -- the receiver ----------------------------------------------------------------------
    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.read()
        uid = int(request.match_info["uid"])
        delivery = request.headers.get(DELIVERY_HEADER, "")
        s = self.stats
        s.posts += 1
        if verify(self.secrets.get(uid, ""), body, request.headers.get(SIGNATURE_HEADER)):
            s.verified += 1
        else:
            return web.Response(status=401)
        if delivery not in self._seen:
            self._seen.add(delivery)
            if len(self._seen) % RETRY_EVERY == 0:
                s.answered_503 += 1
                return web.Response(status=503)
        s.deliveries.add(delivery)
        s.users.add(uid)
        with contextlib.suppress(ValueError):
            s.schemas.add(str(json.loads(body).get("schema")))
        return web.Response(status=200)

    # -- the summary -----------------------------------------------------------------------
    def table(self, outbound: dict[str, Any] | None = None) -> Table:
        s, o = self.stats, outbound or {}
        table = Table(title="Outbound webhooks (a local receiver for the Premium users)")
        table.add_column("figure")
        table.add_column("value", justify="right")
        rows = [
            ("endpoints registered", s.endpoints),
            ("POSTs received", s.posts),
            ("signatures verified", s.verified),
            ("deliveries (unique ids)", len(s.deliveries)),
            ("users reached", len(s.users)),
            ("503 answered (then retried)", s.answered_503),
            (
                "sender: delivered / retries / failed",
                f"{o.get('delivered', 0)} / {o.get('retries', 0)} / {o.get('failed', 0)}",
            ),
            ("schema", ", ".join(sorted(s.schemas)) or "-"),
        ]
        if self.error:
            rows.append(("receiver error", self.error))
        for name, value in rows:
            table.add_row(name, str(value))
        return table


__all__ = ["DEMO_RANGES", "DemoWebhooks", "ReceiverStats", "with_demo_webhooks"]
