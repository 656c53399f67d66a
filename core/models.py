"""Domain types of the opportunity engine.

Money, prices, sizes and rates are ``Decimal`` here (the vectorised detector in
``pipeline.detect`` works on float64 columns and converts at its edge). Datetimes are
UTC-aware. Inputs (levels, books, funding snapshots) are frozen dataclasses: they are
built in bulk and must be cheap. Results are frozen pydantic models: they cross
process boundaries (Ray, Redis, the lake) and serialise to JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_validator

BPS = Decimal(10_000)


class OpportunityKind(StrEnum):
    SPOT_SPREAD = "spot_spread"
    FUNDING_RATE = "funding_rate"
    TECHNICAL = "technical"


class Priority(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class MarketType(StrEnum):
    SPOT = "spot"
    SWAP = "swap"
    FUTURE = "future"


class BookSide(StrEnum):
    """Which side of a book: ``ask`` is where we buy, ``bid`` is where we sell."""

    BID = "bid"
    ASK = "ask"


class RateSource(StrEnum):
    """Which funding rate a funding opportunity was computed on."""

    SETTLED = "settled"
    PREDICTED = "predicted"


class RejectReason(StrEnum):
    """Why a candidate was rejected (not evaluated) or flagged (evaluated, maybe not pushable).

    The value is what goes into the ``flags`` column of the ``opportunities`` dataset
    and into the validation audit. :data:`BLOCKING_FLAGS` says which flags stop a push.
    """

    STALE = "stale"
    """A leg is older than the freshness bound against ``now``."""
    STALE_LEG = "stale_leg"
    """The two legs are further apart in time than the bound."""
    CROSSED_BOOK = "crossed_book"
    """A book's own best bid is at or above its own best ask."""
    EMPTY_BOOK = "empty_book"
    ONE_SIDED_BOOK = "one_sided_book"
    SAME_EXCHANGE = "same_exchange"
    INVALID_INTERVAL = "invalid_interval"
    """A funding interval that is not a positive number of hours."""
    IMPLAUSIBLE_SPREAD = "implausible_spread"
    """Gross spread above the plausibility cap: probably a ticker collision."""
    NOT_TRANSFERABLE = "not_transferable"
    """No common network with withdrawals open on the buy venue and deposits open on the
    sell venue (``core.transfers``)."""
    TRANSFER_UNKNOWN = "transfer_unknown"
    """A venue does not say whether the asset can be withdrawn/deposited: lowers the
    confidence and the push says so (informational)."""
    INSUFFICIENT_DEPTH = "insufficient_depth"
    """The books cannot fill the whole notional; the executable size is smaller."""
    BELOW_THRESHOLD = "below_threshold"
    """Net edge below the configured minimum."""
    DEFAULT_FEE = "default_fee"
    """An exchange's taker fee is not known; a conservative default was used (informational)."""
    PREDICTED_RATE = "predicted_rate"
    """Computed on the predicted next funding rate instead of the settled one (informational)."""
    PREDICTED_UNAVAILABLE = "predicted_unavailable"
    """The predicted rate was asked for but not given; the settled one was used (informational)."""
    BASIS_UNKNOWN = "basis_unknown"
    """No mark price on a leg: the entry basis was not costed (informational)."""


BLOCKING_FLAGS: frozenset[RejectReason] = frozenset(
    {
        RejectReason.IMPLAUSIBLE_SPREAD,
        RejectReason.NOT_TRANSFERABLE,
        RejectReason.INSUFFICIENT_DEPTH,
        RejectReason.BELOW_THRESHOLD,
    }
)
"""Flags that make an evaluated opportunity not pushable. The others are informational."""

UNTRADEABLE_FLAGS: frozenset[str] = frozenset(
    {RejectReason.IMPLAUSIBLE_SPREAD.value, RejectReason.NOT_TRANSFERABLE.value, "volatile"}
)
"""Flags that make an edge no trade at all (a probable ticker collision, a closed transfer,
volatility out of bounds): such an opportunity scores 0 and updates only when its flags change."""


def utc_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Level:
    """One price level: ``price`` in the quote currency, ``size`` in the base currency."""

    price: Decimal
    size: Decimal

    @property
    def notional(self) -> Decimal:
        return self.price * self.size


@dataclass(frozen=True, slots=True)
class OrderBook:
    """A snapshot of one (exchange, symbol) book; both sides best-first."""

    exchange: str
    symbol: str
    ts: datetime
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    market_type: MarketType = MarketType.SPOT

    def __post_init__(self) -> None:
        _require_aware(self.ts)

    @property
    def best_bid(self) -> Decimal | None:
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return self.asks[0].price if self.asks else None

    def side(self, side: BookSide) -> tuple[Level, ...]:
        return self.bids if side is BookSide.BID else self.asks

    @classmethod
    def from_lists(
        cls,
        exchange: str,
        symbol: str,
        ts: datetime,
        bids: list[tuple[float | str | Decimal, float | str | Decimal]] | list[list[float]],
        asks: list[tuple[float | str | Decimal, float | str | Decimal]] | list[list[float]],
        market_type: MarketType = MarketType.SPOT,
    ) -> OrderBook:
        """Build from ``[[price, size], …]`` lists (ccxt's shape); floats go through ``str``."""
        return cls(
            exchange=exchange,
            symbol=symbol,
            ts=ts,
            bids=tuple(Level(to_decimal(p), to_decimal(s)) for p, s in bids),
            asks=tuple(Level(to_decimal(p), to_decimal(s)) for p, s in asks),
            market_type=market_type,
        )


