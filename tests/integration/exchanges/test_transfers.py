"""Transfer status and withdrawal fees: the real ccxt clients, the operator's keys, the emulators."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from core.models import NetworkStatus
from core.settings import Settings
from core.transfers import RouteState, route
from pipeline.sources.factory import build_source
from pipeline.sources.live import CcxtMarketSource
from serve.standins.exchanges import Exchanges
from serve.standins.exchanges.networks import currency_networks
from tests.integration.exchanges.conftest import SYMBOLS, live_settings
from tests.integration.exchanges.test_faults import Collector

pytestmark = pytest.mark.timeout(120)

KEYS = {"api_key": "read-only-key", "secret": "read-only-secret", "password": "passphrase"}


def keyed(ex: Exchanges, **market: Any) -> Settings:
    base = live_settings(ex, **market)
    return base.model_copy(
        update={"exchange_keys": Settings(exchange_keys={n: KEYS for n in ex.endpoints}).exchange_keys}
    )


async def started(settings: Settings, name: str) -> Collector:
    source = build_source(settings, name, "live")
    assert isinstance(source, CcxtMarketSource)
    collector = Collector(source)
    await collector.wait(lambda: source.transfer_checked and bool(collector.rows), within=60)
    return collector


@pytest.mark.parametrize("name", ["binance", "bybit", "okx"])
async def test_keys_read_every_network_and_its_withdrawal_fee(
    emulators: Exchanges, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    c = await started(keyed(emulators), name)
    try:
        btc = c.source.transfer["BTC"]
        listed = sorted(n.fee for n in currency_networks(SYMBOLS)["BTC"])
        assert sorted(n.fee or 0 for n in btc.networks) == pytest.approx(listed)
        # ccxt's unified network codes, the same on every venue (BSC → BEP20), so routes match
        assert {n.network for n in btc.networks} == {"BTC", "BEP20"}
        assert all(isinstance(n, NetworkStatus) and n.withdraw and n.deposit for n in btc.networks)
        assert btc.withdraw_ok and btc.deposit_ok
    finally:
        await c.close()
    # the keys are never written to the logs
    assert not any(v in record.getMessage() for record in caplog.records for v in KEYS.values())


async def test_without_keys_the_status_is_unknown_and_said_once(
    emulators: Exchanges, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    c = await started(live_settings(emulators), "binance")  # binance's currency list is signed
    try:
        assert c.source.transfer == {}  # every asset unknown, not open
        said = [r.getMessage() for r in caplog.records if "transfer status unknown" in r.getMessage()]
        assert len(said) == 1 and "ARBFLOW_EXCHANGE_KEYS__BINANCE__API_KEY" in said[0]
    finally:
        await c.close()


async def test_withdrawals_that_close_close_the_route_within_one_refresh(emulators: Exchanges) -> None:
    settings = keyed(emulators, transfer_refresh_s=1.0)
    buy, sell = await started(settings, "binance"), await started(settings, "okx")
    try:
        before = route(buy.source.transfer["BTC"], sell.source.transfer["BTC"])
        assert before.state is RouteState.OPEN and before.fee is not None
        emulators.fault("binance", "withdrawals", "BTC")
        await buy.wait(lambda: buy.source.transfer["BTC"].withdraw_ok is False, within=30)
        assert route(buy.source.transfer["BTC"], sell.source.transfer["BTC"]).state is RouteState.CLOSED
        # the other way round only needs binance's deposits, which stay open
        assert route(sell.source.transfer["BTC"], buy.source.transfer["BTC"]).state is RouteState.OPEN
    finally:
        await buy.close()
        await sell.close()
