"""A user's region (ISO 3166-1 alpha-2 country code), for ``ARBFLOW_DISTRIBUTION__REGION_BLOCKS``.

Where it comes from, strongest first: an admin (``/admin region``; the user cannot change
it then), the user (``/settings region``), the region subtag of the Telegram client's
``language_code`` at first contact (``pt-br`` → ``BR``; a bare language such as ``en``
names no country and sets nothing). Unknown stays unknown: no rule blocks it.
"""

from __future__ import annotations

import re

COUNTRY_CODES: frozenset[str] = frozenset(
    """
        AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
        BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
        DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
        GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
        KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
        MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
        PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
        SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
        VN VU WF WS YE YT ZA ZM ZW
    """.split()  # noqa: SIM905 (a table, easier to read as text)
)
"""The officially assigned ISO 3166-1 alpha-2 codes."""

_SUBTAG = re.compile(r"^[a-z]{2,3}[-_]([a-z]{2})$", re.IGNORECASE)


def parse_region(text: str) -> str | None:
    """``"de"`` / ``" DE "`` → ``"DE"``; None when it is not an assigned country code."""
    code = text.strip().upper()
    return code if code in COUNTRY_CODES else None


def region_from_language(language_code: str | None) -> str | None:
    """The country of a ``language-REGION`` tag (``pt-br``, ``en_US``), else None."""
    match = _SUBTAG.match((language_code or "").strip())
    return parse_region(match.group(1)) if match else None


__all__ = ["COUNTRY_CODES", "parse_region", "region_from_language"]
