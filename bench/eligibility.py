"""Benchmark: the columnar six-layer eligibility filter vs a per-user Python loop.

1,000,000 synthetic push targets (users of every tier, ~1% groups) with varied
preferences: kinds, exchange sets, symbol sets (some beyond the 64-bit mask), minimum
profits, mutes, 40 time zones with active-hours windows (hold and silent), quotas
partly used, API keys, beta flags, restricted users and blocked regions, plus a
cooldown list. Times what ``UserDirectory.decide`` runs for one opportunity: the live
cooldown marks of its dedup key (kept with their rows) and
:meth:`core.eligibility.DirectoryMasks.evaluate` over the directory's masks (every row
gets its deciding reason, hence layer; the eligible rows their ``silent`` and ``due_at``;
median of several runs, the masks built and used once before). That is compared with
:func:`core.eligibility.evaluate_loop`, the same rules as a plain loop over the rows as
dicts. The loop runs on ``--loop-users`` rows (default 100,000) and is scaled up
linearly to the full directory (the output says so); its answers are compared with
the whole result (``Decisions.result``) on that sample. Then what
``UserDirectory.apply_changes`` does for 10,000 preference and quota row updates to the
1M-row directory: the columnar upsert and the masks' update.

    uv run --frozen python bench/eligibility.py [--quick] [--users 1000000]

Last line: ``{"bench": "eligibility", "evaluate_ms": ..., "loop_ms": ..., "changes_ms": ...,
"ratio": ..., "target": ..., "ok": ...}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.directory import apply_row_changes, row_positions
from core.eligibility import (
    DIRECTORY_SCHEMA,
    KIND_BIT,
    NO_EXPIRY_MS,
    TIERS,
    Decisions,
    DirectoryMasks,
    EligibilityPolicy,
    OpportunityView,
    day_bucket,
    evaluate_loop,
    hour_bucket,
    to_ms,
)
from core.models import OpportunityKind, Priority
from core.settings import Settings

TARGET_EVALUATE_MS = 10.0
TARGET_RATIO = 50.0
TARGET_CHANGES_MS = 100.0
ZONES = [
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Moscow",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "America/St_Johns",
    "Asia/Tokyo",
    "Asia/Shanghai",
    "Asia/Singapore",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Dubai",
    "Asia/Seoul",
    "Asia/Jakarta",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Africa/Lagos",
    "Africa/Johannesburg",
    "Europe/Istanbul",
    "Europe/Kyiv",
    "Europe/Paris",
    "Europe/Madrid",
    "America/Mexico_City",
    "America/Bogota",
    "America/Argentina/Buenos_Aires",
    "Asia/Manila",
    "Asia/Bangkok",
    "Asia/Karachi",
    "Asia/Tehran",
    "Asia/Ho_Chi_Minh",
    "Asia/Hong_Kong",
    "Europe/Warsaw",
    "Europe/Rome",
    "America/Toronto",
    "America/Vancouver",
    "Australia/Perth",
]
EXCHANGES = ["binance", "bybit", "okx", "kraken", "kucoin", "gateio", "bitget", "mexc"]
REGIONS = ["", "DE", "US", "GB", "BR", "IN", "NG", "KP", "IR", "JP"]


def make_policy() -> EligibilityPolicy:
    settings = Settings.model_validate(
        {
            "market": {"exchanges": EXCHANGES, "symbols": [f"S{i:03d}/USDT" for i in range(100)]},
            "distribution": {"region_blocks": ["KP", "IR"]},
        }
    )
    policy = EligibilityPolicy.from_settings(settings)
    for z in ZONES:
        policy.vocab.tz_code(z)
    for r in REGIONS:
        policy.vocab.region_code(r)
    for flag in ("ai", "digest"):
        policy.vocab.code("beta_flags", flag)
    return policy


def make_directory(n: int, now: datetime, seed: int = 11) -> pl.DataFrame:
    """``n`` random directory rows (numpy, then one frame)."""
    rng = np.random.default_rng(seed)
    now_ms = to_ms(now)
    group = rng.random(n) < 0.01
    ids = np.arange(1, n + 1, dtype=np.int64)
    ids = np.where(group, -(10**12) - ids, ids)
    tier = rng.choice(len(TIERS), n, p=[0.55, 0.25, 0.12, 0.07, 0.01]).astype(np.uint8)
    tier = np.where(group, 0, tier).astype(np.uint8)
    expires = now_ms + rng.integers(-2 * 86_400_000, 7 * 86_400_000, n)
    session = np.where(group, NO_EXPIRY_MS, expires)
    no_session = (rng.random(n) < 0.05) & ~group
    all_kinds = sum(KIND_BIT.values())
    kinds = np.where(rng.random(n) < 0.7, all_kinds, rng.integers(1, all_kinds + 1, n)).astype(np.uint8)
    ex_mask = np.where(rng.random(n) < 0.6, 0, rng.integers(1, 1 << len(EXCHANGES), n)).astype(np.uint64)
    has_syms = rng.random(n) < 0.2
    sym_mask = np.where(has_syms, rng.integers(1, 2**62, n, dtype=np.int64), 0).astype(np.uint64)
    extra_lists = [[70, 80] if (h and i % 10 == 0) else [] for i, h in enumerate(has_syms)]
    sym_n = np.where(has_syms, 20, 0).astype(np.uint16)
    windowed = rng.random(n) < 0.4
    start = rng.integers(0, 24, n)
    end = (start + rng.integers(1, 24, n)) % 24
    window = np.where(windowed, start * 24 + end, -1).astype(np.int16)
    muted = np.where(rng.random(n) < 0.05, now_ms + rng.integers(-3_600_000, 3_600_000, n), 0)
    only_my = rng.random(n) < 0.1
    key_mask = np.where(only_my | (rng.random(n) < 0.1), rng.integers(0, 1 << len(EXCHANGES), n), 0)
    today, this_hour = day_bucket(now), hour_bucket(now)
    blocked_ex = np.where(rng.random(n) < 0.05, 1 << rng.integers(0, len(EXCHANGES), n), 0)  # blacklists
    blocked_sym = np.where(rng.random(n) < 0.05, 1 << rng.integers(0, 8, n), 0)
    frame = pl.DataFrame(
        {
            "user_id": ids,
            "chat_id": ids,
            "audience": pl.Series(np.where(group, "group", "user")),
            "tier": pl.Series([t.value for t in TIERS]).gather(pl.Series(tier)),
            "session_expires_ms": pl.Series(session).set(pl.Series(no_session), None),
            "blocked": rng.random(n) < 0.01,
            "pushes_on": rng.random(n) < 0.95,
            "kinds": kinds,
            "exchanges": ex_mask,
            "symbols_n": sym_n,
            "symbols_mask": sym_mask,
            "symbols_extra": extra_lists,
            "blocked_exchanges": blocked_ex.astype(np.uint64),
            "blocked_symbols_mask": blocked_sym.astype(np.uint64),
            "blocked_symbols_extra": [[] for _ in range(n)],
            "min_size_usd": np.where(rng.random(n) < 0.2, rng.choice([1_000.0, 5_000.0, 25_000.0], n), 0.0),
            "min_net_bps": np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0, 40, n)),
            "min_net_apr_pct": np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0, 40, n)),
            "min_confidence": np.where(rng.random(n) < 0.8, 0.0, rng.uniform(0.5, 1.0, n)),
            "muted_until_ms": pl.Series(muted).set(pl.Series(muted == 0), None),
            "tz": rng.integers(0, len(ZONES), n).astype(np.uint16),
            "window": window,
            "outside_silent": rng.random(n) < 0.5,
            "only_my_exchanges": only_my,
            "key_exchanges": key_mask.astype(np.uint64),
            "has_ai_key": rng.random(n) < 0.1,
            "beta": rng.integers(0, 4, n).astype(np.uint64),
            "restricted": rng.random(n) < 0.005,
            "region": rng.integers(0, len(REGIONS), n).astype(np.uint16),
            "lang": np.zeros(n, dtype=np.uint16),
            "day_bucket": np.where(rng.random(n) < 0.7, today, today - 1).astype(np.int32),  # ~ local days
            "day_used": rng.integers(0, 25, n).astype(np.int32),
            "hour_bucket": np.where(rng.random(n) < 0.5, this_hour, this_hour - 1).astype(np.int32),
            "hour_used": rng.integers(0, 6, n).astype(np.int32),
        }
    )
    return frame.cast(DIRECTORY_SCHEMA)


def make_changes(directory: pl.DataFrame, k: int, now: datetime, seed: int = 12) -> pl.DataFrame:
    """``k`` row updates: half preference edits (kinds, min profit, mute), half quota bumps."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(directory.height, k, replace=False)
    picked = directory[rows]
    prefs = rng.random(k) < 0.5
    return picked.with_columns(
        pl.when(pl.Series(prefs)).then(pl.lit(1, pl.UInt8)).otherwise(pl.col("kinds")).alias("kinds"),
        pl.when(pl.Series(prefs))
        .then(pl.Series(rng.uniform(0, 30, k)))
        .otherwise(pl.col("min_net_bps"))
        .alias("min_net_bps"),
        pl.lit(day_bucket(now), pl.Int32).alias("day_bucket"),
        pl.when(pl.Series(prefs))
        .then(pl.col("day_used"))
        .otherwise(pl.col("day_used") + 1)
        .alias("day_used"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (< 60 s)")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--loop-users", type=int, default=100_000, help="loop sample; scaled up linearly")
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=0, help="timed runs (default 9, quick 5)")
    args = parser.parse_args(argv)

    runs = args.runs or (5 if args.quick else 9)
    now = datetime(2026, 3, 29, 0, 40, tzinfo=UTC)  # Europe's spring-forward night
    policy = make_policy()
    t0 = time.perf_counter()
    directory = make_directory(args.users, now)
    print(
        f"directory: {directory.height:,} rows, {directory.estimated_size('mb'):.0f} MB "
        f"(built in {time.perf_counter() - t0:.1f} s)"
    )
    opp = OpportunityView(
        opportunity_id="bench-1",
        kind=OpportunityKind.FUNDING_RATE,
        symbol="S003/USDT",
        buy_exchange="binance",
        sell_exchange="okx",
        net_bps=12.5,
        priority=Priority.HIGH,
        confidence=0.9,
        dedup_key="funding_rate:S003/USDT:binance:okx",
        detected_at=now,
    )
    rng = np.random.default_rng(5)
    cooled = rng.choice(directory["user_id"].to_numpy(), 20_000, replace=False)

    ids = directory["user_id"].to_numpy()
    order = np.argsort(ids)
    index_ids, index_rows = ids[order], order
    # the cooldown marks of the key as the directory keeps them: ids, until, rows
    until = np.full(cooled.size, to_ms(now) + 600_000, dtype=np.int64)
    cooled_rows = row_positions(index_ids, index_rows, cooled)
    t0 = time.perf_counter()
    masks = DirectoryMasks.build(directory, policy)
    print(f"masks built in {(time.perf_counter() - t0) * 1000.0:.0f} ms")

    def run(at: datetime, view: OpportunityView = opp) -> Decisions:
        # as UserDirectory.decide: the live marks of the key, their rows, the masks
        live = until > to_ms(at)
        rows = cooled_rows[live]
        return masks.evaluate(view, at, rows[rows >= 0])

    t0 = time.perf_counter()
    run(now)  # warm-up: the arrays of this kind, legs, symbol, quotas are built once
    first_ms = (time.perf_counter() - t0) * 1000.0
    print(f"first evaluation (the arrays of its kind, legs, symbol, quotas built): {first_ms:.1f} ms")
    times = []
    decided = None
    for _ in range(runs):
        t0 = time.perf_counter()
        decided = run(now)
        times.append((time.perf_counter() - t0) * 1000.0)
    assert decided is not None
    evaluate_ms = statistics.median(times)
    result = decided.result()
    by_layer = result.group_by("layer", "reason").len().sort("layer", "reason")
    print(
        f"evaluate: median {evaluate_ms:.1f} ms over {runs} runs (min {min(times):.1f}); "
        f"{decided.eligible.size:,} eligible"
    )
    cold = [time.perf_counter()]
    run(now.replace(minute=59, hour=5))  # another local hour: zone tables and quotas rebuilt
    cold_ms = (time.perf_counter() - cold[0]) * 1000.0
    print(f"evaluate in a new hour (zone tables and quotas rebuilt): {cold_ms:.1f} ms")
    symbol_times = []
    for i in range(runs):  # symbols not seen yet: their arrays built from the rows that pick symbols
        view = dataclasses.replace(opp, symbol=f"S{10 + i:03d}/USDT")
        t0 = time.perf_counter()
        run(now, view)
        symbol_times.append((time.perf_counter() - t0) * 1000.0)
    symbol_ms = statistics.median(symbol_times)
    print(f"evaluate with a symbol not seen before: median {symbol_ms:.1f} ms")

    loop_n = min(args.loop_users, directory.height)
    sample = directory.head(loop_n)
    t0 = time.perf_counter()
    rows = sample.to_dicts()
    t1 = time.perf_counter()
    looped = evaluate_loop(rows, opp, now, policy, cooled)
    t2 = time.perf_counter()
    scale = directory.height / loop_n
    loop_ms = (t2 - t1) * 1000.0 * scale
    print(
        f"loop: {(t2 - t1) * 1000.0:.0f} ms on {loop_n:,} rows (+{(t1 - t0) * 1000.0:.0f} ms to_dicts, "
        "not counted)" + (f"; scaled linearly to {directory.height:,}: {loop_ms:.0f} ms" if scale > 1 else "")
    )
    same = looped.equals(result.head(loop_n))
    if not same:
        print("WARNING: the loop and the columnar filter disagree on the sample")

    k = min(args.changes, directory.height)
    changes = make_changes(directory, k, now)

    def change() -> pl.DataFrame:
        # as UserDirectory.apply_changes: the rows of the ids, the upsert, the masks' update
        rows = row_positions(index_ids, index_rows, changes.get_column("user_id").to_numpy())
        out = apply_row_changes(directory, changes, index_ids, index_rows)
        masks.update(out, rows[rows >= 0])
        return out

    change()  # warm-up
    ctimes = []
    for _ in range(runs):
        t0 = time.perf_counter()
        updated = change()
        ctimes.append((time.perf_counter() - t0) * 1000.0)
    changes_ms = statistics.median(ctimes)
    assert updated.height == directory.height
    print(f"apply {k:,} row changes to {directory.height:,} rows: median {changes_ms:.1f} ms")

    print()
    print(f"{'layer':>5}  {'reason':<24}{'targets':>10}")
    for layer, reason, count in by_layer.iter_rows():
        print(f"{layer:>5}  {reason:<24}{count:>10,}")
    print()
    ratio = loop_ms / evaluate_ms
    ok = (
        evaluate_ms <= TARGET_EVALUATE_MS
        and ratio >= TARGET_RATIO
        and changes_ms <= TARGET_CHANGES_MS
        and same
    )
    print(
        json.dumps(
            {
                "bench": "eligibility",
                "users": directory.height,
                "evaluate_ms": round(evaluate_ms, 2),
                "evaluate_new_hour_ms": round(cold_ms, 2),
                "evaluate_new_symbol_ms": round(symbol_ms, 2),
                "loop_ms": round(loop_ms, 1),
                "loop_scaled_from_users": loop_n if scale > 1 else None,
                "loop_matches": same,
                "changes": k,
                "changes_ms": round(changes_ms, 2),
                "ratio": round(ratio, 1),
                "eligible": int(decided.eligible.size),
                "target": "<= 10 ms for 1M users with the deciding layer, >= 50x a per-user loop; "
                "10k changes <= 100 ms",
                "ok": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
