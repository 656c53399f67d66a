"""Interned strings of the directory (exchanges, symbols, zones, languages) and their bit masks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    pass
from core.eligibility.schema import EXCHANGE_SLOTS, MASK_BITS, OVERFLOW_BIT


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@dataclass
class Vocabulary:
    """Name ↔ code tables of the directory's columns. Append-only: codes never change."""

    exchanges: list[str] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    beta_flags: list[str] = field(default_factory=list)
    timezones: list[str] = field(default_factory=lambda: ["UTC"])
    regions: list[str] = field(default_factory=lambda: [""])
    languages: list[str] = field(default_factory=lambda: ["en"])
    _index: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    def _table(self, name: str) -> dict[str, int]:
        table = self._index.get(name)
        values: list[str] = getattr(self, name)
        if table is None or len(table) != len(values):
            table = {v: i for i, v in enumerate(values)}
            self._index[name] = table
        return table

    def code(self, table: str, value: str, *, add: bool = True) -> int | None:
        """The code of ``value`` in ``table`` (added when new and ``add``), else None."""
        codes = self._table(table)
        found = codes.get(value)
        if found is None and add:
            values: list[str] = getattr(self, table)
            found = len(values)
            values.append(value)
            codes[value] = found
        return found

    def exchange_bit(self, name: str, *, add: bool = True) -> int:
        """The exchange's bit (0 when unknown and not added)."""
        code = self.code("exchanges", name.strip().lower(), add=add)
        if code is None:
            return 0
        return 1 << code if code < EXCHANGE_SLOTS else OVERFLOW_BIT

    def exchange_mask(self, names: Iterable[str], *, add: bool = True) -> int:
        mask = 0
        for name in names:
            mask |= self.exchange_bit(name, add=add)
        return mask

    def beta_mask(self, flags: Iterable[str], *, add: bool = True) -> int:
        mask = 0
        for flag in flags:
            code = self.code("beta_flags", flag, add=add)
            if code is not None and code < MASK_BITS:
                mask |= 1 << code
        return mask

    def symbol_columns(self, symbols: Iterable[str], *, add: bool = True) -> tuple[int, int, list[int]]:
        """``(symbols_n, symbols_mask, symbols_extra)`` for a set of symbols."""
        n, mask, extra = 0, 0, []
        for symbol in symbols:
            code = self.code("symbols", symbol, add=add)
            n += 1
            if code is None:
                continue
            if code < MASK_BITS:
                mask |= 1 << code
            else:
                extra.append(code)
        return n, mask, sorted(extra)

    def tz_code(self, name: str) -> int:
        code = self.code("timezones", name)
        assert code is not None
        return code

    def language_code(self, language: str | None) -> int:
        if not language:
            return 0
        code = self.code("languages", language)
        assert code is not None
        return code

    def region_code(self, region: str | None) -> int:
        if not region:
            return 0
        code = self.code("regions", region.strip().upper())
        assert code is not None
        return code
