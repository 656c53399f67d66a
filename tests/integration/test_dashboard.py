"""``GET /dashboard``, ``GET /api/dashboard`` and ``/static/…`` through the real Serve app.

The app runs on a local Ray (``ray_session``) and the session's Redis, with its lake on
the sample lake of ``tests/unit/pipeline/test_analytics.py`` written around the wall
clock (the dashboard's window ends now). :func:`deploy_dashboard` is shared with the
browser test.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from serve.dashboard import STATIC_DIR, dashboard_data
from serve.handlers import RedisRecorder
from serve.runtime import EmbeddedRedis, free_port
from tests.unit.pipeline.test_analytics import NOW, sample_lake

TOKEN = "dashboard-admin-token"
EXPERIMENT = {"name": "layout", "variants": [{"name": "a"}, {"name": "b", "layout": "compact"}]}
SHARDS = 1


@dataclass
class Dashboard:
    url: str
    lake_dir: Path
    now: datetime


@contextlib.contextmanager
def deploy_dashboard(redis_url: str, tmp: Path) -> Iterator[Dashboard]:
    """The Serve app on a free port over a sample lake written around now."""
    with warnings.catch_warnings():  # Ray Serve's own pydantic models use deprecated Field kwargs
        warnings.simplefilter("ignore", DeprecationWarning)
        from ray import serve

        from serve.app import build_app, shutdown_shards

    now = datetime.now(UTC)
    lake_dir = tmp / "lake"
    sample_lake(lake_dir, now)
    settings = Settings.model_validate(
        {
            "data_dir": tmp / "var",
            "redis": {"url": redis_url},
            "lake": {"url": str(lake_dir)},
            "ray": {"namespace": "arbflow-test", "num_cpus": 4},
            "experiments": [EXPERIMENT],
        }
    )
    run_id = uuid.uuid4().hex[:8]
    prefix = f"test:{run_id}:dash"
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = build_app(
            {
                "settings": settings,
                "shards": SHARDS,
                "shard_prefix": prefix,
                "handler": RedisRecorder(f"test:{run_id}:handled"),
                "admin_token": TOKEN,
                "webhook_secret": "dashboard-test-secret",
                "dedup_prefix": f"test:{run_id}",
                "opportunities_prefix": f"test:{run_id}:opps",
            }
        )
        serve.run(app, name="dashboard", route_prefix="/")
        yield Dashboard(f"http://127.0.0.1:{port}", lake_dir, now)
    finally:
        serve.shutdown()
        shutdown_shards(settings, SHARDS, prefix)


@pytest.fixture(scope="module")
def deployed(
    ray_session: None, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    with deploy_dashboard(redis_server.url, tmp_path_factory.mktemp("dashboard")) as d:
        yield d


@pytest.fixture
def http(deployed: Dashboard) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployed.url, timeout=30) as client:
        yield client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- without Serve ---------------------------------------------------------------------------


def test_dashboard_data_from_the_sample_lake(tmp_path: Path) -> None:
    lake = sample_lake(tmp_path / "lake")
    data = dashboard_data(lake, window=timedelta(hours=1), now=NOW)
    assert data["generated_at"] == "2025-06-02T12:30:00.000Z" and data["window_s"] == 3600
    assert (data["summary"]["sent"], data["summary"]["throttled_429"]) == (4, 2)
    minutes = data["deliveries_per_minute"]
    assert len(minutes) == 61 and minutes[0]["minute"] == "2025-06-02T11:30:00.000Z"
    assert sum(m["sent"] for m in minutes) == 4 and sum(m["throttled_429"] for m in minutes) == 2
    assert {m["minute"]: m["sent"] for m in minutes if m["sent"]} == {
        "2025-06-02T12:20:00.000Z": 1,
        "2025-06-02T12:21:00.000Z": 2,
        "2025-06-02T12:28:00.000Z": 1,
    }
    assert [r["kind"] for r in data["opportunities_by_kind"]] == ["spot_spread", "funding_rate", "technical"]
    spot = data["opportunities_by_kind"][0]
    # the 300,000 bps collision of the sample lake is flagged: counted apart, in no edge
    assert (spot["opened"], spot["pushable"], spot["flagged"], spot["max_net"]) == (4, 2, 2, 9.0)
    assert spot["unit"] == "net bps (instant)" and data["opportunities_by_kind"][1]["unit"] == "net % APR"
    edges = data["opportunities_by_edge"]
    assert [r["opportunities"] for r in edges if r["kind"] == "spot_spread"] == [0, 1, 1, 0, 0, 0, 0]
    assert [r["opportunities"] for r in edges if r["kind"] == "funding_rate"] == [0, 0, 1, 0, 1, 0, 0]
    assert {(r["flag"], r["opportunities"]) for r in data["flagged_opportunities"]} == {
        ("implausible_spread", 1),
        ("low_confidence", 1),
    }
    assert [r["reached"] for r in data["onboarding_funnel"]] == [4, 3, 3, 3, 2, 2, 2, 2, 2]
    assert data["latency_percentiles"][0] == {
        "tier": "all",
        "n": 4,
        "p50_ms": 250.0,
        "p90_ms": pytest.approx(790.0),
        "p99_ms": pytest.approx(979.0),
        "max_ms": 1000.0,
    }
    fresh = data["data_freshness"]
    assert [(r["exchange"], r["age_s"]) for r in fresh] == [("binance", 2.0), ("okx", 30.0)]
    assert fresh[0]["last_ts"] == "2025-06-02T12:29:58.000Z"


def test_static_files_are_local_only() -> None:
    page = (STATIC_DIR / "dashboard.html").read_text()
    assert 'src="static/dashboard.js"' in page and 'href="static/dashboard.css"' in page
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        body = (STATIC_DIR / name).read_text()
        # nothing fetched from elsewhere (the SVG namespace URI is a name, not a request)
        assert "https://" not in body and "//cdn" not in body
        assert body.replace("http://www.w3.org/2000/svg", "").count("http://") == 0


# -- through Serve ---------------------------------------------------------------------------


def test_dashboard_page_needs_the_admin_token(http: httpx.Client) -> None:
    for params, headers in (({}, {}), ({"token": "nope"}, {}), ({}, {"Authorization": "Bearer nope"})):
        resp = http.get("/dashboard", params=params, headers=headers)
        assert resp.status_code == 401 and "admin token" in resp.text
    for params, headers in (({"token": TOKEN}, {}), ({}, AUTH)):
        resp = http.get("/dashboard", params=params, headers=headers)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        assert "static/dashboard.js" in resp.text and 'id="chart-deliveries"' in resp.text
        assert 'id="experiments"' in resp.text  # the per-variant charts go there


def test_api_dashboard(deployed: Dashboard, http: httpx.Client) -> None:
    assert http.get("/api/dashboard").status_code == 401
    assert http.get("/api/dashboard", headers={"Authorization": "Bearer nope"}).status_code == 401
    resp = http.get("/api/dashboard", headers=AUTH)
    assert resp.status_code == 200 and resp.headers["cache-control"] == "no-store"
    data = resp.json()
    assert data["summary"]["sent"] == 4 and data["summary"]["engagement_rate"] == 0.75
    assert sum(m["sent"] for m in data["deliveries_per_minute"]) == 4
    assert {r["exchange"] for r in data["data_freshness"]} == {"binance", "okx"}
    by_query = http.get("/api/dashboard", params={"token": TOKEN, "window": "24h"}).json()
    assert by_query["window_s"] == 86400 and by_query["onboarding_funnel"][0]["reached"] == 4
    assert {r["exchange"] for r in by_query["data_freshness"]} == {"binance", "bybit", "okx"}
    short = http.get("/api/dashboard", params={"window": "5m"}, headers=AUTH).json()
    assert short["summary"]["sent"] == 1 and len(short["deliveries_per_minute"]) == 6
    bad = http.get("/api/dashboard", params={"window": "soon"}, headers=AUTH)
    assert bad.status_code == 400 and "duration" in bad.json()["error"]


def test_api_experiment_and_its_chart_data(deployed: Dashboard, http: httpx.Client) -> None:
    """``/api/experiments/<name>`` and the dashboard's per-variant data, over rows of the
    configured experiment written three hours ago (outside the default one-hour window)."""
    from core.settings import LakeSettings
    from pipeline.deliveries import deliveries_table, engagement_table
    from pipeline.lake import Lake
    from pipeline.sink import ParquetSink

    settings = LakeSettings(url=str(deployed.lake_dir))
    sink = ParquetSink(Lake.from_settings(settings), settings)
    at = datetime.now(UTC) - timedelta(hours=3)
    sent = [
        {"queued_at": at, "opportunity_id": f"x{k}", "chat_id": uid, "user_id": uid, "audience": "user",
         "status": "sent", "experiment": "layout", "variant": variant, "sent_at": at}
        for uid, variant in ((901, "a"), (902, "a"), (903, "b"), (904, "b"))
        for k in range(2)
    ]  # fmt: skip
    sink.add("deliveries", deliveries_table(sent))
    sink.add(
        "engagement",
        engagement_table([{"ts": at, "user_id": 903, "action": "push_button", "opportunity_id": "x0"}]),
    )
    sink.flush()
    assert http.get("/api/experiments/layout").status_code == 401
    resp = http.get("/api/experiments/layout", params={"since": "24h"}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["experiment"] == "layout" and body["control"] == "a"
    assert [(v["variant"], v["users"], v["pushes_sent"], v["engaged"]) for v in body["variants"]] == [
        ("a", 2, 4, 0),
        ("b", 2, 4, 1),
    ]
    missing = http.get("/api/experiments/nope", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["known"] == ["layout"]
    assert http.get("/api/experiments/layout", params={"since": "soon"}, headers=AUTH).status_code == 400
    data = http.get("/api/dashboard", params={"window": "24h"}, headers=AUTH).json()
    (chart,) = data["experiments"]
    assert chart["experiment"] == "layout" and chart["variants"][1]["engagement_rate"] == 0.25
    assert chart["variants"][1]["rate_low"] is not None and chart["verdicts"]
    assert http.get("/api/dashboard", headers=AUTH).json()["experiments"][0]["variants"][0]["users"] == 0


def test_static_route(http: httpx.Client) -> None:
    js = http.get("/static/dashboard.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "api/dashboard" in js.text
    assert http.get("/static/dashboard.css").headers["content-type"].startswith("text/css")
    for name in ("nope.js", "..%2Fapp.py", ".hidden.js", "dashboard.py"):
        assert http.get(f"/static/{name}").status_code == 404, name
