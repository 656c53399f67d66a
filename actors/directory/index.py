"""The directory frame's index: a sorted target id → row index, the columnar upsert of
changed rows (:func:`apply_row_changes`) and the rows of ids (:func:`row_positions`)."""

from __future__ import annotations

import numpy as np
import polars as pl

from core.eligibility import (
    DIRECTORY_SCHEMA,
)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def apply_row_changes(
    directory: pl.DataFrame,
    changes: pl.DataFrame,
    index_ids: np.ndarray,
    index_rows: np.ndarray,
) -> pl.DataFrame:
    """Upsert ``changes`` (``user_id`` + any directory columns) into ``directory``, columnar.

    ``index_ids`` (sorted) and ``index_rows`` map a target id to its row. Existing rows are
    updated in place by row index (one ``scatter`` per changed column); ids not in the index
    are appended (they need every column). The last change of an id wins. The caller
    re-indexes appended rows (:meth:`UserDirectory.apply_changes` does).
    """
    if changes.height == 0:
        return directory
    cids = changes.get_column("user_id").to_numpy()
    if np.unique(cids).size != cids.size:
        changes = changes.unique("user_id", keep="last", maintain_order=True)
        cids = changes.get_column("user_id").to_numpy()
    if index_ids.size:
        pos = np.minimum(np.searchsorted(index_ids, cids), index_ids.size - 1)
        found = index_ids[pos] == cids
    else:
        pos = np.zeros(cids.size, dtype=np.int64)
        found = np.zeros(cids.size, dtype=bool)
    out = directory
    if found.any():
        rows = pl.Series(index_rows[pos[found]])
        upd = changes.filter(pl.Series(found)) if not found.all() else changes
        columns = []
        gather: pl.Series | None = None
        for name in directory.columns:
            col = directory.get_column(name)
            if name != "user_id" and name in upd.columns:
                values = upd.get_column(name).cast(col.dtype)
                if isinstance(col.dtype, pl.List):  # no scatter for lists: gather old + new
                    if col.gather(rows).equals(values):
                        columns.append(col)
                        continue
                    if gather is None:
                        idx = np.arange(directory.height, dtype=np.int64)
                        idx[rows.to_numpy()] = directory.height + np.arange(rows.len())
                        gather = pl.Series(idx)
                    col = pl.concat([col, values]).gather(gather)
                else:
                    col = col.scatter(rows, values)
            columns.append(col)
        out = pl.DataFrame(columns)
    if not found.all():
        new = changes.filter(~pl.Series(found)).select(list(DIRECTORY_SCHEMA))
        out = pl.concat([out, new.cast(DIRECTORY_SCHEMA)])
    return out


def row_positions(index_ids: np.ndarray, index_rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The row of each of ``ids`` through the sorted index (-1 for an id without a row)."""
    ids = np.asarray(ids, dtype=np.int64)
    out = np.full(ids.size, -1, dtype=np.int64)
    if ids.size and index_ids.size:
        pos = np.minimum(np.searchsorted(index_ids, ids), index_ids.size - 1)
        found = index_ids[pos] == ids
        out[found] = index_rows[pos[found]]
    return out
