"""Moving the bought asset from the buy venue to the sell venue: the route and its cost.

A spot spread is only a trade if the asset bought on venue A can be withdrawn from A
and deposited on venue B **on a common network**. What the venues say per currency
and network (``deposit``/``withdraw`` open, closed or unknown, and the withdrawal fee in
units of the asset) decides the route:

- ``open``: a common network with withdrawals open on A and deposits open on B; the
  cheapest such network is taken (a network with an unknown fee comes after every
  network with a known one);
- ``closed``: both venues told, and no common network is open both ways (blocking: the
  ``not_transferable`` flag);
- ``unknown``: a venue told nothing about the asset (no keys, no such endpoint) or only
  ``None`` for the directions that matter: not silently open — the ``transfer_unknown``
  flag lowers the confidence and the push says so.

A venue that tells only currency-level status (no networks) is taken at that level:
its fee is unknown (``None``), so nothing is subtracted.

Pure: no I/O. ``pipeline.detect`` joins :func:`route` per (asset, buy venue, sell
venue) into its vectorised candidates; ``core.spread`` (the Decimal reference) calls it
per candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from core.models import NetworkStatus, TransferMap, TransferStatus


class RouteState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Route:
    state: RouteState
    network: str | None = None
    """The network taken (``open``), or the cheapest one not known to be closed (``unknown``)."""
    fee: float | None = None
    """Its withdrawal fee in units of the asset (``None``: not known)."""


OPEN_UNCOSTED = Route(RouteState.OPEN)
UNKNOWN = Route(RouteState.UNKNOWN)
TRANSFER_UNKNOWN_FACTOR = 0.9
"""A candidate whose route is unknown keeps this share of its confidence."""


def as_status(value: TransferStatus | tuple[bool | None, bool | None] | None) -> TransferStatus | None:
    """A :class:`TransferStatus` from the forms a transfer map may hold."""
    if value is None or isinstance(value, TransferStatus):
        return value
    deposit, withdraw = value
    return TransferStatus(deposit_ok=deposit, withdraw_ok=withdraw)


def status_of(transfer: TransferMap | None, exchange: str, asset: str) -> TransferStatus | None:
    if transfer is None:
        return None
    return as_status(transfer.get(exchange, {}).get(asset))


def _cheapest(candidates: Iterable[tuple[str, float | None]]) -> tuple[str, float | None] | None:
    ranked = sorted(candidates, key=lambda nf: (nf[1] is None, nf[1] if nf[1] is not None else 0.0, nf[0]))
    return ranked[0] if ranked else None


def route(buy: TransferStatus | None, sell: TransferStatus | None) -> Route:
    """The route of an asset from the ``buy`` venue (withdraw) to the ``sell`` venue (deposit)."""
    if buy is None or sell is None:
        return UNKNOWN
    if buy.withdraw_ok is False or sell.deposit_ok is False:
        return Route(RouteState.CLOSED)
    if not buy.networks or not sell.networks:  # currency-level status only: no fee known
        if buy.withdraw_ok is None or sell.deposit_ok is None:
            return UNKNOWN
        return OPEN_UNCOSTED
    outs: dict[str, NetworkStatus] = {n.network.upper(): n for n in buy.networks}
    ins: dict[str, NetworkStatus] = {n.network.upper(): n for n in sell.networks}
    common = sorted(outs.keys() & ins.keys())
    open_: list[tuple[str, float | None]] = []
    maybe: list[tuple[str, float | None]] = []
    for name in common:
        out, in_ = outs[name], ins[name]
        if out.withdraw is False or in_.deposit is False:
            continue
        withdraw = out.withdraw if out.withdraw is not None else buy.withdraw_ok
        deposit = in_.deposit if in_.deposit is not None else sell.deposit_ok
        (open_ if withdraw is True and deposit is True else maybe).append((name, out.fee))
    best = _cheapest(open_)
    if best is not None:
        return Route(RouteState.OPEN, best[0], best[1])
    best = _cheapest(maybe)
    if best is not None:
        return Route(RouteState.UNKNOWN, best[0], best[1])
    return Route(RouteState.CLOSED)


def routes(
    transfer: TransferMap, combos: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str, str], Route]:
    """:func:`route` of every (asset, buy exchange, sell exchange)."""
    out: dict[tuple[str, str, str], Route] = {}
    for asset, buy, sell in combos:
        out[(asset, buy, sell)] = route(status_of(transfer, buy, asset), status_of(transfer, sell, asset))
    return out


def statuses_from_currencies(
    currencies: Mapping[str, object], assets: Iterable[str], fees: Mapping[str, object] | None = None
) -> dict[str, TransferStatus]:
    """``asset → TransferStatus`` from ccxt currency structures (``fetch_currencies``) and,
    where given, ccxt deposit/withdraw fee structures (``fetch_deposit_withdraw_fees``).

    ccxt gives ``deposit``/``withdraw`` as True, False or None (unknown) per currency and
    per network; ``active`` False closes both. An asset the venue does not list is left
    out (unknown)."""
    out: dict[str, TransferStatus] = {}
    for asset in assets:
        cur = currencies.get(asset)
        fee_info = (fees or {}).get(asset)
        if not isinstance(cur, Mapping) and not isinstance(fee_info, Mapping):
            continue
        cur = cur if isinstance(cur, Mapping) else {}
        inactive = cur.get("active") is False
        deposit = False if inactive else _tri(cur.get("deposit"))
        withdraw = False if inactive else _tri(cur.get("withdraw"))
        networks: dict[str, NetworkStatus] = {}
        for key, net in (cur.get("networks") or {}).items():
            if not isinstance(net, Mapping):
                continue
            name = str(net.get("network") or net.get("id") or key).upper()
            off = net.get("active") is False
            networks[name] = NetworkStatus(
                network=name,
                deposit=False if off else _tri(net.get("deposit")),
                withdraw=False if off else _tri(net.get("withdraw")),
                fee=_fee(net.get("fee")),
            )
        if isinstance(fee_info, Mapping):  # fees from their own endpoint fill the gaps
            for key, net in (fee_info.get("networks") or {}).items():
                if not isinstance(net, Mapping):
                    continue
                name = str(key).upper()
                withdraw_fee = net.get("withdraw")
                fee = _fee(withdraw_fee.get("fee") if isinstance(withdraw_fee, Mapping) else withdraw_fee)
                known = networks.get(name)
                if known is None:
                    networks[name] = NetworkStatus(network=name, fee=fee)
                elif known.fee is None and fee is not None:
                    networks[name] = NetworkStatus(name, known.deposit, known.withdraw, fee)
        out[asset] = TransferStatus(
            deposit_ok=deposit, withdraw_ok=withdraw, networks=tuple(networks[n] for n in sorted(networks))
        )
    return out


def _tri(value: object) -> bool | None:
    return None if value is None else bool(value)


def _fee(value: object) -> float | None:
    try:
        fee = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return fee if fee >= 0 else None


__all__ = [
    "OPEN_UNCOSTED",
    "TRANSFER_UNKNOWN_FACTOR",
    "UNKNOWN",
    "Route",
    "RouteState",
    "as_status",
    "route",
    "routes",
    "status_of",
    "statuses_from_currencies",
]
