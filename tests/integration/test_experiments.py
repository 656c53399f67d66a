"""Experiments through the real actors: a pair coordinator's events go to ``dist:engine``, the
queue shards, the rate limiter and the Telegram sandbox, on a private Redis, with
``settings.experiments`` set (``ARBFLOW_EXPERIMENTS``). Each user gets their variant's
strategy (a digest window and the compact layout; a send-time shift), and every
``deliveries`` row of theirs in the lake names their experiment and variant (the
distributor's ``skipped`` rows too).
"""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal

import ray

from actors.sink import get_sink
from core.accounts import Tier
from core.experiments import Experiment, Variant, assign
from core.settings import Settings
from pipeline.lake import Lake
from pipeline.query import run_query
from serve.orchestrator import Distribution
from serve.runtime import EmbeddedRedis
from tests.integration.test_distribution_seam import (
    Pair,
    _settings,
    private_redis,
    spread,
    users,
    wait_for,
)
from tests.support.sandbox_thread import SandboxThread

__all__ = ["private_redis"]  # the fixture, shared with the seam's tests

EXPERIMENT = Experiment(
    name="exp-seam",
    variants=[
        Variant(name="a"),
        Variant(name="b", digest_window_s=30, layout="compact"),
        Variant(name="c", send_shift_s=3),
    ],
)


def _by_variant(ids: range) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for uid in ids:
        variant = assign(uid, [EXPERIMENT]).variant
        assert variant is not None
        out.setdefault(variant, []).append(uid)
    return out


def test_variants_get_their_strategy_and_every_row_names_experiment_and_variant(
    ray_session: None, base_settings: Settings, sandbox: SandboxThread, private_redis: EmbeddedRedis
) -> None:
    settings = _settings(base_settings, sandbox, private_redis.url, tiers={"basic": {"delay_s": 2}})
    settings = settings.model_copy(update={"experiments": [EXPERIMENT]})
    found = _by_variant(range(8400, 8460))
    arms = {name: ids[:2] for name, ids in found.items()}
    assert set(arms) == {"a", "b", "c"} and all(len(v) == 2 for v in arms.values())
    everyone = [u for ids in arms.values() for u in ids]
    picky = found["a"][2]  # asks for more than these spreads give: skipped by the distributor
    users(
        private_redis.url,
        [(u, Tier.BASIC, {}) for u in everyone] + [(picky, Tier.BASIC, {"min_net_bps": Decimal(500)})],
    )
    dist = Distribution(settings).start()
    pair = Pair(settings)
    try:
        # two spreads a second apart: with the Basic delay each is due 2 s after it was queued
        pair.tick(spread(confidence=0.8, pushable=True))
        time.sleep(1.0)
        deadline = time.monotonic() + 7.0
        while time.monotonic() < deadline:  # both stay open past every delay and shift
            btc = spread(confidence=0.8, pushable=True)
            pair.tick(btc, dataclasses.replace(btc, symbol="ETH/USDT"))
            time.sleep(0.5)
        wait_for(
            lambda: all(sum(1 for t in sandbox.texts(u) if "ETH/USDT" in t) for u in everyone),
            15,
            why=lambda: {u: sandbox.texts(u) for u in everyone},
        )
        time.sleep(0.5)
        for uid in arms["a"] + arms["c"]:  # the setting's window (0 here): one push each, in full
            texts = sandbox.texts(uid)
            assert len(texts) == 2, (uid, texts)
            assert all("Executable: $10,000 at this edge" in t for t in texts), texts
        for uid in arms["b"]:  # a 30 s window: the second was due within it, one compact digest
            (text,) = sandbox.texts(uid)
            assert "1. " in text and "2. " in text and "BTC/USDT" in text and "ETH/USDT" in text, text
            assert "Executable" not in text and "Detected" not in text, text
    finally:
        pair.stop()
        dist.stop()
    ray.get(get_sink(settings).flush.remote())
    rows = run_query(
        Lake.from_settings(settings.lake),
        "SELECT user_id, status, experiment, variant, digest_size, "
        "epoch_ms(sent_at) - epoch_ms(queued_at) AS waited_ms FROM deliveries",
    ).to_pylist()
    skipped = [r for r in rows if r["user_id"] == picky]
    assert skipped and {(r["status"], r["experiment"], r["variant"]) for r in skipped} == {
        ("skipped", "exp-seam", "a")
    }
    mine = [r for r in rows if r["user_id"] in everyone]
    assert {r["status"] for r in mine} >= {"queued", "sent"}
    for r in mine:
        assert r["experiment"] == "exp-seam", r
        assert r["variant"] == next(name for name, found in arms.items() if r["user_id"] in found), r
    sent = [r for r in mine if r["status"] == "sent"]
    assert sorted(r["digest_size"] for r in sent if r["variant"] == "b") == [2, 2, 2, 2]
    # the send-time shift: c's pushes went 3 s later than a's after the same 2 s delay
    waited = {name: [r["waited_ms"] for r in sent if r["variant"] == name] for name in ("a", "c")}
    assert all(w < 4500 for w in waited["a"]), waited
    assert all(w >= 4800 for w in waited["c"]), waited  # queued_at is the fan-out's (ms apart)
