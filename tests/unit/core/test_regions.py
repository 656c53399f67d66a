from __future__ import annotations

import pytest

from core.regions import COUNTRY_CODES, parse_region, region_from_language


@pytest.mark.parametrize(
    ("tag", "region"),
    [("pt-br", "BR"), ("en_US", "US"), ("de-DE", "DE"), ("en", None), ("zh-hans", None), ("", None),
     (None, None), ("xx-eu", None), ("en-US-x-private", None)],
)  # fmt: skip
def test_only_a_country_subtag_names_a_region(tag: str | None, region: str | None) -> None:
    assert region_from_language(tag) == region


def test_codes_are_the_assigned_two_letter_ones() -> None:
    assert len(COUNTRY_CODES) == 249 and all(len(c) == 2 and c.isupper() for c in COUNTRY_CODES)
    assert parse_region(" de ") == "DE" and parse_region("ir") == "IR"
    assert parse_region("EU") is None and parse_region("UK") is None and parse_region("DEU") is None
