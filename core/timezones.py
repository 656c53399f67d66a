"""IANA time zones typed by people: exact names, case and spacing forgiven, and suggestions.

``resolve_zone("europe/paris")`` and ``resolve_zone("Paris")`` give ``"Europe/Paris"`` (a
city alone when exactly one zone ends with it); ``suggest_zones("Pariss")`` offers the
closest names. Names come from :func:`zoneinfo.available_timezones` (the system's tz
database, or the ``tzdata`` package).
"""

from __future__ import annotations

import difflib
import functools
import zoneinfo


@functools.cache
def _zones() -> dict[str, str]:
    """Lower-cased key → canonical name, for every zone and every unambiguous city."""
    names = sorted(z for z in zoneinfo.available_timezones() if not z.startswith(("posix/", "right/")))
    out = {z.lower(): z for z in names}
    cities: dict[str, list[str]] = {}
    for z in names:
        if "/" in z:
            cities.setdefault(z.rsplit("/", 1)[1].lower(), []).append(z)
    for city, zones in cities.items():
        if len(zones) == 1:
            out.setdefault(city, zones[0])
    return out


def _key(text: str) -> str:
    return "_".join(text.strip().split()).lower()


def resolve_zone(text: str) -> str | None:
    """The canonical IANA name ``text`` stands for, or None."""
    key = _key(text)
    return _zones().get(key) if key else None


def suggest_zones(text: str, n: int = 5) -> list[str]:
    """Up to ``n`` canonical names close to ``text`` (for "did you mean")."""
    key = _key(text)
    if not key:
        return []
    zones = _zones()
    out: list[str] = []
    for match in difflib.get_close_matches(key, list(zones), n=n * 2, cutoff=0.6):
        if zones[match] not in out:
            out.append(zones[match])
    return out[:n]


__all__ = ["resolve_zone", "suggest_zones"]
