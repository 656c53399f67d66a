"""The symbol checks (the user's symbols, blocked symbols) per symbol code, kept from the rows
that pick or block symbols only: most users do neither, so a symbol not seen yet costs those
rows, not the directory (:class:`~core.eligibility.masks.DirectoryMasks`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from core.eligibility.codes import PASS, apply_checks, column
from core.eligibility.schema import MASK_BITS, Reason


def symbol_codes(f: pl.DataFrame, code: int | None) -> np.ndarray:
    n = column(f, "symbols_n")
    if code is None:
        picked: np.ndarray | bool = n > 0
        blocked: np.ndarray | bool = False
    elif code < MASK_BITS:
        bit = np.uint64(1 << code)
        picked = (n > 0) & ((column(f, "symbols_mask") & bit) == 0)
        blocked = (column(f, "blocked_symbols_mask") & bit) != 0
    else:
        item = pl.lit(code, pl.UInt32)
        lists = f.select(
            pl.col("symbols_extra").list.contains(item).alias("in"),
            pl.col("blocked_symbols_extra").list.contains(item).alias("out"),
        )
        picked = (n > 0) & ~column(lists, "in")
        blocked = column(lists, "out")
    return apply_checks(
        np.full(f.height, PASS, dtype=np.uint8),
        [(Reason.PREFERENCES_SYMBOL, picked), (Reason.PREFERENCES_BLOCKED, blocked)],
    )


@dataclass(frozen=True, slots=True)
class SymbolRows:
    """The rows that pick symbols or block some (every other row passes both symbol checks),
    in no particular order, with their symbol columns; the codes beyond the bit masks as
    (code, row) pairs sorted by code."""

    rows: np.ndarray
    picks: np.ndarray  # symbols_n > 0
    mask: np.ndarray  # symbols_mask
    blocked: np.ndarray  # blocked_symbols_mask
    extra: tuple[np.ndarray, np.ndarray]  # symbols_extra of the rows that pick: codes, rows
    blocked_extra: tuple[np.ndarray, np.ndarray]


def _pairs(rows: np.ndarray, lists: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    flat = pl.DataFrame({"row": rows, "code": lists}).explode("code").drop_nulls().sort("code")
    return flat.get_column("code").to_numpy().astype(np.int64), flat.get_column("row").to_numpy()


def symbol_rows(f: pl.DataFrame, rows: np.ndarray) -> SymbolRows:
    """The entries of the rows of ``f``, whose row numbers are ``rows``."""
    picks = column(f, "symbols_n") > 0
    blocked = column(f, "blocked_symbols_mask")
    blocked_lists = f.get_column("blocked_symbols_extra")
    listed = blocked_lists.list.len().to_numpy() > 0
    keep = picks | (blocked != 0) | listed
    return SymbolRows(
        rows=rows[keep],
        picks=picks[keep],
        mask=column(f, "symbols_mask")[keep],
        blocked=blocked[keep],
        extra=_pairs(rows[picks], f.get_column("symbols_extra").filter(pl.Series(picks))),
        blocked_extra=_pairs(rows[listed], blocked_lists.filter(pl.Series(listed))),
    )


def _merge_pairs(
    old: tuple[np.ndarray, np.ndarray], stale: np.ndarray, new: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    keep = ~stale[old[1]]
    codes = np.concatenate([old[0][keep], new[0]])
    order = np.argsort(codes, kind="stable")
    return codes[order], np.concatenate([old[1][keep], new[1]])[order]


def merge_symbol_rows(old: SymbolRows, stale: np.ndarray, new: SymbolRows) -> SymbolRows:
    """``old`` without the entries of the ``stale`` rows (a mask over every row), plus ``new``."""
    keep = ~stale[old.rows]
    return SymbolRows(
        rows=np.concatenate([old.rows[keep], new.rows]),
        picks=np.concatenate([old.picks[keep], new.picks]),
        mask=np.concatenate([old.mask[keep], new.mask]),
        blocked=np.concatenate([old.blocked[keep], new.blocked]),
        extra=_merge_pairs(old.extra, stale, new.extra),
        blocked_extra=_merge_pairs(old.blocked_extra, stale, new.blocked_extra),
    )


def renumber_symbol_rows(old: SymbolRows, keep: np.ndarray) -> SymbolRows:
    """``old`` after only the rows where ``keep`` is true stay (renumbered)."""
    index = np.cumsum(keep) - 1

    def pairs(p: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        k = keep[p[1]]
        return p[0][k], index[p[1][k]]

    k = keep[old.rows]
    return SymbolRows(
        rows=index[old.rows[k]],
        picks=old.picks[k],
        mask=old.mask[k],
        blocked=old.blocked[k],
        extra=pairs(old.extra),
        blocked_extra=pairs(old.blocked_extra),
    )


def _rows_with(pairs: tuple[np.ndarray, np.ndarray], code: int) -> np.ndarray:
    lo, hi = np.searchsorted(pairs[0], [code, code + 1])
    return pairs[1][lo:hi]


def symbol_array(s: SymbolRows, code: int | None, height: int) -> np.ndarray:
    """:func:`symbol_codes` of every row, from the rows that pick or block symbols only."""
    out = np.full(height, PASS, dtype=np.uint8)
    if code is None:
        out[s.rows[s.picks]] = Reason.PREFERENCES_SYMBOL.code
        return out
    if code < MASK_BITS:
        bit = np.uint64(1 << code)
        out[s.rows[(s.blocked & bit) != 0]] = Reason.PREFERENCES_BLOCKED.code
        out[s.rows[s.picks & ((s.mask & bit) == 0)]] = Reason.PREFERENCES_SYMBOL.code
        return out
    out[_rows_with(s.blocked_extra, code)] = Reason.PREFERENCES_BLOCKED.code
    has = np.zeros(height, dtype=bool)
    has[_rows_with(s.extra, code)] = True
    out[s.rows[s.picks & ~has[s.rows]]] = Reason.PREFERENCES_SYMBOL.code
    return out
