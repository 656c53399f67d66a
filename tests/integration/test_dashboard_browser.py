"""The dashboard in a real browser: Debian's headless chromium renders the charts with data.

The Serve app runs over a sample lake (:func:`tests.integration.test_dashboard.deploy_dashboard`);
chromium, driven over the DevTools protocol as in ``test_chat_page_browser.py``, opens
``/dashboard?token=…&refresh=1``, waits for the first poll of ``api/dashboard`` and checks
that every chart drew SVG marks carrying the lake's figures; then more deliveries land in
the lake and the page shows them without a reload (live refresh), and the configured
experiment's card draws its variants' rates with interval whiskers once its rows land. The screenshot is kept
in the test's tmp dir and in ``var/artifacts/dashboard.png``.

Without ``/usr/bin/chromium`` the test is skipped, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from core.settings import LakeSettings
from pipeline.deliveries import deliveries_table, engagement_table
from pipeline.lake import Lake
from pipeline.sink import ParquetSink
from serve.runtime import EmbeddedRedis
from tests.integration.test_chat_page_browser import CHROMIUM, headless_chromium
from tests.integration.test_dashboard import TOKEN, Dashboard, deploy_dashboard

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "artifacts"
CHARTS = (
    "chart-opp-kind",
    "chart-opp-spot",
    "chart-opp-funding",
    "chart-flagged",
    "chart-funnel",
    "chart-latency",
    "chart-freshness",
)


@pytest.fixture
def browser() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"{CHROMIUM} is missing: `make setup` installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is missing (`make setup` or `apt-get install chromium`)")
    return CHROMIUM


@pytest.fixture(scope="module")
def deployed(
    ray_session: None, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    with deploy_dashboard(redis_server.url, tmp_path_factory.mktemp("dashboard-browser")) as d:
        yield d


def _marks(chart: str) -> str:
    """JS: the data values of a chart's SVG bars and dots."""
    return (
        f"Array.from(document.querySelectorAll('#{chart} svg .bar, #{chart} svg .dot'))"
        ".map(e => Number(e.getAttribute('data-value')))"
    )


def _tile(label: str) -> str:
    return f"(document.querySelector('.tile[data-figure={json.dumps(label)}] b') || {{}}).textContent"


async def test_dashboard_renders_charts_and_refreshes(
    browser: Path, deployed: Dashboard, tmp_path: Path
) -> None:
    url = f"{deployed.url}/dashboard?token={TOKEN}&refresh=1&window=24h"
    async with headless_chromium(browser, tmp_path / "chromium") as page:
        await page.call(
            "Emulation.setDeviceMetricsOverride", width=1280, height=1500, deviceScaleFactor=1, mobile=False
        )
        await page.call("Page.enable")
        await page.call("Page.navigate", url=url)
        await page.until(
            "the first poll of api/dashboard",
            # right after navigate the old document may still be there, or no body yet
            "!!document.body && document.body.dataset.state === 'ok'"
            " && Number(document.body.dataset.updates) >= 1",
        )
        # every chart drew marks, with the lake's figures on them
        for chart in CHARTS:
            values = await page.js(_marks(chart))
            assert values and max(values) > 0, chart
        assert sorted(await page.js(_marks("chart-opp-kind")))[-1] == 4  # spot spreads opened
        # edges per kind in their unit, over pushable ones: the 300,000 bps collision is not there
        spot_max = await page.js(
            "document.querySelector('#table-edges tr[data-kind=spot_spread] td[data-column=max]').textContent"
        )
        assert spot_max == "9"
        units = await page.js(
            "Array.from(document.querySelectorAll('#table-edges td.unit')).map(e => e.textContent)"
        )
        assert units == ["net bps (instant)", "net % APR", "none (signal)"]
        flagged = await page.js(
            "Array.from(document.querySelectorAll('#chart-flagged .bar'))"
            ".map(e => e.getAttribute('data-category'))"
        )
        assert sorted(set(flagged)) == ["implausible_spread", "low_confidence"]
        funnel = await page.js(_marks("chart-funnel"))
        assert funnel == [4, 3, 3, 3, 2, 2, 2, 2, 2]
        fresh = await page.js(
            "Array.from(document.querySelectorAll('#chart-freshness .bar'))"
            ".map(e => e.getAttribute('data-category'))"
        )
        assert fresh == ["binance", "bybit", "okx"]
        lines = await page.js("document.querySelectorAll('#chart-deliveries svg polyline.line').length")
        assert lines == 4
        assert sum(await page.js(_marks("chart-deliveries"))) > 0
        assert await page.js(_tile("sent")) == "4"
        assert await page.js(_tile("engagement")) == "75.0%"

        # live: new deliveries in the lake show up on the next polls, without a reload
        settings = LakeSettings(url=str(deployed.lake_dir))
        sink = ParquetSink(Lake.from_settings(settings), settings)
        at = deployed.now - timedelta(seconds=30)
        sink.add(
            "deliveries",
            deliveries_table(
                {
                    "queued_at": at,
                    "sent_at": at,
                    "opportunity_id": "o9",
                    "chat_id": 100 + i,
                    "audience": "user",
                    "status": "sent",
                    "tier": "premium",
                    "latency_ms": 50.0,
                }
                for i in range(3)
            ),
        )
        sink.flush()
        await page.until("the new deliveries on the page", f"{_tile('sent')} === '7'")

        # the configured experiment's card: empty until its users get pushes, then one bar per
        # variant (its engagement rate) with the 95% interval as a whisker
        assert await page.js("!!document.querySelector('#chart-exp-layout .plot svg')")
        sink.add(
            "deliveries",
            deliveries_table(
                {
                    "queued_at": at,
                    "sent_at": at,
                    "opportunity_id": f"e{k}",
                    "chat_id": uid,
                    "user_id": uid,
                    "audience": "user",
                    "status": "sent",
                    "experiment": "layout",
                    "variant": "a" if uid % 2 else "b",
                }
                for uid in range(300, 306)
                for k in range(2)
            ),
        )
        sink.add(
            "engagement",
            engagement_table(
                {"ts": at, "user_id": uid, "action": "push_button", "opportunity_id": "e0"}
                for uid in (300, 301, 302)
            ),
        )
        sink.flush()
        await page.until(
            "the experiment's bars", "document.querySelectorAll('#chart-exp-layout svg .bar').length === 2"
        )
        rates = await page.js(_marks("chart-exp-layout"))
        assert sorted(round(r, 1) for r in rates) == [16.7, 33.3]  # a: 1 of 6 pushes, b: 2 of 6
        assert await page.js("document.querySelectorAll('#chart-exp-layout .whisker').length") == 6
        verdict = await page.js("document.querySelector('#chart-exp-layout .verdict').textContent")
        assert "b vs a" in verdict or "b engages" in verdict, verdict
        shot = await page.call("Page.captureScreenshot", format="png")
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "dashboard.png").write_bytes(png)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "dashboard.png").write_bytes(png)
