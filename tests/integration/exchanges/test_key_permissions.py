"""Key permissions asked of the emulated exchanges through real ccxt: signed requests, each
exchange's own answer and errors (``serve/standins/exchanges/keys.py``)."""

from __future__ import annotations

import httpx
import pytest

from core.settings import MarketSettings
from pipeline.sources.permissions import CheckStatus, check_key
from serve.standins.exchanges import Exchanges


@pytest.mark.parametrize("exchange", ["binance", "bybit", "okx"])
async def test_permissions_follow_the_key_and_signatures_are_checked(
    emulators: Exchanges, exchange: str
) -> None:
    settings = MarketSettings(endpoints=emulators.endpoints)
    read = await check_key(exchange, settings, "plain-key-0123", "any-secret", "any-pass")
    assert read.status is CheckStatus.VERIFIED and read.read_only
    trade = await check_key(exchange, settings, "trade-key-0123", "any-secret", "any-pass")
    assert trade.permissions is not None and trade.permissions.trade and not trade.permissions.withdraw
    withdraw = await check_key(exchange, settings, "withdraw-key-0123", "any-secret", "any-pass")
    assert withdraw.permissions is not None and withdraw.permissions.withdraw
    emulators.add_key(exchange, "registered-0123", "the-secret", passphrase="the-pass")
    right = await check_key(exchange, settings, "registered-0123", "the-secret", "the-pass")
    assert right.status is CheckStatus.VERIFIED and right.read_only
    wrong = await check_key(exchange, settings, "registered-0123", "not-the-secret", "the-pass")
    assert wrong.status is CheckStatus.REJECTED and wrong.permissions is None


async def test_unsigned_requests_get_the_exchanges_errors(emulators: Exchanges) -> None:
    base = {name: urls["rest"] for name, urls in emulators.endpoints.items()}
    async with httpx.AsyncClient(timeout=5) as http:
        r = await http.get(f"{base['binance']}/api.binance.com/sapi/v1/account/apiRestrictions")
        assert r.status_code == 401 and r.json() == {"code": -2014, "msg": "API-key format invalid."}
        r = await http.get(f"{base['bybit']}/api.bybit.com/v5/user/query-api")
        assert r.json()["retCode"] == 10003
        r = await http.get(f"{base['okx']}/www.okx.com/api/v5/account/config")
        assert r.status_code == 401 and r.json()["code"] == "50103"
        # registered over the control API: the okx passphrase is checked
        r = await http.post(
            f"{emulators.url}/_control/keys",
            json={"exchange": "okx", "api_key": "k-0123", "secret": "s", "passphrase": "p"},
        )
        assert r.json() == {"ok": True}
    settings = MarketSettings(endpoints=emulators.endpoints)
    assert (await check_key("okx", settings, "k-0123", "s", "wrong")).status is CheckStatus.REJECTED
    assert (await check_key("okx", settings, "k-0123", "s", "p")).status is CheckStatus.VERIFIED
