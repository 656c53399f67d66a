"""Active hours in each user's time zone: whether a zone is inside its window now, and when it
opens next (look-up tables per zone and window)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

if TYPE_CHECKING:
    pass
from core.eligibility.schema import to_ms
from core.eligibility.vocabulary import Vocabulary, zone


def next_opening(tz: ZoneInfo, start: int, end: int, now: datetime) -> datetime:
    """The next start of a local hour at which the window ``[start, end)`` is active (UTC).

    Scalar twin of ``core.accounts.next_active_start`` for a target outside its window
    (without building ``Preferences``): the same answer, across DST included.
    """
    local_date = now.astimezone(tz).date()
    for offset in range(3):
        day = local_date + timedelta(days=offset)
        opening = datetime(day.year, day.month, day.day, start, tzinfo=tz).astimezone(UTC)
        if opening > now and _inside(opening.astimezone(tz).hour, start, end):
            return opening
    probe = now.replace(minute=0, second=0, microsecond=0)
    for _ in range(72):
        probe += timedelta(hours=1)
        if _inside(probe.astimezone(tz).hour, start, end):
            return probe
    return now


def _inside(hour: int, start: int, end: int) -> bool:
    if start < 0:
        return True
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


_WINDOWS = 24 * 24
_W_START = np.repeat(np.arange(24), 24)
_W_END = np.tile(np.arange(24), 24)


def _openings(tz_name: str, now: datetime) -> np.ndarray:
    """For one zone at ``now``: the next opening (epoch ms) of every window ``start*24+end``."""
    local = now.astimezone(zone(tz_name))
    hour_start = now - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
    return _openings_from(tz_name, to_ms(hour_start))


@lru_cache(maxsize=4096)
def _openings_from(tz_name: str, hour_start_ms: int) -> np.ndarray:
    """Walk the next 48 local-hour starts after the one at ``hour_start_ms`` (as real instants,
    so DST gaps and repeats are what the wall clock does) and take, per window, the first
    one inside it: the answer of :func:`next_opening` for every window at once. Cached per
    (zone, local hour): it does not depend on where ``now`` is inside the hour.
    """
    tz = zone(tz_name)
    base = datetime.fromtimestamp(hour_start_ms / 1000, UTC)
    steps = [base + timedelta(hours=k) for k in range(1, 50)]
    hours = np.array([s.astimezone(tz).hour for s in steps])
    start = _W_START[:, None]
    end = _W_END[:, None]
    h = hours[None, :]
    inside = np.where(start < end, (h >= start) & (h < end), (h >= start) | (h < end))
    first = inside.argmax(axis=1)
    ms = np.array([to_ms(s) for s in steps], dtype=np.int64)
    out: np.ndarray = ms[first]
    out.flags.writeable = False
    return out


_SLOTS = _WINDOWS + 1
"""Per zone: slot 0 = always active, slot ``1 + start*24 + end`` = a window."""


def _inside_table(vocab: Vocabulary, now: datetime) -> np.ndarray:
    """``inside[tz * _SLOTS + window + 1]``: is the window open at ``now`` in that zone?"""
    hours = np.array([now.astimezone(zone(name)).hour for name in vocab.timezones], dtype=np.int16)
    h = hours[:, None]
    start, end = _W_START[None, :], _W_END[None, :]
    windows = np.where(start < end, (h >= start) & (h < end), (h >= start) | (h < end))
    table = np.ones((len(hours), _SLOTS), dtype=bool)
    table[:, 1:] = windows
    return table.ravel()


def _opening_table(vocab: Vocabulary, now: datetime) -> np.ndarray:
    """``opening[tz * _SLOTS + window + 1]``: the window's next opening (epoch ms; 0 for slot 0)."""
    table = np.zeros((len(vocab.timezones), _SLOTS), dtype=np.int64)
    for code, name in enumerate(vocab.timezones):
        table[code, 1:] = _openings(name, now)
    return table.ravel()
