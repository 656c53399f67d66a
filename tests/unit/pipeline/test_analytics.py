"""Analytics over a small lake written through the real ParquetSink: exact figures.

:func:`sample_lake` is also the lake of the dashboard and ``arbflow report`` tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from bot.routers.common import STEP_OF
from core.accounts import OnboardingStep
from core.errors import LakeError
from core.settings import LakeSettings
from pipeline import analytics as an
from pipeline.deliveries import deliveries_table, engagement_table
from pipeline.lake import Lake
from pipeline.opportunities import OPPORTUNITIES
from pipeline.schemas import QUOTES
from pipeline.sink import ParquetSink
from state.audit import AUDIT
from state.sessions import SESSION_EVENTS

NOW = datetime(2025, 6, 2, 12, 30, tzinfo=UTC)
DAY = NOW - timedelta(hours=24)


def _quote(ts: datetime, exchange: str, symbol: str) -> dict[str, Any]:
    return {
        "ts": ts,
        "recv_ts": ts,
        "exchange": exchange,
        "symbol": symbol,
        "market_type": "spot",
        "bid": 100.0,
        "ask": 100.1,
    }


def _opp(
    oid: str,
    event: str,
    kind: str,
    net: float,
    at: datetime,
    *,
    pushable: bool = True,
    life: float | None = None,
    flags: str = "",
    details: str = "{}",
) -> dict[str, Any]:
    return {
        "ts": at,
        "opportunity_id": oid,
        "event": event,
        "kind": kind,
        "symbol": "BTC/USDT",
        "buy_exchange": "binance",
        "sell_exchange": "okx",
        "net_bps": net,
        "gross_bps": net + 10,
        "priority": "high",
        "pushable": pushable,
        "flags": flags,
        "detected_at": at,
        "opened_at": at,
        "lifetime_s": life,
        "reopened": False,
        "details": details,
    }


def _delivery(status: str, at: datetime, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "queued_at": at,
        "opportunity_id": kw.pop("oid", "o1"),
        "chat_id": kw.pop("chat", 1),
        "audience": "user",
        "status": status,
        "tier": kw.pop("tier", "free"),
        "kind": kw.pop("kind", "spot_spread"),
    }
    if status == "sent":
        row["sent_at"] = at + timedelta(seconds=1)
    row.update(kw)
    return row


def _session(ts: datetime, user: int, event: str, sid: str, seq: int = 1) -> dict[str, Any]:
    return {
        "ts": ts,
        "user_id": user,
        "event": event,
        "session_id": sid,
        "chat_id": user,
        "seq": seq,
        "session_started_at": ts,
    }


def _audit(ts: datetime, user: int, action: str, ok: bool = True) -> dict[str, Any]:
    return {"ts": ts, "actor_id": user, "chat_id": user, "action": action, "ok": ok, "detail": ""}


def sample_rows(now: datetime) -> dict[str, pa.Table]:
    """Known rows of every dataset the analytics read, around ``now`` (some older than a day)."""
    m = timedelta(minutes=1)
    old = now - timedelta(days=2)
    deliveries = [
        _delivery("sent", now - 10 * m, chat=1, latency_ms=100.0),
        _delivery("sent", now - 9 * m, chat=2, latency_ms=200.0),
        _delivery("sent", now - 9 * m, chat=3, tier="premium", kind="funding_rate", latency_ms=300.0),
        _delivery("sent", now - 2 * m, chat=3, tier="premium", latency_ms=1000.0),
        _delivery("skipped", now - 8 * m, chat=4, layer=2, reason="subscription.kind"),
        _delivery("skipped", now - 8 * m, chat=5, layer=2, reason="subscription.kind"),
        _delivery("skipped", now - 8 * m, chat=6, layer=4, reason="quota.day"),
        _delivery("retry", now - 7 * m, chat=1, reason="429"),
        _delivery("retry", now - 7 * m, chat=2, reason="429"),
        _delivery("retry", now - 7 * m, chat=2, reason="timeout"),
        _delivery("failed", now - 6 * m, chat=7, reason="bad request"),
        _delivery("expired", now - 6 * m, chat=8, reason="closed"),
        _delivery("blocked", now - 6 * m, chat=9),
        *(_delivery("queued", now - 11 * m, chat=c) for c in range(1, 6)),
        _delivery("sent", old, chat=1, latency_ms=99_999.0),  # outside the day
    ]
    engagement = [
        {
            "ts": now - 5 * m,
            "user_id": 1,
            "action": "push_button",
            "kind": "spot_spread",
            "detail": "details",
        },
        {"ts": now - 5 * m, "user_id": 2, "action": "push_button", "kind": "spot_spread", "detail": "mute1h"},
        {
            "ts": now - 4 * m,
            "user_id": 3,
            "action": "push_button",
            "kind": "funding_rate",
            "detail": "details",
        },
        {"ts": old, "user_id": 3, "action": "push_button", "kind": "funding_rate", "detail": "details"},
    ]
    sessions = [
        _session(now - 60 * m, 1, "started", "s1"),
        _session(now - 50 * m, 2, "started", "s2"),
        _session(now - 20 * m, 2, "ended", "s2"),
        _session(now - timedelta(days=3), 3, "started", "s3a"),
        _session(now - 30 * m, 3, "expired", "s3a"),
        _session(now - 30 * m, 3, "resumed", "s3b", seq=2),
        _session(old, 4, "started", "s4"),
    ]
    audit = [
        _audit(now - 60 * m, 1, "/start"),
        _audit(now - 59 * m, 1, "onboard:exch"),
        _audit(now - 58 * m, 1, "onboard:minp"),
        _audit(now - 50 * m, 2, "/start"),
        _audit(now - 49 * m, 2, "onboard:done"),  # "Skip setup"
        _audit(now - 30 * m, 3, "/start"),
        _audit(old, 4, "onboard:done"),
        _audit(now - 5 * m, 4, "cb:ss"),  # came back and finished long ago: done
        _audit(now - 4 * m, 5, "/start", ok=False),  # refused: not in the cohort
        _audit(now - 3 * m, 1, "/opportunities"),
        _audit(now - 3 * m, 2, "/opportunities"),
        _audit(now - 3 * m, 2, "/opportunities", ok=False),
        _audit(now - 2 * m, 1, "cb:od"),
    ]
    opportunities = [
        _opp("o1", "opened", "spot_spread", 3.0, now - 20 * m),
        _opp("o1", "closed", "spot_spread", 2.0, now - 19 * m, life=60.0),
        _opp("o2", "opened", "spot_spread", 12.0, now - 15 * m, pushable=False),
        _opp(
            "o3", "opened", "funding_rate", 60.0, now - 12 * m, details='{"net_apr":0.25,"horizon_hours":168}'
        ),
        _opp("o4", "opened", "technical", -1.0, now - 11 * m),
        # a ticker collision: flagged, never pushable; it must move no edge figure
        _opp(
            "o6", "opened", "spot_spread", 300_000.0, now - 10 * m, pushable=False, flags="implausible_spread"
        ),
        # opened under the push threshold, pushable a tick later (its edge: then)
        _opp("o7", "opened", "spot_spread", 8.0, now - 9 * m, pushable=False),
        _opp("o7", "updated", "spot_spread", 9.0, now - 8 * m),
        # a funding row of an earlier release (no APR in details): 10 bps over 168 h
        _opp("o8", "opened", "funding_rate", 10.0, now - 7 * m, flags="default_fee"),
        _opp("o5", "opened", "spot_spread", 150.0, old),  # outside the day
    ]
    quotes = [
        _quote(now - timedelta(seconds=2), "binance", "BTC/USDT"),
        _quote(now - timedelta(seconds=3), "binance", "ETH/USDT"),
        _quote(now - timedelta(seconds=30), "okx", "BTC/USDT"),
        _quote(now - timedelta(hours=3), "bybit", "BTC/USDT"),
    ]
    return {
        "deliveries": deliveries_table(deliveries),
        "engagement": engagement_table(engagement),
        "session_events": pa.Table.from_pylist(sessions, schema=SESSION_EVENTS),
        "audit": pa.Table.from_pylist(audit, schema=AUDIT),
        "opportunities": pa.Table.from_pylist(opportunities, schema=OPPORTUNITIES),
        "quotes": pa.Table.from_pylist(quotes, schema=QUOTES),
    }


def write_rows(lake_dir: Path, tables: dict[str, pa.Table]) -> Lake:
    settings = LakeSettings(url=str(lake_dir))
    lake = Lake.from_settings(settings)
    sink = ParquetSink(lake, settings)
    for name, table in tables.items():
        sink.add(name, table)
    sink.flush()
    return lake


def sample_lake(lake_dir: Path, now: datetime = NOW) -> Lake:
    """A lake with :func:`sample_rows` written through the sink (hour partitions)."""
    return write_rows(lake_dir, sample_rows(now))


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return sample_lake(tmp_path / "lake")


def rows(table: pa.Table) -> list[dict[str, Any]]:
    return list(table.to_pylist())


def test_summary_figures(lake: Lake) -> None:
    (row,) = rows(an.summary(lake, DAY, now=NOW))
    assert row == {
        "queued": 5,
        "sent": 4,
        "skipped": 3,
        "expired": 1,
        "failed": 1,
        "blocked": 1,
        "retries": 3,
        "missed": 0,
        "digests_sent": 0,
        "throttled_429": 2,
        "chats_reached": 3,
        "presses": 3,
        "engagement_rate": 0.75,
        "list_views": 2,
        "details_opened": 3,
        "p50_ms": 250.0,
        "p90_ms": pytest.approx(790.0),
        "p99_ms": pytest.approx(979.0),
        "active_sessions": 3,
        "new_users": 2,
        "returning_users": 1,
    }
    # all time: the old sent row is in
    (every,) = rows(an.summary(lake, None, now=NOW))
    assert every["sent"] == 5 and every["presses"] == 4


def test_sessions_and_users(lake: Lake) -> None:
    assert rows(an.active_sessions(lake, DAY, now=NOW)) == [
        {"active_sessions": 3, "active_users": 3, "started_in_window": 3}
    ]
    # before user 2 ended and user 3's first session expired
    assert rows(an.active_sessions(lake, None, now=NOW - timedelta(minutes=40)))[0]["active_sessions"] == 4
    assert rows(an.new_vs_returning(lake, DAY, now=NOW)) == [
        {"user_type": "new", "users": 2, "sessions": 2},
        {"user_type": "returning", "users": 1, "sessions": 1},
    ]


def test_onboarding_funnel(lake: Lake) -> None:
    funnel = {r["step"]: r for r in rows(an.onboarding_funnel(lake, DAY, now=NOW))}
    assert list(funnel) == [s for s, _ in an.FUNNEL_STEPS]
    assert {s: (r["stopped_here"], r["reached"]) for s, r in funnel.items()} == {
        "opted_in": (1, 4),
        "kinds": (0, 3),
        "exchanges": (0, 3),
        "min_profit": (1, 3),
        "timezone": (0, 2),
        "hours": (0, 2),
        "tiers": (0, 2),
        "api_keys": (0, 2),
        "done": (2, 2),
    }
    assert funnel["opted_in"]["conversion"] == 1.0 and funnel["done"]["conversion"] == 0.5


def test_funnel_steps_follow_the_bot() -> None:
    # the step names are OnboardingStep values, the actions the bot's onboard:<screen> buttons
    assert [s for s, _ in an.FUNNEL_STEPS] == [s.value for s in OnboardingStep if s is not OnboardingStep.NEW]
    screens = {f"onboard:{screen}": step.value for screen, step in STEP_OF.items()}
    assert {a: s for s, actions in an.FUNNEL_STEPS[1:] for a in actions} == screens


def test_deliveries_tiers_hours_minutes_skips_429(lake: Lake) -> None:
    tiers = {r["tier"]: r for r in rows(an.deliveries_by_tier(lake, DAY, now=NOW))}
    assert list(tiers) == ["free", "premium"]
    assert tiers["premium"] == {
        "tier": "premium",
        "queued": 0,
        "sent": 2,
        "skipped": 0,
        "expired": 0,
        "failed": 0,
        "blocked": 0,
        "retries": 0,
        "missed": 0,
        "digests_sent": 0,
        "chats": 1,
    }
    assert (tiers["free"]["sent"], tiers["free"]["skipped"], tiers["free"]["retries"]) == (2, 3, 3)
    hours = rows(an.deliveries_per_hour(lake, DAY, now=NOW))
    assert [h["hour"] for h in hours] == [datetime(2025, 6, 2, 12, tzinfo=UTC)]
    assert hours[0]["sent"] == 4 and hours[0]["throttled_429"] == 2
    minutes = {r["minute"]: r for r in rows(an.deliveries_per_minute(lake, DAY, now=NOW))}
    assert minutes[datetime(2025, 6, 2, 12, 21, tzinfo=UTC)]["sent"] == 2  # sent_at = queued_at + 1 s
    assert sum(r["sent"] for r in minutes.values()) == 4
    assert rows(an.skips_by_layer(lake, DAY, now=NOW)) == [
        {"layer": 2, "reason": "subscription.kind", "skipped": 2, "chats": 2},
        {"layer": 4, "reason": "quota.day", "skipped": 1, "chats": 1},
    ]
    assert rows(an.throttled(lake, DAY, now=NOW)) == [{"throttled_429": 2, "retries": 3, "chats": 2}]


def test_latency_and_engagement(lake: Lake) -> None:
    lat = rows(an.latency_percentiles(lake, DAY, now=NOW))
    assert [(r["tier"], r["n"]) for r in lat] == [("all", 4), ("free", 2), ("premium", 2)]
    assert (lat[0]["p50_ms"], lat[0]["max_ms"]) == (250.0, 1000.0)
    assert lat[1]["p50_ms"] == 150.0 and lat[2]["p99_ms"] == pytest.approx(300 + 0.99 * 700)
    assert rows(an.engagement_by_kind(lake, DAY, now=NOW)) == [
        {
            "kind": "spot_spread",
            "pushes_sent": 3,
            "presses": 2,
            "details_opened": 1,
            "engagement_rate": 2 / 3,
        },
        {"kind": "funding_rate", "pushes_sent": 1, "presses": 1, "details_opened": 1, "engagement_rate": 1.0},
    ]


def test_opportunities_and_freshness(lake: Lake) -> None:
    by_kind = rows(an.opportunities_by_kind(lake, DAY, now=NOW))
    assert [r["kind"] for r in by_kind] == ["spot_spread", "funding_rate", "technical"]
    kinds = {r["kind"]: r for r in by_kind}
    # edges over pushable opportunities only: the 300,000 bps collision and the flagged 12 bps
    # one are counted apart; o7 counts with its edge when it became pushable (9 bps)
    assert kinds["spot_spread"] == {
        "kind": "spot_spread",
        "unit": "net bps (instant)",
        "opened": 4,
        "pushable": 2,
        "flagged": 2,
        "closed": 1,
        "mean_net": 6.0,
        "max_net": 9.0,
        "mean_bps_per_day": None,
        "median_lifetime_s": 60.0,
    }
    funding = kinds["funding_rate"]
    old_apr = 10.0 / 10_000 * 8760 / 168  # derived over the default horizon
    assert (funding["unit"], funding["opened"], funding["pushable"], funding["flagged"]) == (
        "net % APR",
        2,
        2,
        0,
    )
    assert funding["mean_net"] == pytest.approx((25.0 + old_apr * 100) / 2)
    assert funding["max_net"] == pytest.approx(25.0)
    assert funding["mean_bps_per_day"] == pytest.approx((0.25 + old_apr) / 2 * 10_000 / 365)
    tech = kinds["technical"]
    assert (tech["unit"], tech["opened"], tech["pushable"], tech["mean_net"]) == ("none (signal)", 1, 1, None)

    flagged = rows(an.flagged_opportunities(lake, DAY, now=NOW))
    assert [(r["kind"], r["flag"], r["opportunities"]) for r in flagged] == [
        ("spot_spread", "implausible_spread", 1),
        ("spot_spread", "low_confidence", 1),
    ]

    buckets = rows(an.opportunities_by_edge(lake, DAY, now=NOW))
    spot = [(b["bucket"], b["opportunities"]) for b in buckets if b["kind"] == "spot_spread"]
    assert spot == [
        ("<0", 0),
        ("0-5", 1),
        ("5-10", 1),
        ("10-20", 0),
        ("20-50", 0),
        ("50-100", 0),
        ("≥100", 0),
    ]
    apr = [(b["bucket"], b["opportunities"]) for b in buckets if b["kind"] == "funding_rate"]
    assert apr == [
        ("<0%", 0),
        ("0-5%", 0),
        ("5-10%", 1),
        ("10-20%", 0),
        ("20-50%", 1),
        ("50-100%", 0),
        ("≥100%", 0),
    ]
    assert {b["kind"] for b in buckets} == {"spot_spread", "funding_rate"}  # signals have no edge
    best = rows(an.top_pushable(lake, DAY, now=NOW, n=1))
    assert [(r["kind"], r["net"], r["unit"]) for r in best] == [
        ("spot_spread", 9.0, "net bps (instant)"),
        ("funding_rate", 25.0, "net % APR"),
    ]
    every = rows(an.opportunities_by_edge(lake, None, now=NOW))
    assert [b["opportunities"] for b in every if b["kind"] == "spot_spread"][-1] == 1  # the old 150 bps one
    fresh = rows(an.data_freshness(lake, DAY, now=NOW))
    assert [(r["exchange"], r["age_s"], r["quotes"], r["symbols"]) for r in fresh] == [
        ("binance", 2.0, 2, 2),
        ("bybit", 3 * 3600.0, 1, 1),
        ("okx", 30.0, 1, 1),
    ]
    recent = rows(an.data_freshness(lake, NOW - timedelta(hours=1), now=NOW))
    assert [r["exchange"] for r in recent] == ["binance", "okx"]


def test_report_and_admin_figures(lake: Lake) -> None:
    tables = an.report(lake, DAY, now=NOW)
    assert list(tables) == [key for key, _, _ in an.REPORT]
    assert tables["summary"].num_rows == 1
    figures = an.delivery_figures(lake, an.start_of_day(NOW), now=NOW)
    assert figures == an.DeliveryFigures(
        deliveries=10, sent=4, skipped=3, throttled_429=2, engagement_rate=0.75, p99_ms=pytest.approx(979.0)
    )
    assert an.start_of_day(NOW) == datetime(2025, 6, 2, tzinfo=UTC)


def test_empty_lake_answers_with_zeros(tmp_path: Path) -> None:
    lake = Lake.from_settings(LakeSettings(url=str(tmp_path / "nothing-yet")))
    tables = an.report(lake, DAY, now=NOW)
    (row,) = rows(tables["summary"])
    assert row["sent"] == 0 and row["engagement_rate"] is None and row["p99_ms"] is None
    assert row["active_sessions"] == 0 and row["new_users"] == 0
    assert tables["deliveries_by_tier"].num_rows == 0 and tables["data_freshness"].num_rows == 0
    assert [r["reached"] for r in rows(tables["onboarding_funnel"])] == [0] * len(an.FUNNEL_STEPS)
    assert [r["opportunities"] for r in rows(tables["opportunities_by_edge"])] == [0] * 14
    assert tables["opportunities_by_kind"].num_rows == 0 and tables["flagged_opportunities"].num_rows == 0
    figures = an.delivery_figures(lake, DAY, now=NOW)
    assert (figures.deliveries, figures.p99_ms) == (0, None)


def test_some_datasets_missing(tmp_path: Path) -> None:
    only = {k: v for k, v in sample_rows(NOW).items() if k in ("deliveries", "quotes")}
    lake = write_rows(tmp_path / "lake", only)
    (row,) = rows(an.summary(lake, DAY, now=NOW))
    assert (row["sent"], row["presses"], row["engagement_rate"], row["active_sessions"]) == (4, 0, 0.0, 0)


def test_empty_views_match_the_writers_schemas() -> None:
    for name, writer in (("session_events", SESSION_EVENTS), ("audit", AUDIT)):
        ours = an.EMPTY_SCHEMAS[name]
        assert ours.names == writer.names
        assert [f.type for f in ours] == [writer.field(n).type for n in ours.names]


def test_naive_datetimes_are_refused(lake: Lake) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        an.summary(lake, datetime(2025, 6, 1), now=NOW)


def test_unreadable_lake_raises_lake_error(tmp_path: Path) -> None:
    lake = write_rows(tmp_path / "lake", {"deliveries": sample_rows(NOW)["deliveries"]})
    part = next((tmp_path / "lake").rglob("*.parquet"))
    part.write_bytes(b"not parquet")
    with pytest.raises(LakeError, match="Parquet file"):
        an.summary(lake, None, now=NOW)
