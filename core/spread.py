"""Cross-exchange spot spread: VWAP fills and the net edge after taker fees.

Pure and ``Decimal``; ``now`` is injected. The vectorised twin lives in
``pipeline.detect`` and is cross-checked against this module in the tests.

How a candidate is sized (the one consistent approach used everywhere):

1. Buy ``notional`` USD worth on the *ask* side of the buy book → base quantity
   ``q_buy`` (less than asked for when the asks are too thin).
2. Sell the bought base quantity into the *bid* side of the sell book. If those bids
   cannot absorb ``q_buy``, the executable quantity is their total size.
3. ``q = min(q_buy, total bid size)`` is the executable base size; both VWAPs are the
   average prices of buying and of selling exactly ``q``; ``executable_usd`` is the
   cost of buying ``q`` (before fees). ``q`` below what ``notional`` asks for → the
   ``insufficient_depth`` flag (not pushable at this notional).

Then, with ``f_buy``/``f_sell`` the taker fees::

    gross = (sell_vwap - buy_vwap) / buy_vwap
    net   = (sell_vwap·(1 - f_sell) - buy_vwap·(1 + f_buy)) / (buy_vwap·(1 + f_buy))

both reported in bps. With non-negative fees ``net ≤ gross``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from core.fees import FeeSchedule
from core.models import (
    BLOCKING_FLAGS,
    BPS,
    Fill,
    Level,
    OpportunityKind,
    OrderBook,
    Rejection,
    RejectReason,
    SpreadOpportunity,
    TransferMap,
    base_asset,
    to_decimal,
)
from core.transfers import RouteState, route, status_of

ZERO = Decimal(0)
ONE = Decimal(1)
DEFAULT_FRESHNESS_S = Decimal(2)
DEFAULT_PLAUSIBILITY_CAP = Decimal("0.10")

Number = Decimal | float | int | str


def vwap_fill(levels: Sequence[Level], notional_usd: Number) -> Fill:
    """Walk ``levels`` (best first) spending up to ``notional_usd`` of quote currency.

    Returns the VWAP, the base quantity and the notional actually filled, and
    ``complete`` (false when the levels hold less than ``notional_usd``: the fill is
    then everything there is).
    """
    target = to_decimal(notional_usd)
    if target < ZERO:
        raise ValueError("notional must be non-negative")
    remaining = target
    base = ZERO
    spent = ZERO
    used = 0
    for level in levels:
        if remaining <= ZERO:
            break
        if level.size <= ZERO or level.price <= ZERO:
            continue
        level_notional = level.price * level.size
        used += 1
        if level_notional >= remaining:
            base += remaining / level.price
            spent += remaining
            remaining = ZERO
            break
        base += level.size
        spent += level_notional
        remaining -= level_notional
    return Fill(
        vwap=spent / base if base > ZERO else None,
        base_qty=base,
        notional=spent,
        complete=remaining <= ZERO,
        levels_used=used,
    )


def base_fill(levels: Sequence[Level], base_qty: Number) -> Fill:
    """Walk ``levels`` (best first) for up to ``base_qty`` of the base currency."""
    target = to_decimal(base_qty)
    if target < ZERO:
        raise ValueError("quantity must be non-negative")
    remaining = target
    base = ZERO
    notional = ZERO
    used = 0
    for level in levels:
        if remaining <= ZERO:
            break
        if level.size <= ZERO or level.price <= ZERO:
            continue
        used += 1
        take = min(level.size, remaining)
        base += take
        notional += take * level.price
        remaining -= take
    return Fill(
        vwap=notional / base if base > ZERO else None,
        base_qty=base,
        notional=notional,
        complete=remaining <= ZERO,
        levels_used=used,
    )


def side_depth_usd(levels: Sequence[Level]) -> Decimal:
    return sum((lv.price * lv.size for lv in levels if lv.size > ZERO and lv.price > ZERO), ZERO)


def net_return(buy_vwap: Decimal, sell_vwap: Decimal, f_buy: Decimal, f_sell: Decimal) -> Decimal:
    """The issue's formula, as a fraction."""
    cost = buy_vwap * (ONE + f_buy)
    return (sell_vwap * (ONE - f_sell) - cost) / cost


def book_problem(book: OrderBook) -> RejectReason | None:
    """Empty, one-sided or crossed: a book we must not trade against."""
    if not book.bids and not book.asks:
        return RejectReason.EMPTY_BOOK
    if not book.bids or not book.asks:
        return RejectReason.ONE_SIDED_BOOK
    best_bid, best_ask = book.bids[0].price, book.asks[0].price
    if best_bid >= best_ask:
        return RejectReason.CROSSED_BOOK
    return None


