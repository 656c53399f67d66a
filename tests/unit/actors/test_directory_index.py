"""The directory's id → row index stays sorted and true as rows are appended in any order, and
so do the rows of the cooldown marks and the filter's masks."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from actors.directory import UserDirectory
from core.eligibility import (
    DirectoryMasks,
    EligibilityPolicy,
    OpportunityView,
    Reason,
    directory_frame,
    empty_directory,
    evaluate,
    group_row,
)
from core.models import OpportunityKind, Priority

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def _rows(ids: list[int], policy: EligibilityPolicy) -> pl.DataFrame:
    return directory_frame([group_row(i, policy) for i in ids])


def _directory() -> UserDirectory:
    d = UserDirectory.__new__(UserDirectory)  # the index only: no Redis needed
    d.policy = EligibilityPolicy()
    d.frame = empty_directory()
    d.masks = DirectoryMasks(d.policy)
    d._ids = np.zeros(0, dtype=np.int64)
    d._rows = np.zeros(0, dtype=np.int64)
    d._cooldowns, d._pending = {}, {}
    return d


def test_appending_ids_that_share_an_insertion_point_keeps_the_index_sorted() -> None:
    d = _directory()
    for batch in ([5, 3, 9], [4, 1, 8, 2], [7, 6, 0], [-10, 100, -3]):
        d.apply_changes(_rows(batch, d.policy))
        assert (np.diff(d._ids) > 0).all(), d._ids
        assert (d.frame.get_column("user_id").to_numpy()[d._rows] == d._ids).all()
    assert d.row_of(6) is not None and d.frame.get_column("user_id")[d.row_of(6)] == 6
    assert d.row_of(11) is None


async def test_cooldown_rows_follow_appends_and_removals() -> None:
    d = _directory()
    d.apply_changes(_rows([5, 3, 9, 4], d.policy))
    opp = OpportunityView(
        opportunity_id="o",
        kind=OpportunityKind.SPOT_SPREAD,
        symbol="BTC/USDT",
        buy_exchange="binance",
        sell_exchange="okx",
        net_bps=20.0,
        priority=Priority.HIGH,
        confidence=0.9,
        dedup_key="k",
        detected_at=NOW,
    )
    until = np.full(3, 2**62, dtype=np.int64)
    d._remember(d._cooldowns, "k", np.array([9, 7, 3]), until)  # 7 has no row yet

    async def check() -> None:
        decided = await d.decide(opp, NOW)
        expected = evaluate(d.frame, opp, NOW, d.policy, [9, 7, 3])
        assert decided.result().equals(expected)
        cooled = set(expected.filter(pl.col("reason") == Reason.RATE_COOLDOWN.value)["user_id"])
        assert cooled == {9, 7, 3} & set(d.frame["user_id"])

    await check()
    d.apply_changes(_rows([7, 1], d.policy))  # 7 appears
    await check()
    d.remove([5, 3])  # rows move up
    await check()
    d.apply_changes(_rows([9], d.policy).with_columns(blocked=pl.lit(True)))  # an update in place
    await check()
