"""The demo's experiment: set when the operator configured none, the planted effect on the
simulated users' chance to press a push, and how they find a push's details button."""

from __future__ import annotations

from core.experiments import Experiment, Variant, assign
from core.settings import Settings
from serve.demo import DEMO_EXPERIMENT, with_demo_experiment
from serve.standins.demo_users.plan import PRESS_BASE, PRESS_LIFT, plan_users, press_chance
from serve.standins.demo_users.users import _push_of


def test_the_demo_sets_its_experiment_only_when_none_is_configured() -> None:
    assert with_demo_experiment(Settings()).experiments == [DEMO_EXPERIMENT]
    mine = Experiment(name="mine", variants=[Variant(name="x"), Variant(name="y")])
    assert with_demo_experiment(Settings(experiments=[mine])).experiments == [mine]
    # the demo's users split between its two variants
    plans = plan_users(200, seed=7, base_id=6_000_000_000)
    variants = {assign(p.id, [DEMO_EXPERIMENT]).variant for p in plans}
    assert variants == {"full", "compact"}


def test_the_planted_effect() -> None:
    plans = plan_users(400, seed=7, base_id=6_000_000_000)
    mean = sum(p.press for p in plans) / len(plans)
    assert abs(mean - PRESS_BASE) < 0.03  # users differ around the base
    assert len({round(p.press, 3) for p in plans}) > 100
    p = plans[0]
    assert press_chance(p, "full", "full") == p.press  # the control
    assert press_chance(p, "-", "full") == p.press  # in no experiment
    assert press_chance(p, "compact", "full") == min(0.95, p.press + PRESS_LIFT)
    assert press_chance(p, "compact", None) == p.press


def test_a_push_is_found_by_its_details_button() -> None:
    markup = {
        "inline_keyboard": [
            [{"text": "1", "callback_data": "pu:details:o1"}],
            [{"text": "m", "callback_data": "pu:mute1h:o1"}],
        ]
    }
    record = {
        "params": {"chat_id": 5, "reply_markup": markup},
        "response": {"ok": True, "result": {"message_id": 42}},
    }
    assert _push_of(record) == (42, "pu:details:o1")
    onboarding = {
        "params": {"reply_markup": {"inline_keyboard": [[{"text": "x", "callback_data": "ob:next"}]]}}
    }
    assert _push_of({**onboarding, "response": {"result": {"message_id": 1}}}) is None
    assert _push_of({"params": {"reply_markup": "not json"}, "response": {}}) is None
