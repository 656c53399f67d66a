"""Transfer routes between venues: common networks, open directions, the cheapest fee."""

from __future__ import annotations

from core.models import NetworkStatus, TransferStatus
from core.transfers import Route, RouteState, route, routes, statuses_from_currencies


def nets(*items: tuple[str, bool | None, bool | None, float | None]) -> TransferStatus:
    return TransferStatus(networks=tuple(NetworkStatus(*item) for item in items))


def test_the_cheapest_common_network_open_both_ways_is_taken() -> None:
    buy = nets(("ETH", True, True, 0.004), ("ARB", True, True, 0.0001), ("SOL", True, True, 0.00001))
    sell = nets(("eth", True, False, None), ("ARB", True, True, 0.0), ("BSC", True, True, 0.0))
    # SOL is cheapest but the sell venue has no SOL network; ARB beats ETH
    assert route(buy, sell) == Route(RouteState.OPEN, "ARB", 0.0001)


def test_only_withdrawals_on_the_buy_venue_and_deposits_on_the_sell_venue_matter() -> None:
    buy = nets(("ETH", False, True, 0.004))  # deposits closed on the buy venue: irrelevant
    sell = nets(("ETH", True, False, 0.01))  # withdrawals closed on the sell venue: irrelevant
    assert route(buy, sell).state is RouteState.OPEN
    assert route(sell, buy).state is RouteState.CLOSED


def test_no_common_network_or_a_closed_currency_is_closed() -> None:
    assert route(nets(("ETH", True, True, 1.0)), nets(("TRX", True, True, 1.0))).state is RouteState.CLOSED
    closed = TransferStatus(withdraw_ok=False, networks=(NetworkStatus("ETH", True, True, 1.0),))
    assert route(closed, nets(("ETH", True, True, 1.0))).state is RouteState.CLOSED


def test_what_a_venue_does_not_say_is_unknown_not_open() -> None:
    known = nets(("ETH", True, True, 0.5))
    assert route(None, known) == Route(RouteState.UNKNOWN)
    assert route(known, None) == Route(RouteState.UNKNOWN)
    vague = TransferStatus(None, None, (NetworkStatus("ETH", None, None, 0.7),))
    assert route(vague, known) == Route(RouteState.UNKNOWN, "ETH", 0.7)
    # a network that says nothing takes its currency's status
    assert route(nets(("ETH", None, None, 0.7)), known) == Route(RouteState.OPEN, "ETH", 0.7)
    # a known-open network wins over an unknown cheaper one
    mixed = TransferStatus(
        None, None, (NetworkStatus("ETH", True, True, 0.5), NetworkStatus("ARB", None, None, 0.1))
    )
    assert route(mixed, nets(("ETH", True, True, 0.0), ("ARB", True, True, 0.0))) == Route(
        RouteState.OPEN, "ETH", 0.5
    )
    # currency-level only: open but uncosted, or unknown
    assert route(TransferStatus(True, True), TransferStatus(True, True)) == Route(RouteState.OPEN)
    assert route(TransferStatus(None, None), TransferStatus(True, True)).state is RouteState.UNKNOWN


def test_a_known_fee_comes_before_an_unknown_one() -> None:
    buy = nets(("ETH", True, True, None), ("ARB", True, True, 0.3))
    sell = nets(("ETH", True, True, None), ("ARB", True, True, None))
    assert route(buy, sell) == Route(RouteState.OPEN, "ARB", 0.3)


def test_routes_of_a_map_with_the_old_tuple_form() -> None:
    transfer = {"binance": {"BTC": (True, True)}, "okx": {"BTC": (False, True)}}
    got = routes(transfer, [("BTC", "binance", "okx"), ("BTC", "okx", "binance"), ("ETH", "okx", "binance")])
    assert got[("BTC", "binance", "okx")].state is RouteState.CLOSED  # okx takes no deposits
    assert got[("BTC", "okx", "binance")] == Route(RouteState.OPEN)
    assert got[("ETH", "okx", "binance")].state is RouteState.UNKNOWN


def test_statuses_from_ccxt_currency_and_fee_structures() -> None:
    currencies = {
        "BTC": {
            "code": "BTC",
            "active": True,
            "deposit": True,
            "withdraw": False,
            "networks": {
                "BTC": {"network": "BTC", "active": True, "deposit": True, "withdraw": False, "fee": 0.0002},
                "BSC": {"id": "BEP20", "network": "BSC", "active": None, "deposit": None, "withdraw": None},
            },
        },
        "ETH": {"code": "ETH", "active": None, "deposit": None, "withdraw": None, "networks": {}},
        "SOL": {"code": "SOL", "active": False, "deposit": True, "withdraw": True},
        "XRP": "not a mapping",
    }
    fees = {"BTC": {"networks": {"BSC": {"withdraw": {"fee": 0.0000072, "percentage": False}}}}}
    got = statuses_from_currencies(currencies, {"BTC", "ETH", "SOL", "XRP", "DOGE"}, fees)
    assert set(got) == {"BTC", "ETH", "SOL"}  # XRP malformed and DOGE absent: unknown
    assert got["BTC"] == TransferStatus(
        deposit_ok=True,
        withdraw_ok=False,
        networks=(NetworkStatus("BSC", None, None, 0.0000072), NetworkStatus("BTC", True, False, 0.0002)),
    )
    assert got["ETH"] == TransferStatus(None, None, ())
    assert got["SOL"] == TransferStatus(False, False, ())
