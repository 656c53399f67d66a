"""Vectorised opportunity detection over all symbols and exchange pairs in one tick.

The float64 twin of ``core.spread.evaluate_spread`` (same formulas, same guards, same
flags, in the same order; cross-checked in the tests), and the helpers the detectors share
(fee and route tables, flags, scoring); funding: :mod:`pipeline.detect_funding`.
No Python loop per pair: spot spreads are one NumPy pass over arrays gathered once from
the books (:mod:`pipeline.detect_arrays`), with Polars only for the output frame (each
Polars query costs about half a millisecond whatever its size; the expression form of
this detector needed some 40 per tick).

The VWAP walk on a book side uses its running total ``cum`` (base size or quote
notional): filling a target ``t`` takes ``max(0, own - max(0, cum - t))`` from each level
(exactly ``min(size, what is left)``, with rounding on the book's scale); summing
``price x`` that (or that ``/ price``) gives the fill. Sizing is the one of ``core.spread``: buy
``notional`` USD on the buy book's asks → ``q_buy``; ``q = min(q_buy, bid size of the
sell book)``; both VWAPs are for exactly ``q``.

Pruning: a VWAP never beats the top of the book, so a pair whose top-of-book gross
is not above ``min_gross_bps`` cannot be a candidate and is dropped before any walk
(``min_gross_bps=None`` keeps every pair: used by the cross-check).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from core.fees import UNKNOWN_FEES, FeeSchedule
from core.models import OpportunityKind, Priority, RejectReason, TransferMap, TransferStatus
from core.scoring import SPOT_SCORING, ScoringConfig
from core.transfers import TRANSFER_UNKNOWN_FACTOR, RouteState, routes
from pipeline import detect_arrays as arr
from pipeline.detect_arrays import latest_per_key

DEFAULT_NOTIONALS: tuple[float, ...] = (1_000.0, 10_000.0)
HOURS_PER_YEAR = 24.0 * 365.0
_REL_TOL = 1e-12

FeesInput = FeeSchedule | pl.DataFrame
TransferInput = TransferMap | pl.DataFrame | None


# --------------------------------------------------------------------------- helpers


def _ms(col: str) -> pl.Expr:
    """A timestamp column as epoch milliseconds."""
    return pl.col(col).dt.epoch("ms")


def fee_table(fees: FeesInput, exchanges: Iterable[str]) -> pl.DataFrame:
    """``exchange, market_type, taker_fee, fee_is_default`` for every exchange seen.

    ``fees``: a :class:`core.fees.FeeSchedule`, or a table with ``exchange, market_type,
    taker_fee`` (and optionally ``fee_is_default``). An (exchange, market type) the
    table lacks gets :data:`core.fees.UNKNOWN_FEES`, flagged default.
    """
    names = sorted(set(exchanges))
    if isinstance(fees, FeeSchedule):
        rows = fees.rows(names)
        return pl.DataFrame(
            rows,
            schema={
                "exchange": pl.String,
                "market_type": pl.String,
                "taker_fee": pl.Float64,
                "fee_is_default": pl.Boolean,
            },
        )
    if "fee_is_default" not in fees.columns:
        fees = fees.with_columns(fee_is_default=pl.lit(False))
    given = fees.select("exchange", "market_type", "taker_fee", "fee_is_default")
    grid = pl.DataFrame({"exchange": names}).join(
        pl.DataFrame({"market_type": ["spot", "swap", "future"]}), how="cross"
    )
    return (
        grid.join(given, on=["exchange", "market_type"], how="left")
        .with_columns(
            fee_is_default=pl.col("fee_is_default").fill_null(pl.col("taker_fee").is_null()),
            taker_fee=pl.col("taker_fee").fill_null(
                pl.when(pl.col("market_type") == "spot")
                .then(float(UNKNOWN_FEES["spot_taker"]))
                .otherwise(float(UNKNOWN_FEES["swap_taker"]))
            ),
        )
        .select("exchange", "market_type", "taker_fee", "fee_is_default")
    )


def transfer_map(transfer: TransferInput) -> TransferMap | None:
    """A transfer mapping from a mapping or a table (``exchange, asset, deposit_ok,
    withdraw_ok``, one row per venue and asset: currency-level status only)."""
    if transfer is None or not isinstance(transfer, pl.DataFrame):
        return transfer
    out: dict[str, dict[str, TransferStatus]] = {}
    for row in transfer.select("exchange", "asset", "deposit_ok", "withdraw_ok").iter_rows(named=True):
        out.setdefault(row["exchange"], {})[row["asset"]] = TransferStatus(
            row["deposit_ok"], row["withdraw_ok"]
        )
    return out


_ROUTE_SCHEMA = {
    "asset": pl.String,
    "buy_exchange": pl.String,
    "sell_exchange": pl.String,
    "route_state": pl.String,
    "transfer_network": pl.String,
    "transfer_fee": pl.Float64,
}


def route_table(transfer: TransferInput, combos: pl.DataFrame) -> pl.DataFrame:
    """``core.transfers.route`` of every (asset, buy_exchange, sell_exchange) row of ``combos``.

    ``transfer=None``: transfers are not checked (sim and replay sources): every route is
    open and uncosted."""
    mapping = transfer_map(transfer)
    keys = combos.select("asset", "buy_exchange", "sell_exchange").unique()
    if mapping is None:
        return keys.with_columns(
            route_state=pl.lit(RouteState.OPEN.value),
            transfer_network=pl.lit(None, pl.String),
            transfer_fee=pl.lit(None, pl.Float64),
        )
    found = routes(mapping, keys.iter_rows())
    rows = [(a, b, c, r.state.value, r.network, r.fee) for (a, b, c), r in found.items()]
    return pl.DataFrame(rows, schema=_ROUTE_SCHEMA, orient="row")


def _ts_from_ms(col: str) -> pl.Expr:
    """Epoch milliseconds back to a UTC ``timestamp[ms]`` (the lake's ``ts`` type)."""
    return pl.col(col).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")


def _flags(conditions: Sequence[tuple[pl.Expr, RejectReason]]) -> pl.Expr:
    return pl.concat_str(
        [pl.when(cond).then(pl.lit(reason.value)) for cond, reason in conditions],
        separator=",",
        ignore_nulls=True,
    ).fill_null("")


def confidence_expr(
    net_bps: pl.Expr,
    notional: pl.Expr,
    executable_usd: pl.Expr,
    age_s: pl.Expr,
    freshness_s: float,
    config: ScoringConfig,
) -> pl.Expr:
    """``core.scoring.score`` with persistence and volatility unknown, as an expression."""
    span = config.full_edge_bps - config.min_net_bps
    edge = ((net_bps - config.min_net_bps) / span).clip(0.0, 1.0)
    depth = (executable_usd / notional).clip(0.0, 1.0)
    fresh = 1.0 - 0.5 * (age_s / freshness_s).clip(0.0, 1.0) if freshness_s > 0 else pl.lit(0.5)
    total = config.w_edge + config.w_depth + config.w_freshness
    conf = (
        edge.pow(config.w_edge / total)
        * depth.pow(config.w_depth / total)
        * fresh.pow(config.w_freshness / total)
    )
    return conf.clip(0.0, 1.0)


def priority_expr(confidence: pl.Expr, config: ScoringConfig) -> pl.Expr:
    return (
        pl.when(confidence >= config.high_threshold)
        .then(pl.lit(Priority.HIGH.value))
        .when(confidence >= config.push_threshold)
        .then(pl.lit(Priority.MEDIUM.value))
        .otherwise(pl.lit(Priority.LOW.value))
    )


# --------------------------------------------------------------------------- spot spread


def book_rejections(
    books: pa.Table | pl.DataFrame,
    now_ms: int,
    freshness_s: float = 2.0,
    market_types: Sequence[str] = ("spot",),
) -> pl.DataFrame:
    """``exchange, symbol, market_type, reason`` of every latest book the detector will not use.

    For the validation audit: a rejected book takes out every pair it is part of.
    """
    tick = arr.Books.gather(books, market_types)
    reason = tick.reasons(now_ms, freshness_s * 1000.0) if tick is not None else None
    rows = np.flatnonzero(reason > 0) if reason is not None else None
    if tick is None or reason is None or rows is None or len(rows) == 0:
        return pl.DataFrame(schema=dict.fromkeys(("exchange", "symbol", "market_type", "reason"), pl.String))
    return arr.strings(
        {
            "exchange": (tick.ex_names, tick.ex[rows]),
            "symbol": (tick.sym_names, tick.sym[rows]),
            "market_type": (tick.mt_names, tick.mt[rows]),
            "reason": (arr.REASONS, reason[rows]),
        }
    )


def detect_spreads(
    books: pa.Table | pa.RecordBatch | pl.DataFrame,
    fees: FeesInput,
    notionals: Sequence[float] = DEFAULT_NOTIONALS,
    *,
    now_ms: int,
    freshness_s: float = 2.0,
    plausibility_cap: float = 0.10,
    transfer: TransferInput = None,
    min_net_bps: float = 0.0,
    min_gross_bps: float | None = 0.0,
    leg_skew_s: float | None = None,
    market_types: Sequence[str] = ("spot",),
    scoring: ScoringConfig = SPOT_SCORING,
) -> pl.DataFrame:
    """Every (symbol, buy_exchange, sell_exchange, notional) spot-spread candidate of one tick.

    ``books``: ORDER_BOOKS rows (several per key allowed: the latest is used).
    Candidates are kept when their VWAP ``gross_bps > min_gross_bps`` (``None``: all
    evaluable pairs, losing ones included). Pairs with a rejected book
    (:func:`book_rejections`) or legs further apart than ``leg_skew_s`` (default
    ``freshness_s``) are left out. Columns: ``kind, symbol, buy_exchange,
    sell_exchange, notional_usd, gross_bps, net_bps, buy_vwap, sell_vwap,
    executable_base, executable_usd, buy_depth_usd, sell_depth_usd, buy_fee,
    sell_fee, flags`` (comma-separated, ``core.models.RejectReason`` values),
    ``pushable`` (no blocking flag), ``confidence, priority`` (``core.scoring``
    with persistence and volatility unknown), ``buy_ts, sell_ts``.

    One pass in NumPy over arrays gathered once from the books (``pipeline.detect_arrays``);
    Polars only builds the output frame.
    """
    fresh_ms = freshness_s * 1000.0
    skew_ms = fresh_ms if leg_skew_s is None else leg_skew_s * 1000.0
    tick = arr.Books.gather(books, market_types)
    if tick is None:
        return _empty_spreads()
    ex, ex_names, sym, sym_names = tick.ex, tick.ex_names, tick.sym, tick.sym_names
    ts_ms, best_bid, best_ask = tick.ts_ms, tick.best_bid, tick.best_ask

    # usable books (no book_rejections reason), then pairs, skew and top-of-book pruning
    usable = tick.reasons(now_ms, fresh_ms) == 0
    ok = np.flatnonzero(usable)
    buy, sell = arr.pairs_within(sym[ok])
    buy, sell = ok[buy], ok[sell]
    keep = (ex[buy] != ex[sell]) & (np.abs(ts_ms[buy] - ts_ms[sell]) <= skew_ms)
    if min_gross_bps is not None:
        bound = min_gross_bps / 10_000.0
        with np.errstate(all="ignore"):
            keep &= (best_bid[sell] - best_ask[buy]) / best_ask[buy] > bound - _REL_TOL * (1 + abs(bound))
    buy, sell = buy[keep], sell[keep]
    if len(buy) == 0:
        return _empty_spreads()
    # output order: symbol, buy venue, sell venue (codes sort like the names), then notional
    order = np.lexsort((ex[sell], ex[buy], sym[buy]))
    buy, sell = buy[order], sell[order]

    fee, fee_default = _fee_arrays(fees, ex_names, tick.mt_names, ex, tick.mt)
    route_state, route_net, route_fee, route_idx = _route_arrays(
        transfer, sym_names, ex_names, sym, ex, buy, sell
    )

    # per book, once: the running totals of both sides and the base quantity each notional buys
    sizes = [float(n) for n in notionals]
    with np.errstate(all="ignore"):
        sides = tick.sides(sizes)

        # candidates: every kept pair x notional (notionals ascending within a pair)
        n_idx = np.argsort(np.asarray(sizes), kind="stable")
        per = len(sizes)
        pair = np.repeat(np.arange(len(buy)), per)
        nid = np.tile(n_idx, len(buy))
        b, s = buy[pair], sell[pair]
        notional = np.asarray(sizes)[nid]
        q_buy = sides.q_buy[b, nid]
        bid_total_base = sides.bid_total_base[s]
        q = np.minimum(q_buy, bid_total_base)
        proceeds = sides.sell_proceeds(s, q)
        ask_total_usd = sides.ask_total_usd[b]
        # buying q_buy costs the notional (or the whole ask side when it is thinner)
        cost = np.minimum(notional, ask_total_usd)
        thin = np.flatnonzero(q < q_buy)  # rare: the bids cannot absorb q_buy, buy only q
        if len(thin):
            cost[thin] = sides.buy_cost(b[thin], q[thin])
        buy_vwap = cost / q
        sell_vwap = proceeds / q
        gross_bps = (sell_vwap - buy_vwap) / buy_vwap * 10_000.0
        if min_gross_bps is not None:
            rows = np.flatnonzero(gross_bps > min_gross_bps)
            if len(rows) < len(pair):
                pair, b, s, notional, q_buy, bid_total_base = (
                    x[rows] for x in (pair, b, s, notional, q_buy, bid_total_base)
                )
                q, cost, ask_total_usd, buy_vwap, sell_vwap, gross_bps = (
                    x[rows] for x in (q, cost, ask_total_usd, buy_vwap, sell_vwap, gross_bps)
                )
        if len(pair) == 0:
            return _empty_spreads()
        buy_fee, sell_fee = fee[b], fee[s]
        buy_all_in = buy_vwap * (1.0 + buy_fee)
        net = (sell_vwap * (1.0 - sell_fee) - buy_all_in) / buy_all_in
        # the withdrawal fee (in the asset) as a share of the executable quantity, in bps
        route = route_idx[pair]
        t_fee = route_fee[route]
        no_fee = np.isnan(t_fee)
        transfer_bps = t_fee / q * 10_000.0
        net_bps = net * 10_000.0 - np.where(no_fee, 0.0, transfer_bps)
        state = route_state[route]
        blocking = [
            gross_bps > plausibility_cap * 10_000.0,
            state == _CLOSED,
            (notional > ask_total_usd) | (q_buy > bid_total_base),
            (net_bps < min_net_bps) | (net_bps <= 0.0),
        ]
        unknown = state == _UNKNOWN
        info = [fee_default[b] | fee_default[s], unknown]
        bits = np.zeros(len(pair), dtype=np.int64)
        for i, cond in enumerate(blocking + info):
            bits |= cond.astype(np.int64) << i
        pushable = (bits & ((1 << len(blocking)) - 1)) == 0
        age_s = np.maximum((now_ms - np.minimum(ts_ms[b], ts_ms[s])) / 1000.0, 0.0)
        confidence = _confidence(net_bps, notional, cost, age_s, freshness_s, scoring)
        confidence = confidence * np.where(unknown, TRANSFER_UNKNOWN_FACTOR, 1.0)
        priority = np.where(
            confidence >= scoring.high_threshold, 0, np.where(confidence >= scoring.push_threshold, 1, 2)
        )
    text = arr.strings(
        {
            "kind": ([OpportunityKind.SPOT_SPREAD.value], np.zeros(len(pair), dtype=np.int64)),
            "symbol": (sym_names, sym[b]),
            "buy_exchange": (ex_names, ex[b]),
            "sell_exchange": (ex_names, ex[s]),
            "transfer_network": (route_net, route),
            "flags": (_FLAG_TEXT, bits),
            "priority": (_PRIORITIES, priority),
        }
    )
    return pl.DataFrame(
        [
            *(text.get_column(c) for c in ("kind", "symbol", "buy_exchange", "sell_exchange")),
            arr.floats("notional_usd", notional),
            arr.floats("gross_bps", gross_bps),
            arr.floats("net_bps", net_bps),
            arr.floats("buy_vwap", buy_vwap),
            arr.floats("sell_vwap", sell_vwap),
            arr.floats("executable_base", q),
            arr.floats("executable_usd", cost),
            arr.floats("buy_depth_usd", ask_total_usd),
            arr.floats("sell_depth_usd", sides.bid_total_usd[s]),
            arr.floats("buy_fee", buy_fee),
            arr.floats("sell_fee", sell_fee),
            arr.floats("transfer_bps", transfer_bps, no_fee),
            text.get_column("transfer_network"),
            text.get_column("flags"),
            pl.Series("pushable", pushable, dtype=pl.Boolean),
            arr.floats("confidence", confidence),
            arr.timestamps("buy_ts", ts_ms[b]),
            arr.timestamps("sell_ts", ts_ms[s]),
            text.get_column("priority"),
        ]
    )


_CLOSED, _UNKNOWN = 1, 2
_ROUTE_CODES = {RouteState.OPEN: 0, RouteState.CLOSED: _CLOSED, RouteState.UNKNOWN: _UNKNOWN}
_FLAG_ORDER = (
    RejectReason.IMPLAUSIBLE_SPREAD,
    RejectReason.NOT_TRANSFERABLE,
    RejectReason.INSUFFICIENT_DEPTH,
    RejectReason.BELOW_THRESHOLD,
    RejectReason.DEFAULT_FEE,
    RejectReason.TRANSFER_UNKNOWN,
)
_FLAG_TEXT = [
    ",".join(r.value for i, r in enumerate(_FLAG_ORDER) if code >> i & 1)
    for code in range(1 << len(_FLAG_ORDER))
]
"""The ``flags`` text of each bit set (bit ``i``: ``_FLAG_ORDER[i]``)."""
_PRIORITIES = [Priority.HIGH.value, Priority.MEDIUM.value, Priority.LOW.value]


def _fee_arrays(
    fees: FeesInput, ex_names: list[str], mt_names: list[str], ex: np.ndarray, mt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per book: taker fee and whether it is the default (:func:`fee_table`'s, NaN when the
    table lacks the market type)."""
    if isinstance(fees, FeeSchedule):
        rows = fees.rows(ex_names)
        table = {(r["exchange"], r["market_type"]): (r["taker_fee"], r["fee_is_default"]) for r in rows}
    else:
        table = {
            (e, m): (f, d)
            for e, m, f, d in fee_table(fees, ex_names)
            .select("exchange", "market_type", "taker_fee", "fee_is_default")
            .iter_rows()
        }
    rate = np.full((len(ex_names), len(mt_names)), np.nan)
    default = np.zeros((len(ex_names), len(mt_names)), dtype=bool)
    for i, e in enumerate(ex_names):
        for j, m in enumerate(mt_names):
            if (e, m) in table:
                f, d = table[(e, m)]
                rate[i, j] = np.nan if f is None else float(str(f)) if not isinstance(f, float) else f
                default[i, j] = bool(d)
    return rate[ex, mt], default[ex, mt]


def _route_arrays(
    transfer: TransferInput,
    sym_names: list[str],
    ex_names: list[str],
    sym: np.ndarray,
    ex: np.ndarray,
    buy: np.ndarray,
    sell: np.ndarray,
) -> tuple[np.ndarray, list[str | None], np.ndarray, np.ndarray]:
    """Per distinct (asset, buy venue, sell venue) route: state code, network, fee (NaN:
    none); and each pair's route index. ``transfer=None``: one open, uncosted route."""
    mapping = transfer_map(transfer)
    if mapping is None:
        return np.zeros(1, dtype=np.int64), [None], np.full(1, np.nan), np.zeros(len(buy), dtype=np.int64)
    assets = [s.split("/")[0] for s in sym_names]
    n_ex = len(ex_names)
    key = (sym[buy] * n_ex + ex[buy]) * n_ex + ex[sell]
    uniq, idx = np.unique(key, return_inverse=True)
    combos = [
        (assets[k // (n_ex * n_ex)], ex_names[k // n_ex % n_ex], ex_names[k % n_ex]) for k in uniq.tolist()
    ]
    found = routes(mapping, combos)
    ways = [found[c] for c in combos]
    state = np.array([_ROUTE_CODES[w.state] for w in ways], dtype=np.int64)
    fee = np.array([np.nan if w.fee is None else float(w.fee) for w in ways])
    return state, [w.network for w in ways], fee, idx.astype(np.int64)


def _confidence(
    net_bps: np.ndarray,
    notional: np.ndarray,
    executable_usd: np.ndarray,
    age_s: np.ndarray,
    freshness_s: float,
    config: ScoringConfig,
) -> np.ndarray:
    """:func:`confidence_expr` in NumPy."""
    span = config.full_edge_bps - config.min_net_bps
    edge = np.clip((net_bps - config.min_net_bps) / span, 0.0, 1.0)
    depth = np.clip(executable_usd / notional, 0.0, 1.0)
    fresh = 1.0 - 0.5 * np.clip(age_s / freshness_s, 0.0, 1.0) if freshness_s > 0 else 0.5
    total = config.w_edge + config.w_depth + config.w_freshness
    conf = (
        edge ** (config.w_edge / total)
        * depth ** (config.w_depth / total)
        * fresh ** (config.w_freshness / total)
    )
    return np.clip(conf, 0.0, 1.0)


_SPREAD_SCHEMA: dict[str, Any] = {
    "kind": pl.String,
    "symbol": pl.String,
    "buy_exchange": pl.String,
    "sell_exchange": pl.String,
    "notional_usd": pl.Float64,
    "gross_bps": pl.Float64,
    "net_bps": pl.Float64,
    "buy_vwap": pl.Float64,
    "sell_vwap": pl.Float64,
    "executable_base": pl.Float64,
    "executable_usd": pl.Float64,
    "buy_depth_usd": pl.Float64,
    "sell_depth_usd": pl.Float64,
    "buy_fee": pl.Float64,
    "sell_fee": pl.Float64,
    "transfer_bps": pl.Float64,
    "transfer_network": pl.String,
    "flags": pl.String,
    "pushable": pl.Boolean,
    "confidence": pl.Float64,
    "buy_ts": pl.Datetime("ms", "UTC"),
    "sell_ts": pl.Datetime("ms", "UTC"),
    "priority": pl.String,
}


def _empty_spreads() -> pl.DataFrame:
    return pl.DataFrame(schema=_SPREAD_SCHEMA)


__all__ = [
    "DEFAULT_NOTIONALS",
    "book_rejections",
    "confidence_expr",
    "detect_spreads",
    "fee_table",
    "latest_per_key",
    "priority_expr",
    "route_table",
    "transfer_map",
]
