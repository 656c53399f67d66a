"""Ranking in a real queue shard (real Redis, the real sandbox): a user's due items go best score
first, in a digest's lines and in what the quota lets through; a user whose strategy does not rank,
and an item without a score (no model, or a batch of an older release), keep today's order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from actors.queues import batch_for
from core.experiments import Experiment, Variant, assign
from core.settings import Settings, TelegramSettings
from serve.runtime import EmbeddedRedis
from serve.standins.sandbox import start_sandbox
from tests.integration.test_queues import Rig, event, row, until


@pytest.fixture
async def rig(tmp_path: Path, redis_server: EmbeddedRedis) -> AsyncIterator[Rig]:
    """As ``test_queues``' rig (its own Redis database)."""
    sb = await start_sandbox(port=0)
    settings = Settings(
        data_dir=tmp_path / "var",
        redis={"url": redis_server.url},
        telegram=TelegramSettings(token=sb.token, api_base=sb.base_url),
        distribution={"retry_base_s": 0.05, "digest_window_s": 0.0},
    )
    client = aioredis.Redis.from_url(redis_server.url, db=13)
    await client.flushdb()
    async with aiohttp.ClientSession() as http:
        r = Rig(sb, settings, client, http)
        try:
            yield r
        finally:
            for shard in r.shards:
                await shard.stop()
                await shard.notifier.bot.session.close()  # type: ignore[attr-defined]
            await client.flushdb()
            await client.aclose()
            await sb.stop()


RANKING = Experiment(name="ranking", variants=[Variant(name="on"), Variant(name="off", ranking=False)])


def _user_in(variant: str, start: int) -> int:
    return next(u for u in range(start, start + 1000) if assign(u, [RANKING]).variant == variant)


def _with(rig: Rig, **changes: object) -> None:
    rig.settings = Settings.model_validate({**rig.settings.model_dump(), **changes})


async def _digest(rig: Rig, chat: int, scores: tuple[float | None, float | None]) -> str:
    """A high-priority spot push on BTC (newest) and a medium one on SOL, with these scores, due
    together for ``chat``: the text of the one message they go out in."""
    shard = rig.shard()
    sol = event(priority="medium", symbol="SOL/USDT", net_bps=15.0)
    btc = event(priority="high", symbol="BTC/USDT", net_bps=40.0)
    for ev, score in ((sol, scores[0]), (btc, scores[1])):
        await shard.enqueue(ev, batch_for([{**row(chat), "score": score}]))
    await shard.start()
    await until(lambda: shard.stats_.sent == 2)
    (msg,) = await rig.messages(chat)
    return str(msg["text"])


def _first(text: str) -> str:
    return "SOL" if text.index("SOL/USDT") < text.index("BTC/USDT") else "BTC"


async def test_a_ranking_user_gets_the_best_score_first_in_the_digest(rig: Rig) -> None:
    _with(rig, experiments=[RANKING.model_dump()])
    on, off = _user_in("on", 3000), _user_in("off", 4000)
    assert _first(await _digest(rig, on, (14.0, 0.8))) == "SOL"  # ranked: the score wins
    assert _first(await _digest(rig, off, (14.0, 0.8))) == "BTC"  # not ranked: priority, newest


async def test_without_scores_or_with_personalization_off_the_order_is_todays(rig: Rig) -> None:
    assert _first(await _digest(rig, 3101, (None, None))) == "BTC"  # no model
    assert _first(await _digest(rig, 3102, (14.0, None))) == "BTC"  # one without: today's order
    _with(rig, personalization={"enabled": False})
    assert _first(await _digest(rig, 3103, (14.0, 0.8))) == "BTC"


async def test_the_quota_goes_to_the_best_item_first(rig: Rig) -> None:
    shard = rig.shard()
    await shard.start()
    await shard.enqueue(event(symbol="ETH/USDT"), batch_for([row(3201, tier="free")]))  # 1 of 2 an hour
    await until(lambda: shard.stats_.sent == 1)
    await shard.stop()
    rig.shards.remove(shard)
    await shard.notifier.bot.session.close()  # type: ignore[attr-defined]
    later = rig.shard()
    sol = event(priority="low", symbol="SOL/USDT", net_bps=15.0)
    btc = event(priority="high", symbol="BTC/USDT", net_bps=40.0)
    for ev, score in ((sol, 14.0), (btc, 0.8)):
        await later.enqueue(ev, batch_for([{**row(3201, tier="free"), "score": score}]))
    await later.start()
    await until(lambda: later.stats_.sent + sum(later.stats_.skipped.values()) == 2)
    assert later.stats_.sent == 1 and dict(later.stats_.skipped) == {"rate.hourly": 1}
    texts = [m["text"] for m in await rig.messages(3201)]
    assert len(texts) == 2 and "SOL/USDT" in texts[1] and "BTC/USDT" not in texts[1]


async def test_a_batch_of_the_previous_shape_without_scores_is_recovered_and_sent(rig: Rig) -> None:
    first = rig.shard()  # never started: as if it died right after acknowledging
    old_shape = batch_for([row(3301), row(3302)]).drop_columns(["score"])
    await first.enqueue(event(priority="low", symbol="SOL/USDT"), old_shape)
    await first.enqueue(event(priority="high"), batch_for([{**row(3301), "score": 3.0}, row(3302)]))
    rig.shards.remove(first)
    await first.notifier.bot.session.close()  # type: ignore[attr-defined]
    second = rig.shard()
    assert await second.start() == 4
    scores = sorted((i.score is None) for q in second.chats.values() for i in q.items.values())
    assert scores == [False, True, True, True]
    await until(lambda: second.stats_.sent == 4)
    for chat in (3301, 3302):  # one without a score: priority, newest
        (msg,) = await rig.messages(chat)
        assert _first(msg["text"]) == "BTC"
