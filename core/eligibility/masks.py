"""The filter kept warm over a directory that changes (:class:`DirectoryMasks`), and its answer
(:class:`Decisions`).

:func:`evaluate` over a fixed frame and a directory that evaluates one opportunity after
another do the same work, but the second can keep what does not depend on the opportunity.
Every check of :mod:`core.eligibility` is a *reason code* (``Reason.code``: the order of the
checks) that fails or not on a row, and the deciding reason of a row is the smallest code
among its failing checks. So each group of checks that depends on the same thing is one
``uint8`` array per row (the smallest failing code of the group, :data:`PASS` when none
fails), kept per key and combined with ``np.minimum``:

- per **kind**: no session, the tier's kinds, pushes off, the user's kinds, restricted,
  blocked region, blocked chat;
- per **leg** (an exchange's bit, or an unknown exchange): the user's exchanges, blocked
  exchanges, ``only_my_exchanges`` without a key (a check over both legs fails when it
  fails on one of them, so two legs are the minimum of two arrays);
- per **symbol**: the user's symbols, blocked symbols;
- per **beta flag** and for **AI-enhanced** opportunities;
- the **quotas** (daily, hourly, a group's) at the current local days and UTC hour
  (rebuilt when one of them turns);

each kept current on change (:meth:`DirectoryMasks.update`, row by row). Only what depends
on ``now`` or on the opportunity's figures is evaluated each time: the session's expiry,
the minimum profit and size, the mutes and the active hours (over the rows that have them),
the cooldowns (over the cooled rows). ``silent`` and ``due_at`` are computed for the eligible
rows; layers, reasons and the other rows' columns only when asked (:class:`Decisions`).

A :class:`DirectoryMasks` belongs to one policy (its tiers, region blocks and vocabulary are
read when a key is first built): build a new one for another policy.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from core.accounts import Tier, local_day
from core.eligibility.codes import PASS, apply_checks, column
from core.eligibility.hours import _SLOTS, _inside_table, _opening_table
from core.eligibility.opportunity import THRESHOLD_COLUMN, EligibilityPolicy, OpportunityView
from core.eligibility.schema import (
    DIRECTORY_SCHEMA,
    HOUR_MS,
    KIND_BIT,
    MASK_BITS,
    OUT_OF_SCOPE,
    OVERFLOW_BIT,
    REASON_DTYPE,
    REASONS,
    RESULT_SCHEMA,
    TIERS,
    UTC_MS,
    Layer,
    Reason,
    to_ms,
)
from core.eligibility.symbols import (
    merge_symbol_rows,
    renumber_symbol_rows,
    symbol_array,
    symbol_codes,
    symbol_rows,
)
from core.eligibility.vocabulary import Vocabulary
from core.models import OpportunityKind

SYMBOL_KEYS = 32
"""Per-symbol arrays kept (the least recently used one goes first)."""


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


_SHARED = ("_slot", "_tier")
"""Per-row arrays a :class:`Decisions` keeps: an update replaces them instead of writing in them."""
_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min
_SUPER = TIERS.index(Tier.SUPERADMIN)
_LAYER_OF_CODE = np.array([r.layer.value for r in REASONS] + [0] * (256 - len(REASONS)), dtype=np.int8)
_LAYER_OF_CODE[PASS] = 0
_REASON_OF_CODE = np.zeros(256, dtype=np.uint8)
_REASON_OF_CODE[: len(REASONS)] = np.arange(len(REASONS))
_REASON_OF_CODE[PASS] = Reason.ELIGIBLE.code
_RECORDED_OF_CODE = np.zeros(256, dtype=bool)
_RECORDED_OF_CODE[[r.code for r in REASONS if r.layer >= Layer.SUBSCRIPTION and r not in OUT_OF_SCOPE]] = True

Key = tuple[Hashable, ...]


def _kind_codes(f: pl.DataFrame, policy: EligibilityPolicy, kind: OpportunityKind) -> np.ndarray:
    kind_bit = np.uint8(KIND_BIT[kind])
    allows = np.array([policy.tiers[t].allows_kind(kind) for t in TIERS], dtype=bool)
    blocked_regions = np.array([r in policy.region_blocks for r in policy.vocab.regions], dtype=bool)
    tier = column(f.select(pl.col("tier").to_physical()), "tier").astype(np.intp)
    region = column(f, "region").astype(np.intp)
    return apply_checks(
        np.full(f.height, PASS, dtype=np.uint8),
        [
            (Reason.SESSION_NONE, f.get_column("session_expires_ms").is_null().to_numpy()),
            (Reason.SUBSCRIPTION_KIND, ~allows[tier]),
            (Reason.PREFERENCES_OFF, ~column(f, "pushes_on")),
            (Reason.PREFERENCES_KIND, (column(f, "kinds") & kind_bit) == 0),
            (Reason.CONTEXT_RESTRICTED, column(f, "restricted")),
            (Reason.CONTEXT_REGION, blocked_regions[region] if blocked_regions.any() else False),
            (Reason.CONTEXT_BLOCKED, column(f, "blocked")),
        ],
    )


def _leg_codes(f: pl.DataFrame, bit: int) -> np.ndarray:
    """One leg of the opportunity: ``bit`` its exchange's bit (0 or the overflow bit: an
    exchange without a bit of its own, which no user's set contains)."""
    known = bit != 0 and bit != OVERFLOW_BIT
    b = np.uint64(bit)
    exchanges = column(f, "exchanges")
    keys = column(f, "key_exchanges")
    return apply_checks(
        np.full(f.height, PASS, dtype=np.uint8),
        [
            (Reason.PREFERENCES_EXCHANGE, (exchanges != 0) & (((exchanges & b) == 0) if known else True)),
            (Reason.PREFERENCES_BLOCKED, ((column(f, "blocked_exchanges") & b) != 0) if bit else False),
            (
                Reason.TECHNICAL_API_KEYS,
                column(f, "only_my_exchanges") & (((keys & b) == 0) if known else True),
            ),
        ],
    )


