"""The reference loop (:func:`evaluate_loop`, one user at a time, cross-checked against
:func:`evaluate` in the tests) and :func:`explain`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    pass
from core.eligibility.hours import _inside, next_opening
from core.eligibility.masks import _SUPER, _Plan, _plan
from core.eligibility.opportunity import THRESHOLD_COLUMN, EligibilityPolicy, OpportunityView
from core.eligibility.rules import _as_series, evaluate
from core.eligibility.schema import MASK_BITS, RESULT_SCHEMA, TIERS, Layer, Reason, to_ms
from core.eligibility.vocabulary import zone


def evaluate_loop(
    users: Sequence[Mapping[str, Any]],
    opp: OpportunityView,
    now: datetime,
    policy: EligibilityPolicy,
    cooled_user_ids: Iterable[int] | np.ndarray | pl.Series = (),
) -> pl.DataFrame:
    """The same rules, one row at a time in plain Python (the baseline and the cross-check).

    ``users`` are directory rows as dicts (``directory.to_dicts()``).
    """
    p = _plan(opp, now, policy)
    vocab = policy.vocab
    if isinstance(cooled_user_ids, pl.Series) and cooled_user_ids.dtype == pl.Boolean:
        flags = cooled_user_ids.to_list()
        cooled = {r["user_id"] for r, flag in zip(users, flags, strict=True) if flag}
    else:
        cooled = set(_as_series(cooled_user_ids).to_list())
    tier_code = {t.value: i for i, t in enumerate(TIERS)}
    out_layer: list[int] = []
    out_reason: list[str] = []
    out_silent: list[bool] = []
    out_due: list[datetime] = []
    for row in users:
        t = tier_code[row["tier"]]
        group = row["audience"] == "group"
        tz = zone(vocab.timezones[row["tz"]])
        window = row["window"]
        start, end = (-1, -1) if window < 0 else divmod(window, 24)
        inside = _inside(now.astimezone(tz).hour, start, end)
        silent = not inside and row["outside_silent"]
        held = not inside and not row["outside_silent"]
        opening_ms = to_ms(next_opening(tz, start, end, now)) if held else None
        due_ms = p.now_ms + p.delay_ms[t]
        if opening_ms is not None:
            due_ms = max(due_ms, opening_ms)
        day_used = row["day_used"] if row["day_bucket"] == p.today[row["tz"]] else 0
        hour_used = row["hour_used"] if row["hour_bucket"] == p.this_hour else 0
        reason = _loop_reason(row, p, opp, t, group, held, opening_ms, day_used, hour_used, cooled)
        out_layer.append(reason.layer.value)
        out_reason.append(reason.value)
        out_silent.append(bool(silent))
        out_due.append(datetime.fromtimestamp(due_ms / 1000, UTC))
    return pl.DataFrame(
        {
            "user_id": [r["user_id"] for r in users],
            "chat_id": [r["chat_id"] for r in users],
            "audience": [r["audience"] for r in users],
            "tier": [r["tier"] for r in users],
            "layer": out_layer,
            "reason": out_reason,
            "silent": out_silent,
            "due_at": out_due,
            "tz": [r["tz"] for r in users],
            "lang": [r.get("lang") or 0 for r in users],
        },
        schema=RESULT_SCHEMA,
    )


def _loop_reason(
    row: Mapping[str, Any],
    p: _Plan,
    opp: OpportunityView,
    t: int,
    group: bool,
    held: bool,
    opening_ms: int | None,
    day_used: int,
    hour_used: int,
    cooled: set[int],
) -> Reason:
    expires = row["session_expires_ms"]
    if expires is None:
        return Reason.SESSION_NONE
    if expires <= p.now_ms:
        return Reason.SESSION_EXPIRED
    if not p.tier_allows[t]:
        return Reason.SUBSCRIPTION_KIND
    if p.beta_needed and t != _SUPER and not (row["beta"] & p.beta_bit):
        return Reason.SUBSCRIPTION_BETA
    if not row["pushes_on"]:
        return Reason.PREFERENCES_OFF
    if not row["kinds"] & p.kind_bit:
        return Reason.PREFERENCES_KIND
    if row["exchanges"] and not (p.legs_known and row["exchanges"] & p.legs_mask == p.legs_mask):
        return Reason.PREFERENCES_EXCHANGE
    if row["symbols_n"] > 0:
        code = p.sym_code
        if code is None:
            return Reason.PREFERENCES_SYMBOL
        if code < MASK_BITS:
            if not row["symbols_mask"] & (1 << code):
                return Reason.PREFERENCES_SYMBOL
        elif code not in row["symbols_extra"]:
            return Reason.PREFERENCES_SYMBOL
    if p.legs_mask and row["blocked_exchanges"] & p.legs_mask:
        return Reason.PREFERENCES_BLOCKED
    code = p.sym_code
    if code is not None and (
        (code < MASK_BITS and row["blocked_symbols_mask"] & (1 << code))
        or (code >= MASK_BITS and code in row["blocked_symbols_extra"])
    ):
        return Reason.PREFERENCES_BLOCKED
    if row[THRESHOLD_COLUMN[opp.kind]] > opp.threshold_value:
        return Reason.PREFERENCES_MIN_PROFIT
    if math.isfinite(opp.executable_usd) and row["min_size_usd"] > opp.executable_usd:
        return Reason.PREFERENCES_MIN_SIZE
    muted = row["muted_until_ms"]
    if muted is not None and muted > p.now_ms:
        return Reason.PREFERENCES_MUTED
    if (
        held
        and p.max_hold_ms is not None
        and opening_ms is not None
        and opening_ms - p.now_ms > p.max_hold_ms
    ):
        return Reason.PREFERENCES_HOURS
    if not group:
        daily, hourly = p.daily[t], p.hourly[t]
        if daily >= 0 and day_used >= daily:
            return Reason.RATE_DAILY
        if hourly >= 0 and hour_used >= hourly:
            return Reason.RATE_HOURLY
    if row["user_id"] in cooled:
        return Reason.RATE_COOLDOWN
    if row["only_my_exchanges"] and not (p.legs_known and row["key_exchanges"] & p.legs_mask == p.legs_mask):
        return Reason.TECHNICAL_API_KEYS
    if opp.ai_enhanced and not row["has_ai_key"]:
        return Reason.TECHNICAL_AI_KEY
    if row["restricted"]:
        return Reason.CONTEXT_RESTRICTED
    if p.region_blocked[row["region"]]:
        return Reason.CONTEXT_REGION
    if group and (
        (p.group_daily >= 0 and day_used >= p.group_daily)
        or (p.group_hourly >= 0 and hour_used >= p.group_hourly)
    ):
        return Reason.CONTEXT_GROUP_LIMIT
    if row["blocked"]:
        return Reason.CONTEXT_BLOCKED
    return Reason.ELIGIBLE


def explain(
    directory: pl.DataFrame,
    user_id: int,
    opp: OpportunityView,
    now: datetime,
    policy: EligibilityPolicy,
    cooled: Iterable[int] | np.ndarray | pl.Series = (),
) -> tuple[Layer, str]:
    """``/admin why``: the deciding layer and reason for one target (``KeyError`` if unknown)."""
    rows = directory.filter(pl.col("user_id") == user_id)
    if rows.height == 0:
        raise KeyError(user_id)
    res = evaluate(rows.head(1), opp, now, policy, cooled)
    return Layer(int(res["layer"][0])), str(res["reason"][0])
