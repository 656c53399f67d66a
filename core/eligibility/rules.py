"""The six layers over every row of a directory frame at once (:func:`evaluate`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np
import polars as pl

from core.eligibility.masks import DirectoryMasks
from core.eligibility.opportunity import EligibilityPolicy, OpportunityView


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
    with the directory's rows (:func:`cooled_mask`). One-off: a directory that evaluates one
    opportunity after another keeps a :class:`DirectoryMasks` instead (``actors.directory``).
    """
    cool = cooled_mask(directory, cooled_user_ids)
    if cool.len() != directory.height:
        raise ValueError("a cooled mask must have one entry per directory row")
    masks = DirectoryMasks.build(directory, policy)
    return masks.evaluate(opp, now, np.flatnonzero(cool.to_numpy())).result()


def _as_series(ids: Iterable[int] | np.ndarray | pl.Series) -> pl.Series:
    if isinstance(ids, pl.Series):
        return ids.cast(pl.Int64)
    if isinstance(ids, np.ndarray):
        return pl.Series(ids.astype(np.int64, copy=False))
    return pl.Series(list(ids), dtype=pl.Int64)
