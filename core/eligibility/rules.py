"""The six layers over every user at once, as Polars expressions (:func:`evaluate`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from core.accounts import (
    Tier,
    local_day,
)

if TYPE_CHECKING:
    pass
from core.eligibility.hours import _SLOTS, _inside_table, _opening_table
from core.eligibility.opportunity import THRESHOLD_COLUMN, EligibilityPolicy, OpportunityView
from core.eligibility.schema import (
    HOUR_MS,
    KIND_BIT,
    MASK_BITS,
    OVERFLOW_BIT,
    REASON_DTYPE,
    REASONS,
    TIERS,
    Reason,
    to_ms,
)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything :func:`evaluate` and :func:`evaluate_loop` derive from (opp, now, policy)."""

    now_ms: int
    today: tuple[int, ...]
    """Per zone of the vocabulary, the local day of ``now`` (a daily quota's window)."""
    this_hour: int
    kind_bit: int
    tier_allows: tuple[bool, ...]
    daily: tuple[int, ...]  # per tier code, -1 unlimited
    hourly: tuple[int, ...]
    delay_ms: tuple[int, ...]
    beta_needed: bool
    beta_bit: int  # 0: nobody has it
    legs_mask: int
    legs_known: bool
    sym_code: int | None
    group_daily: int
    group_hourly: int
    region_blocked: tuple[bool, ...]
    max_hold_ms: int | None


def _plan(opp: OpportunityView, now: datetime, policy: EligibilityPolicy) -> _Plan:
    vocab = policy.vocab
    now_ms = to_ms(now)
    legs = opp.exchanges
    bits = [vocab.exchange_bit(e, add=False) for e in legs]
    known = all(b not in (0, OVERFLOW_BIT) for b in bits)
    flag = policy.needed_beta(opp)
    beta_bit = 0
    if flag is not None:
        code = vocab.code("beta_flags", flag, add=False)
        beta_bit = 1 << code if code is not None and code < MASK_BITS else 0
    gd, gh = policy.group_quotas()
    tiers = [policy.tiers[t] for t in TIERS]
    return _Plan(
        now_ms=now_ms,
        today=tuple(local_day(now, name) for name in vocab.timezones),
        this_hour=now_ms // HOUR_MS,
        kind_bit=KIND_BIT[opp.kind],
        tier_allows=tuple(p.allows_kind(opp.kind) for p in tiers),
        daily=tuple(-1 if p.daily_quota is None else p.daily_quota for p in tiers),
        hourly=tuple(-1 if p.hourly_quota is None else p.hourly_quota for p in tiers),
        delay_ms=tuple(p.delay_s * 1000 for p in tiers),
        beta_needed=flag is not None,
        beta_bit=beta_bit,
        legs_mask=int(np.bitwise_or.reduce(bits)) if bits else 0,
        legs_known=known,
        sym_code=vocab.code("symbols", opp.symbol, add=False),
        group_daily=-1 if gd is None else gd,
        group_hourly=-1 if gh is None else gh,
        region_blocked=tuple(r in policy.region_blocks for r in vocab.regions),
        max_hold_ms=None if policy.max_hold_s is None else int(policy.max_hold_s * 1000),
    )


_SUPER = TIERS.index(Tier.SUPERADMIN)


def _lut(values: Sequence[Any] | np.ndarray, dtype: Any) -> pl.Expr:
    return pl.lit(pl.Series(values, dtype=dtype))


def _by_tier(values: Sequence[Any], dtype: Any) -> pl.Expr:
    """A per-tier value for every row (a literal when every tier has the same)."""
    if len(set(values)) == 1:
        return pl.lit(values[0], dtype)
    return _lut(values, dtype).gather(pl.col("_tier"))


def _tier_in(flags: Sequence[bool]) -> pl.Expr:
    if all(flags) or not any(flags):
        return pl.lit(all(flags))
    codes = pl.Series([i for i, f in enumerate(flags) if f], dtype=pl.UInt8)
    return pl.col("_tier").is_in(codes.implode())


def cooled_mask(directory: pl.DataFrame, cooled: Iterable[int] | np.ndarray | pl.Series) -> pl.Series:
    """A boolean row mask of the cooled targets (what :func:`evaluate` takes fastest)."""
    if isinstance(cooled, pl.Series) and cooled.dtype == pl.Boolean:
        return cooled
    ids = _as_series(cooled)
    if not ids.len():
        return pl.Series("_cool", np.zeros(directory.height, dtype=bool))
    return directory.get_column("user_id").is_in(ids.implode()).alias("_cool")


