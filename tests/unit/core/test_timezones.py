from __future__ import annotations

import pytest

from core.accounts import Preferences
from core.timezones import resolve_zone, suggest_zones


@pytest.mark.parametrize(
    ("typed", "zone"),
    [
        ("Europe/Paris", "Europe/Paris"),
        ("  europe/paris ", "Europe/Paris"),
        ("Paris", "Europe/Paris"),
        ("new york", "America/New_York"),
        ("utc", "UTC"),
        ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    ],
)
def test_typed_names_resolve_to_the_canonical_zone(typed: str, zone: str) -> None:
    assert resolve_zone(typed) == zone
    assert Preferences(timezone=zone).zone.key == zone  # what the bot stores is valid


@pytest.mark.parametrize("typed", ["", "   ", "Pariss", "Nowhere/City", "UTC+3", "../../etc/passwd"])
def test_unknown_names_resolve_to_nothing(typed: str) -> None:
    assert resolve_zone(typed) is None


def test_suggestions_are_close_canonical_names() -> None:
    assert suggest_zones("Pariss")[0] == "Europe/Paris"
    assert "America/Buenos_Aires" in suggest_zones("buenos aires")  # two zones end with the city
    assert suggest_zones("") == [] and suggest_zones("qqqqqqqqqq") == []
    assert len(suggest_zones("Europe/", n=3)) <= 3
