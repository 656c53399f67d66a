"""Reason codes on rows: each check of :mod:`core.eligibility` fails or not on a row, and a
row's deciding reason is the smallest failing code (:class:`~core.eligibility.masks.DirectoryMasks`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

from core.eligibility.schema import Reason

PASS = 255
"""The code of a row no check of a group fails (in :attr:`Decisions.codes`: eligible)."""


def column(f: pl.DataFrame, name: str) -> np.ndarray:
    return f.get_column(name).to_numpy()


def apply_checks(code: np.ndarray, checks: Iterable[tuple[Reason, np.ndarray | bool]]) -> np.ndarray:
    """Fold ``(reason, fails)`` checks, given in the order of the reasons, into ``code``."""
    for reason, fails in reversed(list(checks)):
        if fails is False:
            continue
        code[fails] = reason.code
    return code