def _beta_codes(f: pl.DataFrame, bit: int) -> np.ndarray:
    tier = column(f.select(pl.col("tier").to_physical()), "tier").astype(np.intp)
    lacks = (column(f, "beta") & np.uint64(bit)) == 0 if bit else np.ones(f.height, dtype=bool)
    return apply_checks(
        np.full(f.height, PASS, dtype=np.uint8), [(Reason.SUBSCRIPTION_BETA, (tier != _SUPER) & lacks)]
    )


def _ai_codes(f: pl.DataFrame) -> np.ndarray:
    return apply_checks(
        np.full(f.height, PASS, dtype=np.uint8), [(Reason.TECHNICAL_AI_KEY, ~column(f, "has_ai_key"))]
    )


def _days_cover(today: tuple[int, ...], f: pl.DataFrame) -> bool:
    """``today`` (a day per time zone known when it was taken) has the day of every row's zone."""
    return f.height == 0 or int(column(f, "tz").max()) < len(today)


def _quota_codes(
    f: pl.DataFrame, policy: EligibilityPolicy, today: tuple[int, ...], this_hour: int
) -> np.ndarray:
    tiers = [policy.tiers[t] for t in TIERS]
    daily = np.array([-1 if p.daily_quota is None else p.daily_quota for p in tiers], dtype=np.int64)
    hourly = np.array([-1 if p.hourly_quota is None else p.hourly_quota for p in tiers], dtype=np.int64)
    gd, gh = policy.group_quotas()
    tier = column(f.select(pl.col("tier").to_physical()), "tier").astype(np.intp)
    group = column(f.select(pl.col("audience") == "group"), "audience")
    days = np.asarray(today, dtype=np.int64)
    day = np.where(column(f, "day_bucket") == days[column(f, "tz").astype(np.intp)], column(f, "day_used"), 0)
    hour = np.where(column(f, "hour_bucket") == this_hour, column(f, "hour_used"), 0)
    d, h = daily[tier], hourly[tier]
    group_full = np.zeros(f.height, dtype=bool)
    if gd is not None:
        group_full |= day >= gd
    if gh is not None:
        group_full |= hour >= gh
    return apply_checks(
        np.full(f.height, PASS, dtype=np.uint8),
        [
            (Reason.RATE_DAILY, ~group & (d >= 0) & (day >= d)),
            (Reason.RATE_HOURLY, ~group & (h >= 0) & (hour >= h)),
            (Reason.CONTEXT_GROUP_LIMIT, group & group_full),
        ],
    )


