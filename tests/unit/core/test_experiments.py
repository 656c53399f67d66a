"""Experiments: deterministic, balanced assignment; one experiment per user; the settings."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pydantic import ValidationError

from core.experiments import NO_ASSIGNMENT, Experiment, Strategy, Variant, assign, named
from core.settings import load_settings

DIGEST = {"name": "digest", "variants": [{"name": "a"}, {"name": "b", "digest_window_s": 30}]}


def test_assignment_is_deterministic_and_balanced() -> None:
    experiment = Experiment.model_validate(DIGEST)
    first = [assign(u, [experiment]).variant for u in range(20_000)]
    again = [assign(u, [Experiment.model_validate(DIGEST)]).variant for u in range(20_000)]
    assert first == again
    counts = Counter(first)
    assert set(counts) == {"a", "b"}
    assert abs(counts["a"] - 10_000) < 400  # ~4.5 sigma of a fair split


def test_the_hash_depends_on_the_experiment_name() -> None:
    one = Experiment.model_validate(DIGEST)
    other = Experiment.model_validate(DIGEST | {"name": "digest-2"})
    same = sum(assign(u, [one]).variant == assign(u, [other]).variant for u in range(4_000))
    assert 1_700 < same < 2_300  # independent splits agree about half the time


def test_weights_traffic_and_disabled() -> None:
    weighted = Experiment.model_validate(
        {"name": "w", "variants": [{"name": "a", "weight": 3}, {"name": "b"}], "traffic": 0.5}
    )
    counts = Counter(assign(u, [weighted]).variant for u in range(40_000))
    assert abs(counts[None] - 20_000) < 600
    assert abs(counts["a"] - 15_000) < 600 and abs(counts["b"] - 5_000) < 500
    off = weighted.model_copy(update={"enabled": False})
    assert assign(7, [off]) is NO_ASSIGNMENT


def test_a_user_takes_part_in_the_first_experiment_that_includes_them() -> None:
    half = Experiment.model_validate(DIGEST | {"traffic": 0.5})
    rank = Experiment.model_validate(
        {"name": "rank", "variants": [{"name": "on"}, {"name": "off", "ranking": False}]}
    )
    seen = Counter(assign(u, [half, rank]).experiment for u in range(10_000))
    assert abs(seen["digest"] - 5_000) < 300 and seen["digest"] + seen["rank"] == 10_000
    assert named([half, rank], "rank") is rank and named([half], "nope") is None


def test_groups_take_part_in_nothing_and_variants_override_the_defaults() -> None:
    assert assign(None, [Experiment.model_validate(DIGEST)]) is NO_ASSIGNMENT
    variant = Variant(name="b", digest_window_s=30, layout="compact")
    assert variant.strategy() == Strategy(ranking=True, digest_window_s=30, layout="compact", send_shift_s=0)
    assert Variant(name="a").strategy() == Strategy()


def test_bad_definitions_are_refused() -> None:
    with pytest.raises(ValidationError):
        Experiment.model_validate({"name": "x", "variants": [{"name": "a"}]})  # one variant
    with pytest.raises(ValidationError):
        Experiment.model_validate({"name": "x", "variants": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ValidationError):
        Experiment.model_validate({"name": "bad name", "variants": [{"name": "a"}, {"name": "b"}]})


def test_settings_read_experiments_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBFLOW_EXPERIMENTS", json.dumps([DIGEST]))
    settings = load_settings()
    assert [e.name for e in settings.experiments] == ["digest"]
    assert settings.experiments[0].variants[1].digest_window_s == 30
    monkeypatch.setenv("ARBFLOW_EXPERIMENTS", json.dumps([DIGEST, DIGEST]))
    with pytest.raises(ValidationError, match="must differ"):
        load_settings()
