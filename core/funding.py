"""Funding-rate carry between perpetual swaps of the same asset on two exchanges.

Pure and ``Decimal``; ``now`` is injected. The vectorised twin is
``pipeline.detect_funding.detect_funding``.

- Each rate is normalised to *per hour* by its own interval (1 h, 4 h, 8 h, …): the
  interval is an input, never assumed.
- Long the perp with the lower hourly rate, short the higher: a long pays the rate, a
  short receives it, so the carry per hour is ``r_short - r_long ≥ 0``. Ties go long
  on the exchange whose name sorts first. Funding is paid at discrete times; the
  carry is treated as accruing continuously (fine over a horizon of several
  intervals, optimistic over one).
- Round-trip cost, as a fraction of the notional of one leg: four taker fills
  (open and close on both legs, swap fees) ``2·f_long + 2·f_short``, plus the basis
  cost. With ``basis = (mark_short - mark_long) / mark_long``, the price PnL of the
  pair is ``entry_basis - exit_basis``, so ``basis_cost = exit_basis - entry_basis``
  (``exit_basis`` is an input, default 0: the perps converge). By default a
  favourable entry basis is *not* credited (``basis_cost`` is floored at 0) because
  convergence is not guaranteed; ``credit_favourable_basis=True`` credits it. No mark
  price on a leg → basis not costed, flagged ``basis_unknown``.
- ``net = spread_per_hour · horizon - roundtrip_cost`` over the holding horizon
  (default 7 days); ``net_apr = net · 8760 / horizon``; ``gross_apr = spread_per_hour
  · 8760`` (365 days); ``breakeven_hours = roundtrip_cost / spread_per_hour``.
- The settled (current) rate is used by default; ``use_predicted=True`` uses each
  side's predicted ``next_funding_rate`` when *both* give one (flag ``predicted_rate``),
  else falls back to the settled rates (flag ``predicted_unavailable``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from core.fees import FeeSchedule
from core.models import (
    BLOCKING_FLAGS,
    BPS,
    FundingOpportunity,
    FundingSnapshot,
    MarketType,
    OpportunityKind,
    RateSource,
    Rejection,
    RejectReason,
    to_decimal,
)

ZERO = Decimal(0)
HOURS_PER_YEAR = Decimal(24 * 365)
DEFAULT_HORIZON_HOURS = Decimal(24 * 7)
DEFAULT_FUNDING_FRESHNESS_S = Decimal(60)
DEFAULT_BASIS_CAP = Decimal("0.10")

Number = Decimal | float | int | str


def rate_per_hour(rate: Number, interval_hours: Number) -> Decimal:
    """A per-interval funding rate as a per-hour rate, by its own interval."""
    interval = to_decimal(interval_hours)
    if interval <= ZERO:
        raise ValueError(f"funding interval must be positive hours, got {interval_hours}")
    return to_decimal(rate) / interval


def evaluate_funding(
    a: FundingSnapshot,
    b: FundingSnapshot,
    fees: FeeSchedule,
    notional: Number,
    now: datetime,
    *,
    horizon_hours: Number = DEFAULT_HORIZON_HOURS,
    use_predicted: bool = False,
    exit_basis: Number = ZERO,
    credit_favourable_basis: bool = False,
    freshness_s: Number = DEFAULT_FUNDING_FRESHNESS_S,
    basis_cap: Number = DEFAULT_BASIS_CAP,
    min_net_apr: Number = ZERO,
) -> FundingOpportunity | Rejection:
    """Evaluate the carry between two snapshots of the same perpetual on two exchanges.

    Guards: same exchange, a non-positive interval, a snapshot older than
    ``freshness_s`` against ``now`` (``stale``) or the other leg (``stale_leg``) → a
    :class:`Rejection`. Flags: ``implausible_spread`` when ``|entry_basis| >
    basis_cap`` (two different assets behind one ticker), ``below_threshold`` when
    ``net_apr < min_net_apr`` or the net is not positive; both block the push.
    ``default_fee``, ``predicted_rate``, ``predicted_unavailable``, ``basis_unknown``
    are informational.
    """
    size = to_decimal(notional)
    horizon = to_decimal(horizon_hours)
    fresh = to_decimal(freshness_s)
    if size <= ZERO or horizon <= ZERO:
        raise ValueError("notional and horizon must be positive")
    if a.symbol != b.symbol:
        raise ValueError(f"funding legs of different symbols: {a.symbol} vs {b.symbol}")

    def reject(reason: RejectReason, detail: str = "") -> Rejection:
        long_, short_ = sorted((a.exchange, b.exchange))
        return Rejection(
            kind=OpportunityKind.FUNDING_RATE,
            symbol=a.symbol,
            buy_exchange=long_,
            sell_exchange=short_,
            reason=reason,
            detail=detail,
            detected_at=now,
        )

    if a.exchange == b.exchange:
        return reject(RejectReason.SAME_EXCHANGE)
    for snap in (a, b):
        if snap.interval_hours <= ZERO:
            return reject(RejectReason.INVALID_INTERVAL, f"{snap.exchange}: {snap.interval_hours}h")
    for snap in (a, b):
        age = Decimal(str((now - snap.ts).total_seconds()))
        if age > fresh:
            return reject(RejectReason.STALE, f"{snap.exchange} funding is {age}s old (bound {fresh}s)")
    gap = abs(Decimal(str((a.ts - b.ts).total_seconds())))
    if gap > fresh:
        return reject(RejectReason.STALE_LEG, f"legs {gap}s apart (bound {fresh}s)")

    flags: list[RejectReason] = []
    source = RateSource.SETTLED
    rate_a, rate_b = a.funding_rate, b.funding_rate
    if use_predicted:
        if a.next_funding_rate is not None and b.next_funding_rate is not None:
            rate_a, rate_b = a.next_funding_rate, b.next_funding_rate
            source = RateSource.PREDICTED
            flags.append(RejectReason.PREDICTED_RATE)
        else:
            flags.append(RejectReason.PREDICTED_UNAVAILABLE)
    ph_a = rate_per_hour(rate_a, a.interval_hours)
    ph_b = rate_per_hour(rate_b, b.interval_hours)
    if ph_a < ph_b or (ph_a == ph_b and a.exchange < b.exchange):
        long_s, short_s, long_ph, short_ph = a, b, ph_a, ph_b
    else:
        long_s, short_s, long_ph, short_ph = b, a, ph_b, ph_a

    spread_ph = short_ph - long_ph
    f_long = fees.fee(long_s.exchange, MarketType.SWAP)
    f_short = fees.fee(short_s.exchange, MarketType.SWAP)
    fee_cost = 2 * f_long.rate + 2 * f_short.rate

    entry_basis: Decimal | None = None
    basis_cost = ZERO
    if long_s.mark_price and short_s.mark_price and long_s.mark_price > ZERO:
        entry_basis = (short_s.mark_price - long_s.mark_price) / long_s.mark_price
        basis_cost = to_decimal(exit_basis) - entry_basis
        if not credit_favourable_basis:
            basis_cost = max(basis_cost, ZERO)
        if abs(entry_basis) > to_decimal(basis_cap):
            flags.append(RejectReason.IMPLAUSIBLE_SPREAD)
    else:
        flags.append(RejectReason.BASIS_UNKNOWN)
    roundtrip = fee_cost + basis_cost

    gross = spread_ph * horizon
    net = gross - roundtrip
    net_apr = net * HOURS_PER_YEAR / horizon
    if spread_ph > ZERO:
        breakeven: Decimal | None = max(roundtrip, ZERO) / spread_ph
    else:
        breakeven = None
    if net <= ZERO or net_apr < to_decimal(min_net_apr):
        flags.append(RejectReason.BELOW_THRESHOLD)
    if f_long.is_default or f_short.is_default:
        flags.append(RejectReason.DEFAULT_FEE)

    return FundingOpportunity(
        symbol=a.symbol,
        buy_exchange=long_s.exchange,
        sell_exchange=short_s.exchange,
        notional_usd=size,
        rate_source=source,
        long_rate_per_hour=long_ph,
        short_rate_per_hour=short_ph,
        long_interval_hours=long_s.interval_hours,
        short_interval_hours=short_s.interval_hours,
        spread_per_hour=spread_ph,
        spread_per_day=spread_ph * 24,
        gross_apr=spread_ph * HOURS_PER_YEAR,
        fees=fee_cost,
        entry_basis=entry_basis,
        basis_cost=basis_cost,
        roundtrip_cost=roundtrip,
        horizon_hours=horizon,
        gross_bps=gross * BPS,
        net_bps=net * BPS,
        net_apr=net_apr,
        breakeven_hours=breakeven,
        long_next_funding=long_s.next_funding_ts,
        short_next_funding=short_s.next_funding_ts,
        flags=tuple(flags),
        pushable=not any(f in BLOCKING_FLAGS for f in flags),
        detected_at=now,
    )
