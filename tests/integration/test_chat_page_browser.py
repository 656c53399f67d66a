"""The sandbox's chat page in a real browser: Debian's headless chromium completes ``/start``.

The sandbox runs in the test's event loop; the real bot (``bot.app`` / ``bot.deps`` on
the test's own Redis database) long-polls it with aiogram's dispatcher, as ``arbflow bot
--polling`` does. Chromium is driven over the Chrome DevTools Protocol with aiohttp's
websocket client (no extra dependencies): it opens ``<sandbox>/chat``, types ``/start``
into ``#text``, clicks ``#send`` and waits for the bot's welcome in ``#messages``. The
screenshot is kept in ``test-artifacts/chat_start.png``.

``make setup`` installs chromium; without ``/usr/bin/chromium`` the test is skipped, except
in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import allowed_updates, build_dispatcher
from bot.deps import NullEventSink, build_deps
from core.settings import MarketSettings, Settings, TelegramSettings
from notify.client import build_bot
from serve.standins.sandbox import SandboxHandle, start_sandbox

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WELCOME = "You're opted in"  # notify.texts.started(...) for a first /start


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if _in_ci():
            pytest.fail(f"{CHROMIUM} is missing: `make setup` installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (`make setup` or `apt-get install chromium`)")
    return CHROMIUM


class DevTools:
    """A minimal Chrome DevTools Protocol client on one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, timeout_s: float = 15.0, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        async with asyncio.timeout(timeout_s):
            while True:
                msg = await self.ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise RuntimeError(f"DevTools connection closed during {method}: {msg.type}")
                data = json.loads(msg.data)
                if data.get("id") != call_id:
                    continue  # an event
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return dict(data.get("result", {}))

    async def js(self, expression: str) -> Any:
        out = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression!r} raised: {out['exceptionDetails']}")
        return out["result"].get("value")

    async def until(self, what: str, expression: str, timeout_s: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
            await asyncio.sleep(0.1)


async def _devtools_port(user_data: Path, proc: asyncio.subprocess.Process, timeout_s: float = 20.0) -> int:
    """Chromium writes the port it picked (``--remote-debugging-port=0``) to ``DevToolsActivePort``."""
    path = user_data / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(path.read_text().splitlines()[0])
        await asyncio.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


@contextlib.asynccontextmanager
async def headless_chromium(binary: Path, user_data: Path) -> AsyncIterator[DevTools]:
    args = [
        str(binary),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=900,700",
        f"--user-data-dir={user_data}",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        port = await _devtools_port(user_data, proc)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t.get("type") == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield DevTools(ws)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxHandle]:
    ticks = itertools.count()
    async with await start_sandbox(port=0, clock=lambda: next(ticks) * 100.0) as sb:
        yield sb


@pytest.fixture
async def polling_bot(sandbox: SandboxHandle, isolated_redis_url: str, tmp_path: Path) -> AsyncIterator[None]:
    """The real bot long-polling the sandbox (what ``arbflow bot --polling`` runs)."""
    settings = Settings(
        data_dir=tmp_path / "var",
        telegram=TelegramSettings(token=sandbox.token, api_base=sandbox.base_url),
        market=MarketSettings(exchanges=["binance", "bybit", "okx"]),
    )
    deps = await build_deps(settings, isolated_redis_url, events=NullEventSink())
    bot = build_bot(settings)
    dp = build_dispatcher(deps)
    task = asyncio.create_task(
        dp.start_polling(bot, allowed_updates=allowed_updates(dp), handle_signals=False, polling_timeout=1)
    )
    try:
        yield
    finally:
        await dp.stop_polling()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        await bot.session.close()
        await deps.aclose()


async def test_chat_page_completes_start(
    chromium: Path, sandbox: SandboxHandle, polling_bot: None, tmp_path: Path
) -> None:
    async with headless_chromium(chromium, tmp_path / "chromium") as page:
        await page.call("Page.enable")
        await page.call("Page.navigate", url=sandbox.chat_url)
        # the page picked (created) its user: Alice
        await page.until(
            "the chat page with its user",
            "document.readyState === 'complete' && document.getElementById('user').options.length > 0",
        )
        user = await page.js("document.getElementById('user').value")
        await page.js(
            "(() => { const t = document.getElementById('text'); t.focus(); t.value = '/start';"
            " document.getElementById('send').click(); return true; })()"
        )
        text = await page.until(
            "the bot's welcome in #messages",
            f"(() => {{ const t = document.getElementById('messages').innerText;"
            f" return t.includes({json.dumps(WELCOME)}) && t.includes('1/7') ? t : ''; }})()",
        )
        shot = await page.call("Page.captureScreenshot", format="png")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "chat_start.png").write_bytes(base64.b64decode(shot["data"]))

    assert "/start" in text  # the user's own message is shown too
    assert "Hi Alice" in text and WELCOME in text
    # the welcome came from the bot over the Bot API, to the page's user
    sends = [r for r in sandbox.sandbox.records if r["method"] == "sendMessage"]
    assert sends and all(int(r["chat_id"]) == int(user) and r["status"] == 200 for r in sends)
    assert any(WELCOME in r["response"]["result"]["text"] for r in sends)