@dataclass(frozen=True, slots=True)
class NetworkStatus:
    """One transfer network of a currency on a venue (``None``: the venue does not say)."""

    network: str
    deposit: bool | None = None
    withdraw: bool | None = None
    fee: float | None = None
    """Withdrawal fee, in units of the currency."""


@dataclass(frozen=True, slots=True)
class TransferStatus:
    """What a venue says about moving one currency in and out (``None``: not said)."""

    deposit_ok: bool | None = True
    withdraw_ok: bool | None = True
    networks: tuple[NetworkStatus, ...] = ()

    @property
    def ok(self) -> bool:
        return self.deposit_ok is not False and self.withdraw_ok is not False


TransferMap = Mapping[str, Mapping[str, TransferStatus | tuple[bool | None, bool | None]]]
"""exchange → asset → status (or ``(deposit_ok, withdraw_ok)``). See ``core.transfers``."""


@dataclass(frozen=True, slots=True)
class FundingSnapshot:
    """The funding state of one perpetual swap on one exchange."""

    exchange: str
    symbol: str
    ts: datetime
    funding_rate: Decimal
    """Current (settled) rate per funding interval, as a fraction."""
    interval_hours: Decimal
    next_funding_ts: datetime | None = None
    next_funding_rate: Decimal | None = None
    """Predicted next rate, when the exchange gives one."""
    mark_price: Decimal | None = None

    def __post_init__(self) -> None:
        _require_aware(self.ts)


@dataclass(frozen=True, slots=True)
class Fill:
    """The result of walking one side of a book.

    ``vwap`` is ``None`` when nothing could be filled. ``complete`` is false when the
    book is shallower than the target: ``base_qty``/``notional`` then say what *is*
    executable.
    """

    vwap: Decimal | None
    base_qty: Decimal
    notional: Decimal
    complete: bool
    levels_used: int


# --------------------------------------------------------------------------- results


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("detected_at", check_fields=False)
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _require_aware(value)


class Rejection(_Result):
    """A candidate that could not be evaluated, with the reason (for the validation audit)."""

    kind: OpportunityKind
    symbol: str
    buy_exchange: str
    sell_exchange: str
    reason: RejectReason
    detail: str = ""
    detected_at: datetime


class SpreadOpportunity(_Result):
    """A cross-exchange spot spread evaluated at one notional.

    ``buy_vwap``/``sell_vwap`` are the average prices for buying and then selling the
    same base quantity ``executable_base``; ``executable_usd`` is what buying it costs
    (before fees). ``*_depth_usd`` is the quote-currency notional on the side we trade
    (asks of the buy book, bids of the sell book) over the levels we have.
    """

    kind: OpportunityKind = OpportunityKind.SPOT_SPREAD
    symbol: str
    buy_exchange: str
    sell_exchange: str
    notional_usd: Decimal
    buy_vwap: Decimal
    sell_vwap: Decimal
    gross_bps: Decimal
    net_bps: Decimal
    executable_base: Decimal
    executable_usd: Decimal
    buy_depth_usd: Decimal
    sell_depth_usd: Decimal
    buy_fee: Decimal
    sell_fee: Decimal
    flags: tuple[RejectReason, ...] = ()
    pushable: bool
    buy_ts: datetime
    sell_ts: datetime
    detected_at: datetime
    transfer_bps: Decimal | None = None
    """The withdrawal fee of the route taken, in bps of the executable quantity (already
    subtracted from ``net_bps``); ``None``: not known or not checked."""
    transfer_network: str | None = None

    @property
    def flags_csv(self) -> str:
        return ",".join(f.value for f in self.flags)


class FundingOpportunity(_Result):
    """A funding-rate carry: long the perp with the lower hourly rate, short the higher.

    Rates are fractions. ``gross_bps``/``net_bps`` are the return over ``horizon_hours``
    (so they fit the ``opportunities`` dataset's columns); the APRs annualise over
    365 days. ``roundtrip_cost`` = four taker fills + the basis cost, as a fraction of
    the notional.
    """

    kind: OpportunityKind = OpportunityKind.FUNDING_RATE
    symbol: str
    buy_exchange: str
    """The long leg."""
    sell_exchange: str
    """The short leg."""
    notional_usd: Decimal
    rate_source: RateSource
    long_rate_per_hour: Decimal
    short_rate_per_hour: Decimal
    long_interval_hours: Decimal
    short_interval_hours: Decimal
    spread_per_hour: Decimal
    spread_per_day: Decimal
    gross_apr: Decimal
    fees: Decimal
    """Four taker fills: 2·f_long + 2·f_short."""
    entry_basis: Decimal | None
    """(mark_short - mark_long) / mark_long at entry; ``None`` without mark prices."""
    basis_cost: Decimal
    roundtrip_cost: Decimal
    horizon_hours: Decimal
    gross_bps: Decimal
    net_bps: Decimal
    net_apr: Decimal
    breakeven_hours: Decimal | None
    """``None`` when the spread is zero (never breaks even)."""
    long_next_funding: datetime | None
    short_next_funding: datetime | None
    flags: tuple[RejectReason, ...] = ()
    pushable: bool
    detected_at: datetime

    @property
    def flags_csv(self) -> str:
        return ",".join(f.value for f in self.flags)


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    """Exact-looking conversion: floats go through ``repr`` so 0.1 stays 0.1."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def base_asset(symbol: str) -> str:
    """``BTC/USDT`` and ``BTC/USDT:USDT`` → ``BTC``."""
    return symbol.split("/", 1)[0]
