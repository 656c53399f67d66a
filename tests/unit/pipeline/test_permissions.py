"""Key permissions parsed from each exchange's answer, shaped as its API documentation gives it."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import MarketSettings
from pipeline.sources.permissions import (
    CheckStatus,
    KeyPermissions,
    UnexpectedAnswer,
    check_key,
    parse_permissions,
)

# GET /sapi/v1/account/apiRestrictions (binance's documented example: a read-only key)
BINANCE_READ_ONLY: dict[str, Any] = {
    "ipRestrict": False,
    "createTime": 1698645219000,
    "enableInternalTransfer": False,
    "enableFutures": False,
    "enablePortfolioMarginTrading": False,
    "enableVanillaOptions": False,
    "permitsUniversalTransfer": False,
    "enableReading": True,
    "enableSpotAndMarginTrading": False,
    "enableWithdrawals": False,
    "enableMargin": False,
    "enableFixApiTrade": False,
    "enableFixReadOnly": True,
}

# GET /v5/user/query-api (bybit): readOnly 0 = "Read-Write"
BYBIT_READ_WRITE: dict[str, Any] = {
    "retCode": 0,
    "retMsg": "",
    "result": {
        "id": "13770661",
        "note": "XXXXXX",
        "apiKey": "XXXXXX",
        "readOnly": 0,
        "secret": "",
        "permissions": {
            "ContractTrade": ["Order", "Position"],
            "Spot": ["SpotTrade"],
            "Wallet": ["AccountTransfer", "SubMemberTransfer"],
            "Options": ["OptionsTrade"],
            "Derivatives": [],
            "CopyTrading": [],
            "BlockTrade": [],
            "Exchange": [],
            "NFT": [],
            "Affiliate": [],
        },
        "ips": ["*"],
        "type": 1,
        "deadlineDay": 66,
        "expiredAt": "2023-12-22T07:20:25Z",
        "createdAt": "2022-10-16T02:24:40Z",
        "unified": 0,
        "uta": 0,
        "userID": 24617703,
        "inviterID": 0,
        "vipLevel": "No VIP",
        "mktMakerLevel": "0",
        "affiliateID": 0,
    },
    "retExtInfo": {},
    "time": 1697525990798,
}

# GET /api/v5/account/config (okx)
OKX_CONFIG: dict[str, Any] = {
    "code": "0",
    "data": [
        {
            "acctLv": "2",
            "autoLoan": False,
            "ctIsoMode": "automatic",
            "greeksType": "PA",
            "level": "Lv1",
            "levelTmp": "",
            "mgnIsoMode": "automatic",
            "posMode": "long_short_mode",
            "spotOffsetType": "",
            "uid": "44705892343619584",
            "label": "V5 Test",
            "roleType": "0",
            "traderInsts": [],
            "opAuth": "0",
            "kycLv": "2",
            "ip": "120.255.24.182,49.245.196.13",
            "perm": "read_only,withdraw,trade",
            "mainUid": "444810535339712570",
        }
    ],
    "msg": "",
}


def test_binance_read_only_key() -> None:
    perms = parse_permissions("binance", BINANCE_READ_ONLY)
    assert perms == KeyPermissions("binance") and perms.read_only


def test_binance_names_every_permission_to_turn_off_withdrawals_first() -> None:
    answer = dict(
        BINANCE_READ_ONLY,
        enableSpotAndMarginTrading=True,
        enableFutures=True,
        enableWithdrawals=True,
        permitsUniversalTransfer=True,
    )
    perms = parse_permissions("binance", answer)
    assert not perms.read_only
    assert perms.to_turn_off == (
        "Enable Withdrawals",
        "Enable Spot & Margin Trading",
        "Enable Futures",
        "Permits Universal Transfer",
    )


def test_bybit_read_write_key_lists_its_permissions() -> None:
    perms = parse_permissions("bybit", BYBIT_READ_WRITE)
    assert perms.trade == (
        "ContractTrade: Order",
        "ContractTrade: Position",
        "Spot: SpotTrade",
        "Options: OptionsTrade",
    )
    assert perms.transfer == ("Wallet: AccountTransfer", "Wallet: SubMemberTransfer") and perms.withdraw == ()


def test_bybit_read_only_key_reads_its_scopes() -> None:
    answer = dict(BYBIT_READ_WRITE["result"], readOnly=1)
    assert parse_permissions("bybit", answer).read_only  # the lists are what it may read
    with_withdraw = dict(answer, permissions={"Wallet": ["Withdraw"]})
    assert parse_permissions("bybit", with_withdraw).withdraw == ("Wallet: Withdraw",)


def test_bybit_read_write_with_empty_lists_is_still_not_read_only() -> None:
    answer = dict(BYBIT_READ_WRITE["result"], permissions={})
    assert parse_permissions("bybit", answer).to_turn_off == ("Read-Write",)


def test_okx_perm_string() -> None:
    perms = parse_permissions("okx", OKX_CONFIG)
    assert perms.trade == ("Trade",) and perms.withdraw == ("Withdraw",)
    row = dict(OKX_CONFIG["data"][0], perm="read_only")
    assert parse_permissions("okx", {"code": "0", "data": [row], "msg": ""}).read_only
    assert parse_permissions("okx", row).read_only


@pytest.mark.parametrize(
    ("exchange", "answer"),
    [
        ("binance", {"code": -2015}),
        ("bybit", {"retCode": 0, "result": {}}),
        ("okx", {"code": "0", "data": []}),
        ("okx", []),
    ],
)
def test_an_answer_without_the_documented_fields_is_an_error(exchange: str, answer: Any) -> None:
    with pytest.raises(UnexpectedAnswer):
        parse_permissions(exchange, answer)


async def test_an_exchange_without_a_permission_endpoint_is_unsupported() -> None:
    check = await check_key("kraken", MarketSettings(exchanges=["kraken"]), "key", "secret")
    assert check.status is CheckStatus.UNSUPPORTED and not check.read_only


async def test_an_exchange_that_does_not_answer_is_unreachable() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = MarketSettings(endpoints={"bybit": {"rest": f"http://127.0.0.1:{port}/bybit"}})
    check = await check_key("bybit", settings, "key", "secret", timeout_s=5)
    assert check.status is CheckStatus.UNREACHABLE and check.permissions is None