def _fold(code: np.ndarray, fails: np.ndarray, reason: Reason) -> None:
    """``code = min(code, reason.code where fails)``, in place (in three passes of a byte a row)."""
    worst = fails.view(np.uint8) * np.uint8(PASS - reason.code)
    np.subtract(np.uint8(PASS), worst, out=worst)
    np.minimum(code, worst, out=code)


@dataclass(frozen=True, slots=True)
class _Now:
    """The tables of one instant, per row class ``(zone, window, outside_silent)``
    (``2 * (tz * _SLOTS + window + 1) + outside_silent``): the next opening of the window
    when a target of the class is held (0 when not), and whether it is sent silently."""

    now_ms: int
    held_opening: np.ndarray
    silent: np.ndarray


def _now_tables(vocab: Vocabulary, now: datetime, now_ms: int, windows: bool) -> _Now:
    outside = ~_inside_table(vocab, now)
    silent = np.zeros(outside.size * 2, dtype=bool)
    silent[1::2] = outside
    held = np.zeros(outside.size * 2, dtype=np.int64)
    if windows:  # no row has a window: nobody is held
        held[0::2] = np.where(outside, _opening_table(vocab, now), 0)
    return _Now(now_ms, held, silent)


class DirectoryMasks:
    """The opportunity-independent state of the filter over one directory frame, kept current.

    Build it from the frame (:meth:`build`), tell it every change of the frame
    (:meth:`update` with the rows changed or appended, :meth:`keep` when rows are removed),
    and :meth:`evaluate` each opportunity. Arrays per key are built on first use.
    """

    def __init__(self, policy: EligibilityPolicy) -> None:
        self.policy = policy
        self.height = 0
        self._frame = pl.DataFrame(schema=DIRECTORY_SCHEMA)
        self._keys: dict[Key, np.ndarray] = {}
        self._quota_key: Key | None = None
        # the per-row columns the per-call checks read
        self._expires = np.zeros(0, dtype=np.int64)
        self._tier = np.zeros(0, dtype=np.uint8)
        self._slot = np.zeros(0, dtype=np.int32)  # the row's class in the tables of _Now
        self._min_size = np.zeros(0, dtype=np.float64)
        self._thresholds = {c: np.zeros(0, dtype=np.float64) for c in set(THRESHOLD_COLUMN.values())}
        self._muted_until = np.zeros(0, dtype=np.int64)
        # rows that have a mute, an active-hours window
        self._muted_rows = np.zeros(0, dtype=np.intp)
        self._window_rows = np.zeros(0, dtype=np.intp)
        self._symbols = symbol_rows(self._frame, np.zeros(0, dtype=np.intp))

    @classmethod
    def build(cls, frame: pl.DataFrame, policy: EligibilityPolicy) -> DirectoryMasks:
        masks = cls(policy)
        masks.update(frame, np.arange(frame.height, dtype=np.intp))
        return masks

    # -- keeping current -----------------------------------------------------------------

    def _row_columns(self, f: pl.DataFrame) -> dict[str, np.ndarray]:
        return {
            "_expires": f.get_column("session_expires_ms").fill_null(_I64_MAX).to_numpy(),
            "_tier": column(f.select(pl.col("tier").to_physical()), "tier").astype(np.uint8),
            "_slot": column(
                f.select(
                    (pl.col("tz").cast(pl.Int32) * _SLOTS + pl.col("window").cast(pl.Int32) + 1) * 2
                    + pl.col("outside_silent").cast(pl.Int32)
                ),
                "tz",
            ).astype(np.int32),
            "_min_size": column(f, "min_size_usd"),
            "_muted_until": f.get_column("muted_until_ms").fill_null(_I64_MIN).to_numpy(),
            **{f"_thr:{c}": column(f, c) for c in sorted(set(THRESHOLD_COLUMN.values()))},
        }

    def _get(self, name: str) -> np.ndarray:
        if name.startswith("_thr:"):
            return self._thresholds.setdefault(name[5:], np.zeros(0, dtype=np.float64))
        arr: np.ndarray = getattr(self, name)
        return arr

    def _set(self, name: str, arr: np.ndarray) -> None:
        if name.startswith("_thr:"):
            self._thresholds[name[5:]] = arr
        else:
            setattr(self, name, arr)

    def _build(self, key: Key, f: pl.DataFrame) -> np.ndarray:
        """The codes of ``key``'s group of checks on the rows of ``f``."""
        match key:
            case ("kind", OpportunityKind() as kind):
                return _kind_codes(f, self.policy, kind)
            case ("leg", int(bit)):
                return _leg_codes(f, bit)
            case ("symbol", None):
                return symbol_codes(f, None)
            case ("symbol", int(code)):
                return symbol_codes(f, code)
            case ("beta", int(bit)):
                return _beta_codes(f, bit)
            case ("ai",):
                return _ai_codes(f)
            case ("quota", tuple(today), int(hour)):
                return _quota_codes(f, self.policy, today, hour)
        raise KeyError(key)

    def update(self, frame: pl.DataFrame, rows: np.ndarray) -> None:
        """``frame`` is the directory after a change of ``rows`` (updated in place, or appended
        at the end: every row past the previous height must be in ``rows``)."""
        rows = np.asarray(rows, dtype=np.intp)
        grow = frame.height - self.height
        if grow < 0:
            raise ValueError("rows were removed: use keep()")
        self._frame = frame
        if not rows.size and not grow:
            return
        changed = frame[rows] if rows.size != frame.height else frame
        if rows.size == frame.height:
            self._symbols = symbol_rows(frame, np.arange(frame.height, dtype=np.intp))
        else:
            stale = np.zeros(frame.height, dtype=bool)
            stale[rows] = True
            self._symbols = merge_symbol_rows(self._symbols, stale, symbol_rows(changed, rows))
        values = self._row_columns(changed)
        for name, vals in values.items():
            arr = self._get(name)
            if grow:
                arr = np.concatenate([arr, np.zeros(grow, dtype=vals.dtype)])
            elif not arr.flags.writeable or name in _SHARED:  # Decisions hold the old one
                arr = arr.copy()
            if rows.size == frame.height:
                arr = vals.copy() if not vals.flags.writeable else vals
            else:
                arr[rows] = vals
            self._set(name, arr)
        for key, arr in list(self._keys.items()):
            if key[0] == "quota" and not _days_cover(key[1], changed):  # type: ignore[arg-type]
                # made before a time zone the changed rows use was known: the next evaluation
                # builds the quota codes anew, over every row, with that zone's day
                del self._keys[key]
                self._quota_key = None
                continue
            codes = self._build(key, changed)
            if rows.size == frame.height:
                self._keys[key] = codes
                continue
            if grow:
                arr = np.concatenate([arr, np.full(grow, PASS, dtype=np.uint8)])
            arr[rows] = codes
            self._keys[key] = arr
        self.height = frame.height
        self._sparse()

    def keep(self, frame: pl.DataFrame, keep: np.ndarray) -> None:
        """``frame`` is the directory after keeping only the rows where ``keep`` is true."""
        keep = np.asarray(keep, dtype=bool)
        if keep.size != self.height or int(keep.sum()) != frame.height:
            raise ValueError("keep must have one entry per row, as many true as rows kept")
        self._frame = frame
        for name in self._row_columns(frame.clear()):
            self._set(name, self._get(name)[keep])
        for key, arr in self._keys.items():
            self._keys[key] = arr[keep]
        self._symbols = renumber_symbol_rows(self._symbols, keep)
        self.height = frame.height
        self._sparse()

    def _sparse(self) -> None:
        self._muted_rows = np.flatnonzero(self._muted_until != _I64_MIN)
        self._window_rows = np.flatnonzero((self._slot >> 1) % _SLOTS != 0)

    def _codes(self, key: Key) -> np.ndarray:
        arr = self._keys.get(key)
        if arr is None:
            if key[0] == "symbol":  # from the rows that pick or block symbols
                arr = symbol_array(self._symbols, key[1], self.height)  # type: ignore[arg-type]
            else:
                arr = self._build(key, self._frame)
            self._keys[key] = arr
            if key[0] == "symbol":
                symbols = [k for k in self._keys if k[0] == "symbol"]
                for old in symbols[:-SYMBOL_KEYS]:
                    del self._keys[old]
        elif key[0] == "symbol":  # most recently used last
            del self._keys[key]
            self._keys[key] = arr
        return arr

    def _quota(self, today: tuple[int, ...], this_hour: int) -> np.ndarray:
        key: Key = ("quota", today, this_hour)
        if self._quota_key != key:
            if self._quota_key is not None:
                self._keys.pop(self._quota_key, None)
            self._quota_key = key
        return self._codes(key)

    # -- deciding ------------------------------------------------------------------------

    def evaluate(
        self, opp: OpportunityView, now: datetime, cooled_rows: np.ndarray | None = None
    ) -> Decisions:
        """Every row's deciding reason for ``opp`` at ``now``; ``cooled_rows``: the row indices
        of the targets for which ``opp.dedup_key`` is cooling down."""
        p = _plan(opp, now, self.policy)
        vocab = self.policy.vocab
        bits = [vocab.exchange_bit(e, add=False) for e in opp.exchanges]
        code = self._codes(("kind", opp.kind)).copy()
        for bit in dict.fromkeys(bits):
            np.minimum(code, self._codes(("leg", bit)), out=code)
        np.minimum(code, self._codes(("symbol", p.sym_code)), out=code)
        if p.beta_needed:
            np.minimum(code, self._codes(("beta", p.beta_bit)), out=code)
        if opp.ai_enhanced:
            np.minimum(code, self._codes(("ai",)), out=code)
        np.minimum(code, self._quota(p.today, p.this_hour), out=code)

        _fold(code, self._expires <= p.now_ms, Reason.SESSION_EXPIRED)
        value = opp.threshold_value
        if not math.isnan(value):
            _fold(code, self._thresholds[THRESHOLD_COLUMN[opp.kind]] > value, Reason.PREFERENCES_MIN_PROFIT)
        if math.isfinite(opp.executable_usd):
            _fold(code, self._min_size > opp.executable_usd, Reason.PREFERENCES_MIN_SIZE)
        rows = self._muted_rows
        if rows.size:
            hit = rows[self._muted_until[rows] > p.now_ms]
            code[hit] = np.minimum(code[hit], Reason.PREFERENCES_MUTED.code)
        tables = _now_tables(vocab, now, p.now_ms, bool(self._window_rows.size))
        if p.max_hold_ms is not None and self._window_rows.size:
            rows = self._window_rows
            opening = tables.held_opening[self._slot[rows]]
            hit = rows[(opening > 0) & (opening - p.now_ms > p.max_hold_ms)]
            code[hit] = np.minimum(code[hit], Reason.PREFERENCES_HOURS.code)
        if cooled_rows is not None and cooled_rows.size:
            code[cooled_rows] = np.minimum(code[cooled_rows], Reason.RATE_COOLDOWN.code)

        eligible = np.flatnonzero(code == PASS)
        delays = np.asarray(p.delay_ms, dtype=np.int64)
        due, silent = _due(eligible, self._slot, self._tier, tables, delays)
        return Decisions(self._frame, code, eligible, due, silent, (self._slot, self._tier, tables, delays))