def evaluate(
    directory: pl.DataFrame,
    opp: OpportunityView,
    now: datetime,
    policy: EligibilityPolicy,
    cooled_user_ids: Iterable[int] | np.ndarray | pl.Series = (),
) -> pl.DataFrame:
    """The deciding layer, reason, ``silent`` and ``due_at`` of every directory row (columnar).

    Returns :data:`RESULT_SCHEMA` rows in the directory's order. ``cooled_user_ids``: the
    targets for which ``opp.dedup_key`` is cooling down, as ids or as a boolean mask aligned
    with the directory's rows (:func:`cooled_mask`; ``actors.directory`` builds it from its
    index, which saves an ``is_in`` over every row).
    """
    p = _plan(opp, now, policy)
    vocab = policy.vocab
    u64 = pl.UInt64
    cool = cooled_mask(directory, cooled_user_ids)
    if cool.len() != directory.height:
        raise ValueError("a cooled mask must have one entry per directory row")

    # stage 1: what several checks share (evaluated in parallel)
    has_windows = bool((directory.get_column("window") >= 0).any())
    base = directory.lazy().with_columns(
        pl.col("tier").to_physical().alias("_tier"),
        (pl.col("tz").cast(pl.Int32) * _SLOTS + pl.col("window").cast(pl.Int32) + 1).alias("_slot"),
        pl.when(pl.col("day_bucket") == _lut(p.today, pl.Int32).gather(pl.col("tz")))
        .then(pl.col("day_used"))
        .otherwise(0)
        .alias("_day"),
        pl.when(pl.col("hour_bucket") == p.this_hour).then(pl.col("hour_used")).otherwise(0).alias("_hour"),
        (pl.col("audience") == "group").alias("_group"),
        pl.lit(cool.alias("_cool")),
    )
    # stage 2: the per-(zone, window) tables at ``now`` (few distinct zones), gathered
    inside = _lut(_inside_table(vocab, now), pl.Boolean).gather(pl.col("_slot"))
    stage2 = [inside.alias("_inside")]
    if has_windows:
        stage2.append(_lut(_opening_table(vocab, now), pl.Int64).gather(pl.col("_slot")).alias("_opening"))
    base = base.with_columns(stage2)

    held = ~pl.col("_inside") & ~pl.col("outside_silent")
    silent = ~pl.col("_inside") & pl.col("outside_silent")
    is_group = pl.col("_group")
    day_used, hour_used = pl.col("_day"), pl.col("_hour")
    daily = _by_tier(p.daily, pl.Int32)
    hourly = _by_tier(p.hourly, pl.Int32)

    def legs_in(mask_col: str) -> pl.Expr:
        if not p.legs_known:
            return pl.lit(False)
        return (pl.col(mask_col) & pl.lit(p.legs_mask, u64)) == pl.lit(p.legs_mask, u64)

    if p.sym_code is None:
        symbol_blocked = pl.lit(False)
    elif p.sym_code < MASK_BITS:
        symbol_blocked = (pl.col("blocked_symbols_mask") & pl.lit(1 << p.sym_code, u64)) != 0
    else:
        symbol_blocked = pl.col("blocked_symbols_extra").list.contains(pl.lit(p.sym_code, pl.UInt32))
    leg_blocked = pl.lit(False)
    if p.legs_mask:
        leg_blocked = (pl.col("blocked_exchanges") & pl.lit(p.legs_mask, u64)) != 0
    too_small = (
        pl.col("min_size_usd") > opp.executable_usd if math.isfinite(opp.executable_usd) else pl.lit(False)
    )

    if p.sym_code is None:
        symbol_ok = pl.lit(False)
    elif p.sym_code < MASK_BITS:
        symbol_ok = (pl.col("symbols_mask") & pl.lit(1 << p.sym_code, u64)) != 0
    else:
        symbol_ok = pl.col("symbols_extra").list.contains(pl.lit(p.sym_code, pl.UInt32))

    if p.beta_needed:
        beta_fail = pl.col("_tier") != _SUPER
        if p.beta_bit:
            beta_fail = beta_fail & ((pl.col("beta") & pl.lit(p.beta_bit, u64)) == 0)
    else:
        beta_fail = pl.lit(False)

    hours_fail: pl.Expr = pl.lit(False)
    if has_windows and p.max_hold_ms is not None:
        hours_fail = held & (pl.col("_opening") - p.now_ms > p.max_hold_ms)

    blocked_regions = [i for i, b in enumerate(p.region_blocked) if b]
    region_fail = (
        pl.col("region").is_in(pl.Series(blocked_regions, dtype=pl.UInt16).implode())
        if blocked_regions
        else pl.lit(False)
    )

    checks: list[tuple[Reason, pl.Expr]] = [
        (Reason.SESSION_NONE, pl.col("session_expires_ms").is_null()),
        (Reason.SESSION_EXPIRED, pl.col("session_expires_ms") <= p.now_ms),
        (Reason.SUBSCRIPTION_KIND, ~_tier_in(p.tier_allows)),
        (Reason.SUBSCRIPTION_BETA, beta_fail),
        (Reason.PREFERENCES_OFF, ~pl.col("pushes_on")),
        (Reason.PREFERENCES_KIND, (pl.col("kinds") & pl.lit(p.kind_bit, pl.UInt8)) == 0),
        (Reason.PREFERENCES_EXCHANGE, (pl.col("exchanges") != 0) & ~legs_in("exchanges")),
        (Reason.PREFERENCES_SYMBOL, (pl.col("symbols_n") > 0) & ~symbol_ok),
        (Reason.PREFERENCES_BLOCKED, leg_blocked | symbol_blocked),
        (Reason.PREFERENCES_MIN_PROFIT, pl.col(THRESHOLD_COLUMN[opp.kind]) > opp.threshold_value),
        (Reason.PREFERENCES_MIN_SIZE, too_small),
        (Reason.PREFERENCES_MUTED, pl.col("muted_until_ms") > p.now_ms),
        (Reason.PREFERENCES_HOURS, hours_fail),
        (Reason.RATE_DAILY, ~is_group & (daily >= 0) & (day_used >= daily)),
        (Reason.RATE_HOURLY, ~is_group & (hourly >= 0) & (hour_used >= hourly)),
        (Reason.RATE_COOLDOWN, pl.col("_cool")),
        (Reason.TECHNICAL_API_KEYS, pl.col("only_my_exchanges") & ~legs_in("key_exchanges")),
        (Reason.TECHNICAL_AI_KEY, ~pl.col("has_ai_key") if opp.ai_enhanced else pl.lit(False)),
        (Reason.CONTEXT_RESTRICTED, pl.col("restricted")),
        (Reason.CONTEXT_REGION, region_fail),
        (
            Reason.CONTEXT_GROUP_LIMIT,
            is_group
            & (
                ((p.group_daily >= 0) & (day_used >= p.group_daily))
                | ((p.group_hourly >= 0) & (hour_used >= p.group_hourly))
            ),
        ),
        (Reason.CONTEXT_BLOCKED, pl.col("blocked")),
    ]
    chain: Any = pl
    for reason, cond in checks:
        if _is_false(cond):
            continue
        chain = chain.when(cond).then(pl.lit(reason.code, pl.UInt8))
    code = chain.otherwise(pl.lit(0, pl.UInt8))

    due = p.now_ms + _by_tier(p.delay_ms, pl.Int64)
    if has_windows:
        due = pl.when(held).then(pl.max_horizontal(due, pl.col("_opening"))).otherwise(due)

    return (
        base.select(
            "user_id",
            "chat_id",
            "audience",
            "tier",
            code.alias("_code"),
            silent.alias("silent"),
            due.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC").alias("due_at"),
            "tz",
            "lang",
        )
        .select(
            "user_id",
            "chat_id",
            "audience",
            "tier",
            _lut([r.layer.value for r in REASONS], pl.Int8).gather(pl.col("_code")).alias("layer"),
            _lut([r.value for r in REASONS], REASON_DTYPE).gather(pl.col("_code")).alias("reason"),
            "silent",
            "due_at",
            "tz",
            "lang",
        )
        .collect(engine="in-memory")
    )


def _is_false(expr: pl.Expr) -> bool:
    return expr.meta.eq(pl.lit(False))


def _as_series(ids: Iterable[int] | np.ndarray | pl.Series) -> pl.Series:
    if isinstance(ids, pl.Series):
        return ids.cast(pl.Int64)
    if isinstance(ids, np.ndarray):
        return pl.Series(ids.astype(np.int64, copy=False))
    return pl.Series(list(ids), dtype=pl.Int64)
