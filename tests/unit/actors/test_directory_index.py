"""The directory's id → row index stays sorted and true as rows are appended in any order."""

from __future__ import annotations

import numpy as np
import polars as pl

from actors.directory import UserDirectory
from core.eligibility import DIRECTORY_SCHEMA, empty_directory


def _rows(ids: list[int]) -> pl.DataFrame:
    return (
        pl.DataFrame({"user_id": ids}, schema={"user_id": pl.Int64})
        .with_columns([pl.lit(None).cast(t).alias(n) for n, t in DIRECTORY_SCHEMA.items() if n != "user_id"])
        .select(list(DIRECTORY_SCHEMA))
    )


def test_appending_ids_that_share_an_insertion_point_keeps_the_index_sorted() -> None:
    d = UserDirectory.__new__(UserDirectory)  # the index only: no Redis needed
    d.frame = empty_directory()
    d._ids = np.zeros(0, dtype=np.int64)
    d._rows = np.zeros(0, dtype=np.int64)
    for batch in ([5, 3, 9], [4, 1, 8, 2], [7, 6, 0], [-10, 100, -3]):
        d.apply_changes(_rows(batch))
        assert (np.diff(d._ids) > 0).all(), d._ids
        assert (d.frame.get_column("user_id").to_numpy()[d._rows] == d._ids).all()
    assert d.row_of(6) is not None and d.frame.get_column("user_id")[d.row_of(6)] == 6
    assert d.row_of(11) is None
