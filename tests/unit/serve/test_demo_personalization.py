"""The demo recomputes the engagement model during its run unless the operator set the interval."""

from __future__ import annotations

import pytest

from core.settings import Settings
from serve.demo import with_demo_personalization


def test_the_demo_runs_the_model_during_its_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARBFLOW_PERSONALIZATION__INTERVAL_S", raising=False)
    assert with_demo_personalization(Settings(), 120).personalization.interval_s == 60.0
    assert with_demo_personalization(Settings(), 20).personalization.interval_s == 30.0
    assert Settings().personalization.interval_s == 900.0  # arbflow run: every 15 minutes
    monkeypatch.setenv("ARBFLOW_PERSONALIZATION__INTERVAL_S", "77")
    assert with_demo_personalization(Settings(), 120).personalization.interval_s == 77.0
