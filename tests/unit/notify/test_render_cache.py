"""The rendered-push memory (``notify.notifier.render``): the text a push would get rendered
afresh, whatever the moment, the zone, the language or what closed — hits only where the
text is the same."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.notifications import Digest
from notify import notifier
from notify.notifier import _render, render
from tests.unit.notify.test_push_texts import AT
from tests.unit.notify.test_push_texts_ru import FUNDING, SPOT

MOMENTS = [AT + timedelta(seconds=s / 4) for s in range(-8, 4 * 130)]
"""Every quarter second from 2 s before detection to 130 s after (ages round at 1 s, 60 s)."""


@pytest.mark.parametrize(
    "payload", [SPOT, FUNDING, Digest((SPOT, FUNDING))], ids=["spot", "funding", "digest"]
)
@pytest.mark.parametrize(("tz", "lang"), [("UTC", None), ("Asia/Kathmandu", "ru")])
def test_a_remembered_push_is_the_push_rendered_afresh(payload: object, tz: str, lang: str | None) -> None:
    notifier._rendered.clear()
    for closed in (None, {SPOT.opportunity_id: 12.5}):
        for now in [*MOMENTS, FUNDING.next_funding, FUNDING.next_funding + timedelta(milliseconds=1)]:
            want = _render(payload, tz=tz, now=now, closed=closed, lang=lang)  # type: ignore[arg-type]
            assert render(payload, tz=tz, now=now, closed=closed, lang=lang) == want  # type: ignore[arg-type]
    # two `closed` variants: without sharing, one entry per moment each
    assert 0 < len(notifier._rendered) <= 2 * 0.55 * len(MOMENTS)  # moments within a second share


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notifier, "RENDERED_MAX", 10)
    notifier._rendered.clear()
    for s in range(25):
        render(SPOT, now=AT + timedelta(seconds=s))
    assert 0 < len(notifier._rendered) <= 10
