"""The local Telegram Bot API sandbox (`arbflow sandbox`). See docs/sandbox.md.

- `TelegramSandbox(tokens, config=SandboxConfig(...), clock=...)`: the state and the aiohttp app;
- `await start_sandbox(port=0, ...) -> SandboxHandle` (also an async context manager) for tests;
- `run_sandbox(...)` / `main(port, host, token)`: run until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from serve.standins.sandbox.server import TelegramSandbox
from serve.standins.sandbox.state import (
    DEFAULT_TOKEN,
    DEFAULT_USERNAME,
    SECRET_HEADER,
    SandboxChat,
    SandboxConfig,
    SandboxUser,
    entities_to_html,
)

__all__ = [
    "DEFAULT_TOKEN",
    "DEFAULT_USERNAME",
    "SECRET_HEADER",
    "SandboxChat",
    "SandboxConfig",
    "SandboxHandle",
    "SandboxUser",
    "TelegramSandbox",
    "entities_to_html",
    "keep_heap_settled",
    "main",
    "run_sandbox",
    "sandbox_tokens",
    "start_sandbox",
]


def sandbox_tokens(n: int) -> list[str]:
    """``n`` sandbox bot tokens (a pool, docs/bot-pool.md): :data:`DEFAULT_TOKEN` first, then
    ``7000000002:SANDBOX-arbflow-local-token-2`` … (bot ids 7000000001 … 700000000n)."""
    if n < 1:
        raise ValueError("at least one bot")
    head, _, secret = DEFAULT_TOKEN.partition(":")
    return [DEFAULT_TOKEN] + [f"{int(head) + i}:{secret}-{i + 1}" for i in range(1, n)]


@dataclass
class SandboxHandle:
    """A running sandbox: ``base_url`` is what goes into ``ARBFLOW_TELEGRAM__API_BASE``."""

    sandbox: TelegramSandbox
    runner: web.AppRunner
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        return self.sandbox.tokens[0]

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat"

    def method_url(self, method: str, token: str | None = None) -> str:
        return f"{self.base_url}/bot{token or self.token}/{method}"

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def __aenter__(self) -> SandboxHandle:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


async def start_sandbox(
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    tokens: Sequence[str] | Mapping[str, str] | None = None,
    config: SandboxConfig | None = None,
    clock: Callable[[], float] | None = None,
    **options: Any,
) -> SandboxHandle:
    """Start a sandbox on `host:port` (0 = a free port). `options` are `SandboxConfig` fields."""
    config = replace(config or SandboxConfig(), **options)
    sandbox = TelegramSandbox(tokens, config=config, **({"clock": clock} if clock else {}))
    runner = web.AppRunner(sandbox.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple):
            bound = int(address[1])
            break
    return SandboxHandle(sandbox, runner, host, bound)


SETTLE_EVERY_S = 1.0
"""How often a sandbox process of its own moves what is alive out of the collector's reach."""


async def keep_heap_settled(every_s: float = SETTLE_EVERY_S) -> None:
    """For a process that is only a sandbox (``run_sandbox``): every ``every_s``, freeze what
    is alive. The sandbox keeps every request it answered; with tens of thousands kept, a
    full collection paused the server for ~100 ms every few seconds, and the requests that
    waited were stamped as arriving together after it — bunched into one second, refused
    with 429s Telegram would not send. Young collections go on as usual (garbage dies young
    here: what lives, the records, lives until the process ends)."""
    while True:
        await asyncio.sleep(every_s)
        gc.freeze()


def run_sandbox(
    host: str = "127.0.0.1",
    port: int = 8081,
    tokens: Sequence[str] | Mapping[str, str] | None = None,
    *,
    webhook_timeout: float = 10.0,
    global_rate: float = 30.0,
    paid_broadcast: bool = False,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until Ctrl-C, announcing the base URL, a token and the chat page."""

    async def serve() -> None:
        handle = await start_sandbox(
            port,
            host,
            tokens=tokens,
            webhook_timeout=webhook_timeout,
            global_rate=global_rate,
            paid_broadcast=paid_broadcast,
        )
        settling = asyncio.get_running_loop().create_task(keep_heap_settled())
        try:
            names = ", ".join(f"@{b.user.username}" for b in handle.sandbox.bots.values())
            plural = "s" if len(handle.sandbox.bots) > 1 else ""
            announce(f"Telegram sandbox at {handle.base_url}  (bot{plural} {names})")
            announce(f"  ARBFLOW_TELEGRAM__API_BASE={handle.base_url}")
            if len(handle.sandbox.tokens) > 1:  # a pool of bots (docs/bot-pool.md)
                announce(f"  ARBFLOW_TELEGRAM__TOKENS={','.join(handle.sandbox.tokens)}")
            else:
                announce(f"  ARBFLOW_TELEGRAM__TOKEN={handle.token}")
            announce(f"  chat page: {handle.chat_url}")
            announce(f"  control API: {handle.base_url}/sandbox/stats   (Ctrl-C to stop)")
            await asyncio.Event().wait()
        finally:
            settling.cancel()
            await handle.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def main(
    port: int = 8081, host: str = "127.0.0.1", token: str | Sequence[str] | None = None, bots: int = 1
) -> None:
    """Entry for ``arbflow sandbox [--port P] [--token T …] [--bots N]``: the bots of ``token``
    (one or several), else ``bots`` sandbox bots (:func:`sandbox_tokens`)."""
    tokens = [token] if isinstance(token, str) else list(token or [])
    run_sandbox(host, port, tokens or (sandbox_tokens(bots) if bots > 1 else None))
