"""The "missed while delayed" digest of a queue shard: what closed while a tier delay held it.

When the distributor tells a shard an opportunity closed, the delayed items it still held
for it expire; those the tier delay hid (``core.missed.was_missed``: a Free or Basic item
closed before its due time) are *noted* here: a ``deliveries`` row ``expired``/``missed``
with the opportunity's ``lifetime_s``, and a :class:`core.missed.MissedItem` for the chat's
digest. The digest goes at the chat's next digest time (``core.missed.next_digest_at``:
Free daily at the user's local ``digest_hour``, Basic hourly, or every
``ARBFLOW_DISTRIBUTION__DIGEST_PERIOD_S``), through the same global rate limiter as the
pushes, as one message; it draws no push quota (it is a summary of what was *not* pushed).
Its outcome is one ``deliveries`` row: ``sent`` with reason ``digest``, ``digest_size`` the
items in it and ``kind`` ``missed_digest`` (``blocked``/``failed`` likewise). An empty
digest is never sent; a muted user's waits for the mute's end, and outside the user's active
hours it goes silently (``disable_notification``); a user whose digest is off
(``/settings digest off``) or whose tier no longer has a delay gets none, and their items
are dropped.

Durable in Redis, so a restarted shard sends what its predecessor noted:

- ``missed:<chat>``: a list of JSON entries (the item, the user id and tier), the latest
  ``missed_keep`` (50) kept, expiring ``missed_ttl_s`` after the last one was added
  (``/forget`` deletes it);
- ``uq:NNN:digests``: a sorted set chat → when its digest is due (ms).

A digest is removed from the list only after Telegram accepted it (entries added during
the send stay for the next one); a 429 or a transient error moves its due time on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from actors.edits import moment_ms
from actors.lazy import stop_task
from core.accounts import Tier, TierPolicy, User, effective_tier, is_active_hour, is_muted
from core.errors import StoreUnavailable
from core.missed import DEFAULT_DIGEST_HOUR, MissedDigest, MissedItem, cadence_of, next_digest_at, was_missed
from core.notifications import Notification, SendOutcome
from core.queueing import QueueItem
from notify.languages import pick_locale
from pipeline.deliveries import Audience, DeliveryStatus
from state.users import RedisUserStore

if TYPE_CHECKING:
    from actors.queues import QueueShard

log = logging.getLogger(__name__)

MISSED_PREFIX = "missed:"
MISSED_REASON = "missed"
"""``reason`` of the ``expired`` row of an item the tier delay hid until it closed."""
DIGEST_REASON = "digest"
"""``reason`` of the row of a "missed while delayed" digest message."""
DIGEST_KIND = "missed_digest"
RETRY_S = 60.0
"""A digest that met a transient error is tried again this much later."""
DUE_BATCH = 32
PUSHED_MAX = 100_000
"""(chat, opportunity) pushes remembered to keep what reached a chat after all out of its digest."""


def missed_key(chat: int | str) -> str:
    return f"{MISSED_PREFIX}{chat}"


@dataclass(slots=True)
class MissedStats:
    noted: int = 0
    digests: int = 0
    """Digest messages Telegram accepted."""
    items_sent: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    """Digests not sent, by why (``off``, ``no_delay``, ``blocked``, ``failed``)."""
    errors: int = 0


class MissedDigests:
    """One shard's missed items and digest loop (see the module doc)."""

    def __init__(self, shard: QueueShard, *, users: RedisUserStore | None = None) -> None:
        self.shard = shard
        self.client = shard.client
        self.key = f"{shard.prefix}:digests"
        self.dist = shard.dist
        self.users = users or RedisUserStore(shard.client)
        self.superadmins = frozenset(shard.settings.superadmin_ids)
        self.pending: list[tuple[int | str, dict[str, Any]]] = []
        self.stats = MissedStats()
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.pushed: dict[tuple[int | str, str], int] = {}
        """(chat, opportunity) → when this shard last pushed it there (ms): a missed item whose
        opportunity reopened and reached the chat after all is left out of the digest."""

    def note_pushed(self, chat: int | str, opportunity_ids: list[str]) -> None:
        now_ms = int(self.shard.clock() * 1000)
        for opp in opportunity_ids:
            self.pushed.pop((chat, opp), None)
            self.pushed[(chat, opp)] = now_ms
        while len(self.pushed) > PUSHED_MAX:
            del self.pushed[next(iter(self.pushed))]

    def _still_missed(self, chat: int | str, item: MissedItem) -> bool:
        """Not pushed to the chat since it closed, nor queued for it again (a reopen)."""
        queue = self.shard.chats.get(chat)
        if queue is not None and item.opportunity_id in queue.items:
            return False
        pushed = self.pushed.get((chat, item.opportunity_id))
        return pushed is None or pushed < item.closed_ms

    # -- noting ----------------------------------------------------------------------------
    def note(
        self, item: QueueItem, n: Notification | None, event: Mapping[str, Any] | None
    ) -> MissedItem | None:
        """``item`` expired because its opportunity closed now: a :class:`MissedItem` if the
        tier delay hid it (queued for the chat's digest), else None."""
        if item.audience != Audience.USER or n is None:
            return None
        policy = self.shard.policies.get(_tier(item.tier))
        closed_ms = int(self.shard.clock() * 1000)
        if policy is None or not was_missed(
            delay_s=policy.delay_s, queued_ms=item.queued_ms, due_ms=item.due_ms, closed_ms=closed_ms
        ):
            return None
        opened = moment_ms((event or {}).get("opened_at")) or item.detected_ms
        missed = MissedItem(
            opportunity_id=n.opportunity_id,
            kind=str(n.kind),
            symbol=n.symbol,
            buy_exchange=n.buy_exchange,
            sell_exchange=n.sell_exchange,
            net_bps=float(n.net_bps),
            opened_ms=min(opened, closed_ms),
            closed_ms=closed_ms,
            net_apr=n.net_apr,
        )
        self.pending.append(
            (item.chat, {"item": missed.to_dict(), "user_id": item.user_id, "tier": item.tier})
        )
        self.stats.noted += 1
        self.wake.set()
        return missed

    async def persist(self) -> None:
        """Write the noted items to their chats' lists and schedule each chat's digest."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        by_chat: dict[int | str, list[dict[str, Any]]] = {}
        for chat, entry in pending:
            by_chat.setdefault(chat, []).append(entry)
        try:
            now = datetime.fromtimestamp(self.shard.clock(), UTC)
            pipe = self.client.pipeline(transaction=False)
            for chat, entries in by_chat.items():
                due = await self._next_due(chat, entries[-1], now)
                if due is None:  # off, or no digest for this tier: nothing to keep
                    continue
                key = missed_key(chat)
                pipe.rpush(key, *(json.dumps(e) for e in entries))
                pipe.ltrim(key, -self.dist.missed_keep, -1)
                pipe.expire(key, max(1, math.ceil(self.dist.missed_ttl_s)))
                pipe.zadd(self.key, {str(chat): due}, nx=True)
            await pipe.execute()
        except (RedisError, OSError, StoreUnavailable) as exc:
            self.stats.errors += 1
            log.warning("%s: cannot keep missed items yet: %s", self.shard.prefix, exc)
            self.pending[:0] = pending
            raise

    async def _next_due(self, chat: int | str, entry: Mapping[str, Any], now: datetime) -> int | None:
        user_id = entry.get("user_id")
        user = await self._user(user_id)
        policy = self._policy(user_id, user, entry)
        cadence = cadence_of(policy)
        hour = DEFAULT_DIGEST_HOUR if user is None else user.preferences.digest_hour
        if cadence is None or hour is None:
            return None
        tz = user.preferences.timezone if user is not None else self.shard.zones.get(chat) or "UTC"
        at = next_digest_at(now, cadence, tz=tz, hour=hour, period_s=self.dist.digest_period_s)
        return int(at.timestamp() * 1000)

    async def _user(self, user_id: Any) -> User | None:
        """The user's record; None when unknown or unreadable (a record this release cannot
        parse gets the defaults rather than holding up every other chat's digest)."""
        if user_id is None:
            return None
        try:
            return await self.users.get(int(user_id))
        except ValueError as exc:
            log.warning("%s: user %s unreadable, digest defaults: %s", self.shard.prefix, user_id, exc)
            return None

    def _policy(self, user_id: Any, user: Any, entry: Mapping[str, Any]) -> TierPolicy:
        tier = _tier(entry.get("tier"))
        if user is not None:
            tier = effective_tier(int(user_id), user.tier, self.superadmins)
        return self.shard.policies[tier]

    # -- the loop --------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        # cancelled again until it ends: the loop waits in ``asyncio.wait_for``, which on
        # Python 3.11 can swallow a cancellation (a plain ``await task`` hung a stop for good)
        if not await stop_task(task):
            log.warning("%s: the digest loop did not stop in time", self.shard.prefix)
        with contextlib.suppress(RedisError, OSError, StoreUnavailable):
            await self.persist()

    async def _run(self) -> None:
        while True:
            delay = 1.0
            try:
                delay = await self.tick()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, StoreUnavailable) as exc:
                self.stats.errors += 1
                log.warning("%s: digests: redis unavailable, retrying: %s", self.shard.prefix, exc)
            except Exception:
                log.exception("%s: digest tick failed", self.shard.prefix)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    async def tick(self) -> float:
        """Persist what was noted, send the digests that are due; seconds until the next."""
        await self.persist()
        now_ms = int(self.shard.clock() * 1000)
        due = await self.client.zrangebyscore(self.key, 0, now_ms, start=0, num=DUE_BATCH)
        if due:
            chats = [_chat(c) for c in due if isinstance(c, bytes | str)]
            results = await asyncio.gather(*(self._deliver(c) for c in chats), return_exceptions=True)
            for chat, result in zip(chats, results, strict=True):
                if isinstance(result, BaseException):  # that chat waits; the others went
                    self.stats.errors += 1
                    log.warning("%s: digest for %s: %r", self.shard.prefix, chat, result)
                    with contextlib.suppress(RedisError, OSError):
                        await self.client.zadd(self.key, {str(chat): now_ms + int(RETRY_S * 1000)})
            return 0.01
        nxt = await self.client.zrange(self.key, 0, 0, withscores=True)
        if not nxt:
            return 1.0
        return max(0.02, min(1.0, (float(nxt[0][1]) - now_ms) / 1000))

    async def _deliver(self, chat: int | str) -> None:
        key = missed_key(chat)
        raw = await self.client.lrange(key, 0, -1)
        entries = []
        for body in raw:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(body)
                entries.append((MissedItem.from_dict(entry["item"]), entry))
        entries = [(m, e) for m, e in entries if self._still_missed(chat, m)]
        if not entries:  # nothing (left) to tell: never an empty digest
            await self._drop(chat, len(raw), None)
            return
        latest = entries[-1][1]
        user_id = latest.get("user_id")
        user = await self._user(user_id)
        policy = self._policy(user_id, user, latest)
        cadence = cadence_of(policy)
        if cadence is None or (user is not None and user.preferences.digest_hour is None):
            await self._drop(chat, len(raw), "no_delay" if cadence is None else "off")
            return
        tz = user.preferences.timezone if user is not None else self.shard.zones.get(chat) or "UTC"
        language = (
            pick_locale(user.preferences.language, user.language_code)
            if user is not None
            else self.shard.langs.get(chat) or "en"
        )
        digest = MissedDigest.of(
            (m for m, _ in entries), policy, self.shard.policies, cadence, language, _hour(user)
        )
        at = datetime.fromtimestamp(self.shard.clock(), UTC)
        if user is not None and is_muted(user.preferences, at) and user.preferences.muted_until is not None:
            until = int(user.preferences.muted_until.timestamp() * 1000)  # muted: after the mute
            await self.client.zadd(self.key, {str(chat): until})
            return
        # outside the user's active hours it goes without a sound, like a push in "silent" mode
        silent = user is not None and not is_active_hour(user.preferences, at)
        await self.shard.chat_bots.load([chat])  # a pool of bots: through the user's bot
        (delay,) = await self.shard.limiter.reserve([(chat, False)])
        if delay > 0:
            await asyncio.sleep(delay)
        now = datetime.fromtimestamp(self.shard.clock(), UTC)
        try:
            result = await self.shard.notifier.send(chat, digest, silent=silent, tz=tz, now=now)
        except Exception as exc:  # a bug in one send never stops the loop
            log.exception("%s: sending a digest to %s failed", self.shard.prefix, chat)
            result_outcome, error, retry_after = SendOutcome.TRANSIENT, repr(exc), None
            message_id = None
        else:
            result_outcome, error, retry_after = result.outcome, result.error, result.retry_after_s
            message_id = result.message_id
        row = {"user_id": user_id, "tier": policy.tier.value, "size": len(digest.items), "now": now}
        if result_outcome is SendOutcome.SENT:
            self._row(chat, DeliveryStatus.SENT, DIGEST_REASON, message_id=message_id, **row)
            try:
                pipe = self.client.pipeline(transaction=True)
                pipe.ltrim(key, len(raw), -1)  # what came in during the send stays for the next one
                pipe.llen(key)
                _, left = await pipe.execute()
                if left:
                    later = next_digest_at(
                        now, cadence, tz=tz, hour=_hour(user), period_s=self.dist.digest_period_s
                    )
                    await self.client.zadd(self.key, {str(chat): int(later.timestamp() * 1000)})
                else:
                    await self.client.zrem(self.key, str(chat))
            finally:  # counted once its items left Redis (or Redis failed under it)
                self.stats.digests += 1
                self.stats.items_sent += len(digest.items)
            return
        if result_outcome is SendOutcome.RETRY_AFTER:
            wait = float(retry_after or 1.0)
            with contextlib.suppress(Exception):
                await self.shard.limiter.pause(wait, chat)
            await self.client.zadd(self.key, {str(chat): int(now.timestamp() * 1000 + wait * 1000)})
            return
        if result_outcome is SendOutcome.TRANSIENT:
            self._row(chat, DeliveryStatus.RETRY, f"{DIGEST_REASON}: {error or 'transient'}", **row)
            await self.client.zadd(self.key, {str(chat): int(now.timestamp() * 1000 + RETRY_S * 1000)})
            return
        status = DeliveryStatus.BLOCKED if result_outcome is SendOutcome.BLOCKED else DeliveryStatus.FAILED
        self._row(chat, status, f"{DIGEST_REASON}: {error or status.value}", **row)
        await self._drop(chat, len(raw), status.value)
        if status is DeliveryStatus.BLOCKED and self.shard.on_blocked is not None:  # as for a push
            with contextlib.suppress(Exception):
                await self.shard.on_blocked(chat, None if user_id is None else int(user_id))

    async def _drop(self, chat: int | str, count: int, why: str | None) -> None:
        if why is not None:
            self.stats.dropped[why] += 1
        pipe = self.client.pipeline(transaction=True)
        pipe.ltrim(missed_key(chat), count, -1)
        pipe.llen(missed_key(chat))
        _, left = await pipe.execute()
        if not left:
            await self.client.zrem(self.key, str(chat))

    def _row(
        self,
        chat: int | str,
        status: DeliveryStatus,
        reason: str,
        *,
        user_id: Any,
        tier: str,
        size: int,
        now: datetime,
        message_id: int | None = None,
    ) -> None:
        assigned = self.shard.strategy_for(None if user_id is None else int(user_id))
        self.shard.rows.append(
            {
                "queued_at": now,
                "opportunity_id": f"{DIGEST_KIND}:{uuid.uuid4().hex[:12]}",
                "chat_id": chat if isinstance(chat, int) else None,
                "chat_ref": chat if isinstance(chat, str) else None,
                "user_id": user_id,
                "audience": Audience.USER.value,
                "status": status.value,
                "reason": reason,
                "kind": DIGEST_KIND,
                "tier": tier,
                "digest_size": size,
                "message_id": message_id,
                "sent_at": now if status is DeliveryStatus.SENT else None,
                "experiment": assigned.experiment,  # the user's, as on their pushes' rows
                "variant": assigned.variant,
                "bot_id": self.shard.chat_bots.row_bot(chat),  # the bot of the pool (null: one bot)
            }
        )

    async def pending_chats(self) -> int:
        return int(await self.client.zcard(self.key))

    def as_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "missed": s.noted,
            "missed_digests": s.digests,
            "missed_digest_items": s.items_sent,
            "missed_dropped": dict(s.dropped),
        }


def _tier(value: Any) -> Tier:
    try:
        return Tier(str(value))
    except ValueError:
        return Tier.FREE


def _hour(user: Any) -> int:
    hour = None if user is None else user.preferences.digest_hour
    return DEFAULT_DIGEST_HOUR if hour is None else int(hour)


def _chat(raw: bytes | str) -> int | str:
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        return int(text)
    except ValueError:
        return text


__all__ = [
    "DIGEST_KIND",
    "DIGEST_REASON",
    "MISSED_PREFIX",
    "MISSED_REASON",
    "MissedDigests",
    "missed_key",
]
