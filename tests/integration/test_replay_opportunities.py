"""End to end (issue 3, "Correctness"): a replay scenario with known answers through ``arbflow run``.

The reference scenario of ``tests/support/scenarios.py`` is written as NDJSON,
``arbflow run`` replays it with ``ARBFLOW_MARKET__SOURCE=replay`` (it processes the
whole file, flushes the lake and exits 0, CONTRACT.md), and the ``opportunities``
dataset is read back with ``arbflow query --format json``. Expected: exactly the
known opportunities are opened (pushable, with their hand-computed net bps at the
notional the engine keeps), nothing pushable from the decoys, and KNOWN 1 and
KNOWN 2, which end before the file does, closed with their lifetime.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest

from tests.support.cli import cli_env, run_cli
from tests.support.scenarios import Scenario, known_opportunities

NET_TOL_BPS = 0.5
LIFETIME_TOL_S = 1.0
KNOWN_1 = ("spot_spread", "BTC/USDT", "binance", "okx")
KNOWN_2 = ("spot_spread", "ETH/USDT", "bybit", "binance")
ARBITRAGE_KINDS = ("spot_spread", "funding_rate")

SQL = """
SELECT opportunity_id, event, kind, symbol, buy_exchange, sell_exchange,
       gross_bps, net_bps, gross_apr, notional_usd, pushable, flags, lifetime_s,
       CAST(detected_at AS VARCHAR) AS detected_at
FROM opportunities
ORDER BY detected_at, event
"""


def _key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (row["kind"], row["symbol"], row["buy_exchange"] or "", row["sell_exchange"] or "")


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return known_opportunities()


@pytest.fixture(scope="module")
def opportunity_rows(
    tmp_path_factory: pytest.TempPathFactory, module_redis_url: str, scenario: Scenario
) -> list[dict[str, Any]]:
    """The ``opportunities`` rows of one replay of the scenario, read by every test here."""
    tmp_path = tmp_path_factory.mktemp("replay-opps")
    replay = scenario.write(tmp_path / "known_opportunities.ndjson")
    env = cli_env(
        tmp_path,
        redis_url=module_redis_url,
        label="arbflow-replay-opps",
        ARBFLOW_MARKET__SOURCE="replay",
        ARBFLOW_MARKET__REPLAY_PATH=str(replay),
        ARBFLOW_MARKET__EXCHANGES=",".join(scenario.exchanges),
        ARBFLOW_MARKET__SYMBOLS=",".join(scenario.symbols),
    )
    env.pop("ARBFLOW_FEES", None)  # the expected values use the built-in default fees
    proc = run_cli(["run"], env, timeout_s=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    out = run_cli(["query", SQL, "--format", "json"], env, timeout_s=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = json.loads(out.stdout)
    assert isinstance(rows, list)
    return rows


def test_replay_yields_exactly_the_known_opportunities(
    opportunity_rows: list[dict[str, Any]], scenario: Scenario
) -> None:
    rows = [r for r in opportunity_rows if r["kind"] in ARBITRAGE_KINDS]
    assert rows, "no spot_spread/funding_rate rows in the opportunities dataset"
    by_key: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_key[_key(row)].append(row)
    opened = [r for r in rows if r["event"] == "opened"]

    # exactly the known ones were opened as pushable opportunities
    assert {_key(r) for r in opened if r["pushable"]} == scenario.known_keys
    # anything else opened is a tracked decoy (the ticker collision), never pushable
    extra = {_key(r) for r in opened} - scenario.known_keys
    assert extra <= scenario.tracked_decoy_keys, extra

    for key, exp in scenario.engine_expected().items():
        events = by_key[key]
        first = [r for r in events if r["event"] == "opened"]
        assert len(first) == 1, (key, events)
        row = first[0]
        assert row["pushable"] is True, row
        assert row["net_bps"] == pytest.approx(exp["net_bps"], abs=NET_TOL_BPS), (key, row)
        assert row["gross_bps"] == pytest.approx(exp["gross_bps"], abs=NET_TOL_BPS), (key, row)
        if exp["notional_usd"] is not None:
            # of 1,000 and 10,000 USD the engine keeps the best executable notional
            assert row["notional_usd"] == pytest.approx(exp["notional_usd"]), (key, row)
        else:
            assert row["gross_apr"] == pytest.approx(exp["gross_apr"], rel=1e-6), (key, row)
        assert "insufficient_depth" not in (row["flags"] or ""), row


def test_nothing_pushable_from_the_decoys(opportunity_rows: list[dict[str, Any]], scenario: Scenario) -> None:
    decoy_symbols = {d["symbol"] for d in scenario.decoys}
    from_decoys = [
        r for r in opportunity_rows if r["symbol"] in decoy_symbols and r["kind"] in ARBITRAGE_KINDS
    ]
    assert [r for r in from_decoys if r["pushable"]] == []
    # the only decoy the lifecycle may track is the collision, flagged as such
    for row in from_decoys:
        assert _key(row) in scenario.tracked_decoy_keys, row
        assert "implausible_spread" in row["flags"], row
    # steady collision books: tracked once, not re-emitted as updates
    assert len([r for r in from_decoys if r["event"] == "updated"]) == 0
    # no other spot/funding key than the known ones and the collision appears at all
    keys = {_key(r) for r in opportunity_rows if r["kind"] in ARBITRAGE_KINDS}
    assert keys <= scenario.known_keys | scenario.tracked_decoy_keys, keys - scenario.known_keys


def test_known_spreads_close_with_their_lifetime(opportunity_rows: list[dict[str, Any]]) -> None:
    for key, lifetime in ((KNOWN_1, 8.0), (KNOWN_2, 10.0)):
        closed = [r for r in opportunity_rows if _key(r) == key and r["event"] == "closed"]
        assert len(closed) == 1, (key, closed)
        assert closed[0]["lifetime_s"] == pytest.approx(lifetime, abs=LIFETIME_TOL_S), closed[0]
        opened = [r for r in opportunity_rows if _key(r) == key and r["event"] == "opened"]
        assert closed[0]["opportunity_id"] == opened[0]["opportunity_id"]