def _due(
    rows: np.ndarray, slots: np.ndarray, tiers: np.ndarray, tables: _Now, delays: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``due_at`` (epoch ms) and ``silent`` of these rows."""
    slot = slots[rows]
    due = np.maximum(delays[tiers[rows]] + tables.now_ms, tables.held_opening[slot])
    return due, tables.silent[slot]


@dataclass(frozen=True, slots=True, eq=False)
class Decisions:
    """What :meth:`DirectoryMasks.evaluate` decided, over the frame it was given.

    ``codes``: one per row, the deciding ``Reason.code`` (:data:`PASS` for an eligible row);
    ``eligible``: the eligible rows' indices, with their ``due_ms`` and ``silent``.
    """

    frame: pl.DataFrame
    codes: np.ndarray
    eligible: np.ndarray
    due_ms: np.ndarray
    silent: np.ndarray
    _at: tuple[np.ndarray, np.ndarray, _Now, np.ndarray]
    """What ``due_at`` and ``silent`` of the other rows need: slots, tiers, tables, delays."""

    @property
    def height(self) -> int:
        return int(self.codes.size)

    def layers(self) -> np.ndarray:
        """Every row's deciding layer (0 = eligible)."""
        return _LAYER_OF_CODE[self.codes]

    def reason_counts(self) -> dict[Reason, int]:
        """How many rows each reason decided (eligible included; reasons of no row left out)."""
        counts = np.bincount(_REASON_OF_CODE[self.codes], minlength=len(REASONS))
        return {r: int(counts[r.code]) for r in REASONS if counts[r.code]}

    def rows_from_layer(self, layer: Layer) -> np.ndarray:
        """The rows decided by ``layer`` or a later one."""
        return np.flatnonzero(self.layers() >= int(layer))

    def rows_recorded(self) -> np.ndarray:
        """The rows whose ``skipped`` row is written: decided by layer 2-6 for a reason other
        than :data:`core.eligibility.OUT_OF_SCOPE` (no session, or nothing of this asked for:
        counted, not written)."""
        return np.flatnonzero(_RECORDED_OF_CODE[self.codes])

    def result(self, rows: np.ndarray | None = None) -> pl.DataFrame:
        """:data:`RESULT_SCHEMA` rows for these row indices (default: every row, in order)."""
        base = self.frame.select("user_id", "chat_id", "audience", "tier", "tz", "lang")
        if rows is None:
            rows = np.arange(self.height, dtype=np.intp)
        else:
            base = base[rows]
        if rows is self.eligible:
            due, silent = self.due_ms, self.silent
        else:
            due, silent = _due(rows, *self._at)
        codes = _REASON_OF_CODE[self.codes[rows]]
        reasons = pl.Series("reason", [r.value for r in REASONS], dtype=REASON_DTYPE)
        return base.with_columns(
            pl.Series("layer", _LAYER_OF_CODE[codes], dtype=pl.Int8),
            reasons.gather(pl.Series(codes)),
            pl.Series("silent", silent, dtype=pl.Boolean),
            pl.Series("due_at", due, dtype=pl.Int64).cast(UTC_MS),
        ).select(list(RESULT_SCHEMA))

    def eligible_result(self) -> pl.DataFrame:
        """:data:`RESULT_SCHEMA` rows of the eligible targets (in the directory's order)."""
        return self.result(self.eligible)
