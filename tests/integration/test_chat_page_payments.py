"""The sandbox's chat page in a real browser pays an invoice: ``/start``, ``/subscription``,
the "Buy Basic" button, then the invoice's "Pay" button; the real bot (long-polling the
sandbox) answers the checkout and thanks the user. The screenshot is kept in
``test-artifacts/chat_pay.png``. Skipped without ``/usr/bin/chromium`` (except in CI)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from serve.standins.sandbox import SandboxHandle
from tests.integration import test_chat_page_browser as page_test
from tests.integration.test_chat_page_browser import ARTIFACTS, WELCOME, headless_chromium

chromium = page_test.chromium
sandbox = page_test.sandbox
polling_bot = page_test.polling_bot


def _click_button(label_start: str) -> str:
    return (
        "(() => { const b = [...document.querySelectorAll('#messages button')]"
        f".filter((x) => x.textContent.startsWith({json.dumps(label_start)})).pop();"
        " if (!b) return false; b.click(); return true; })()"
    )


def _type(text: str) -> str:
    return (
        f"(() => {{ const t = document.getElementById('text'); t.focus(); t.value = {json.dumps(text)};"
        " document.getElementById('send').click(); return true; })()"
    )


def _messages_include(*parts: str) -> str:
    checks = " && ".join(f"t.includes({json.dumps(p)})" for p in parts)
    return (
        f"(() => {{ const t = document.getElementById('messages').innerText; return {checks} ? t : ''; }})()"
    )


async def test_chat_page_pays_an_invoice_in_stars(
    chromium: Path, sandbox: SandboxHandle, polling_bot: None, tmp_path: Path
) -> None:
    async with headless_chromium(chromium, tmp_path / "chromium") as page:
        await page.call("Page.enable")
        await page.call("Page.navigate", url=sandbox.chat_url)
        await page.until(
            "the chat page with its user",
            "document.readyState === 'complete' && document.getElementById('user').options.length > 0",
        )
        await page.js(_type("/start"))
        await page.until("the welcome", _messages_include(WELCOME))
        await page.js(_type("/subscription"))
        await page.until("the tiers with prices", _messages_include("Your tier: Free", "250 ⭐ for 30 days"))
        await page.until("the buy button", _click_button("Buy Basic"))
        await page.until("the invoice", _messages_include("arbflow Basic", "Pay ⭐250"))
        await page.until("the pay button", _click_button("Pay ⭐250"))
        text = await page.until(
            "the thanks", _messages_include("You paid 250 ⭐", "Thank you!"), timeout_s=30
        )
        shot = await page.call("Page.captureScreenshot", format="png")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "chat_pay.png").write_bytes(base64.b64decode(shot["data"]))
    assert "Basic" in text
    checkouts = [r for r in sandbox.sandbox.records if r["method"] == "answerPreCheckoutQuery"]
    assert [r["status"] for r in checkouts] == [200]
