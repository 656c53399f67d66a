"""The queue shards' hand-off to their webhook sender (``actors.outbound.OutboundHandoff``):
only users with endpoints, only at or above the tier unless an admin granted it; a batch
the sender cannot take yet is kept."""

from __future__ import annotations

from typing import Any

from actors.outbound import HANDED, OutboundHandoff
from core.settings import Settings
from pipeline.deliveries import DeliveryStatus

EVENT = {"opportunity_id": "o1", "event": "opened", "detected_at": "2026-12-06T21:00:00+00:00"}


class FakeSender:
    """Stands in for the shard's sender: keeps the batches, or fails like a Redis away."""

    def __init__(self, sent: list[list[dict[str, Any]]], fail: bool) -> None:
        self.sent, self.fail = sent, fail

    async def submit(self, batch: list[dict[str, Any]]) -> int:
        if self.fail:
            raise RuntimeError("away")
        self.sent.append(batch)
        return len(batch)


def handoff(sent: list[list[dict[str, Any]]], *, fail: bool = False) -> OutboundHandoff:
    out = OutboundHandoff(Settings(), store=None, sender=FakeSender(sent, fail))  # type: ignore[arg-type]
    out.users = {1: False, 2: True}
    return out


async def test_only_users_with_endpoints_at_the_tier_or_granted_by_an_admin() -> None:
    sent: list[list[dict[str, Any]]] = []
    h = handoff(sent)
    assert h.offer(1, "user", "premium", EVENT, 5)
    assert h.offer(1, "user", "superadmin", EVENT, 5)
    assert not h.offer(1, "user", "basic", EVENT, 5)  # below Premium
    assert h.offer(2, "user", "free", EVENT, 5)  # an admin registered it
    assert not h.offer(3, "user", "premium", EVENT, 5)  # no endpoint
    assert not h.offer(1, "group", "premium", EVENT, 5)
    assert not h.offer(None, "channel", "premium", EVENT, 5)
    assert not h.offer(1, "user", "premium", None, 5)
    await h.flush()
    assert [j["user_id"] for j in sent[0]] == [1, 1, 2] and h.handed == 3 and h.pending == []
    assert sent[0][0] == {"user_id": 1, "event": EVENT, "queued_ms": 5, "tier": "premium"}


async def test_a_batch_waits_while_redis_is_away() -> None:
    h = handoff([], fail=True)
    h.offer(1, "user", "premium", EVENT, 5)
    await h.flush()
    assert len(h.pending) == 1 and h.handed == 0


def test_the_telegram_outcomes_that_are_posted_too() -> None:
    assert {DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.BLOCKED} == HANDED
    assert DeliveryStatus.EXPIRED not in HANDED and DeliveryStatus.SKIPPED not in HANDED