def evaluate_spread(
    symbol: str,
    buy_book: OrderBook,
    sell_book: OrderBook,
    fees: FeeSchedule,
    notional: Number,
    now: datetime,
    freshness_s: Number = DEFAULT_FRESHNESS_S,
    plausibility_cap: Number = DEFAULT_PLAUSIBILITY_CAP,
    *,
    transfer: TransferMap | None = None,
    min_net_bps: Number = ZERO,
    leg_skew_s: Number | None = None,
) -> SpreadOpportunity | Rejection:
    """Evaluate buying ``notional`` USD on ``buy_book``'s asks and selling it into ``sell_book``'s bids.

    Returns a :class:`Rejection` when the candidate cannot be evaluated (same
    exchange, a stale leg, an empty/one-sided/crossed book), else a
    :class:`SpreadOpportunity` — also when it loses money (``net_bps`` negative,
    flagged ``below_threshold``). Guards, in order: same exchange; each book's age
    against ``now`` (``stale``); the legs' distance from each other, bound
    ``leg_skew_s`` defaulting to ``freshness_s`` (``stale_leg``); each book's shape.
    Flags on an evaluated candidate: ``implausible_spread`` (gross above
    ``plausibility_cap``), ``not_transferable`` (no common network with withdrawals open
    on the buy venue and deposits open on the sell venue, ``core.transfers``),
    ``insufficient_depth``, ``below_threshold`` (net under ``min_net_bps``) block the
    push; ``default_fee`` and ``transfer_unknown`` (a venue does not say) are
    informational. With ``transfer`` given, the cheapest open route's withdrawal fee is
    subtracted from ``net_bps`` (``transfer_bps``, in bps of the executable quantity);
    ``transfer=None`` checks no transfers. A book's age is measured from its ``ts`` (exchange time); a
    timestamp ahead of ``now`` counts as age 0.
    """
    fresh = to_decimal(freshness_s)
    skew = fresh if leg_skew_s is None else to_decimal(leg_skew_s)
    cap = to_decimal(plausibility_cap)
    size = to_decimal(notional)
    if size <= ZERO:
        raise ValueError("notional must be positive")

    def reject(reason: RejectReason, detail: str = "") -> Rejection:
        return Rejection(
            kind=OpportunityKind.SPOT_SPREAD,
            symbol=symbol,
            buy_exchange=buy_book.exchange,
            sell_exchange=sell_book.exchange,
            reason=reason,
            detail=detail,
            detected_at=now,
        )

    if buy_book.exchange == sell_book.exchange:
        return reject(RejectReason.SAME_EXCHANGE)
    for book in (buy_book, sell_book):
        age = Decimal(str((now - book.ts).total_seconds()))
        if age > fresh:
            return reject(RejectReason.STALE, f"{book.exchange} book is {age}s old (bound {fresh}s)")
    leg_gap = abs(Decimal(str((buy_book.ts - sell_book.ts).total_seconds())))
    if leg_gap > skew:
        return reject(RejectReason.STALE_LEG, f"legs {leg_gap}s apart (bound {skew}s)")
    for book in (buy_book, sell_book):
        problem = book_problem(book)
        if problem is not None:
            return reject(problem, f"{book.exchange} book")

    buy_fee = fees.fee(buy_book.exchange, buy_book.market_type)
    sell_fee = fees.fee(sell_book.exchange, sell_book.market_type)

    wanted = vwap_fill(buy_book.asks, size)
    bid_base = sum((lv.size for lv in sell_book.bids if lv.size > ZERO and lv.price > ZERO), ZERO)
    qty = min(wanted.base_qty, bid_base)
    buy = base_fill(buy_book.asks, qty) if qty < wanted.base_qty else wanted
    sell = base_fill(sell_book.bids, qty)
    if buy.vwap is None or sell.vwap is None:  # pragma: no cover - excluded by book_problem
        return reject(RejectReason.EMPTY_BOOK, "nothing fillable")

    gross = (sell.vwap - buy.vwap) / buy.vwap
    net = net_return(buy.vwap, sell.vwap, buy_fee.rate, sell_fee.rate)
    gross_bps = gross * BPS
    asset = base_asset(symbol)
    way = (
        route(status_of(transfer, buy_book.exchange, asset), status_of(transfer, sell_book.exchange, asset))
        if transfer is not None
        else None
    )
    transfer_bps = to_decimal(way.fee) / qty * BPS if way is not None and way.fee is not None else None
    net_bps = net * BPS - (transfer_bps or ZERO)

    flags: list[RejectReason] = []
    if gross > cap:
        flags.append(RejectReason.IMPLAUSIBLE_SPREAD)
    if way is not None and way.state is RouteState.CLOSED:
        flags.append(RejectReason.NOT_TRANSFERABLE)
    if not (wanted.complete and qty >= wanted.base_qty):
        flags.append(RejectReason.INSUFFICIENT_DEPTH)
    if net_bps < to_decimal(min_net_bps) or net_bps <= ZERO:
        flags.append(RejectReason.BELOW_THRESHOLD)
    if buy_fee.is_default or sell_fee.is_default:
        flags.append(RejectReason.DEFAULT_FEE)
    if way is not None and way.state is RouteState.UNKNOWN:
        flags.append(RejectReason.TRANSFER_UNKNOWN)

    return SpreadOpportunity(
        symbol=symbol,
        buy_exchange=buy_book.exchange,
        sell_exchange=sell_book.exchange,
        notional_usd=size,
        buy_vwap=buy.vwap,
        sell_vwap=sell.vwap,
        gross_bps=gross_bps,
        net_bps=net_bps,
        executable_base=qty,
        executable_usd=buy.notional,
        buy_depth_usd=side_depth_usd(buy_book.asks),
        sell_depth_usd=side_depth_usd(sell_book.bids),
        buy_fee=buy_fee.rate,
        sell_fee=sell_fee.rate,
        flags=tuple(flags),
        pushable=not any(f in BLOCKING_FLAGS for f in flags),
        buy_ts=buy_book.ts,
        sell_ts=sell_book.ts,
        detected_at=now,
        transfer_bps=transfer_bps,
        transfer_network=way.network if way is not None else None,
    )
