"""Redis key names that more than one room writes or reads (``p`` = ``prefix + ":"``).

- ``{p}elig:cooldown:{dedup_key}`` / ``{p}elig:pending:{dedup_key}`` hashes (field =
  target id, value = until ms): the eligibility cooldowns and pending marks, written by
  the distributor and the queue shards (``actors.directory``), erased per user by
  ``/forget`` (:func:`state.erase.erase_user`).
- ``deadletter`` list: pushes the queue shards gave up on (never prefixed), counted and
  replayed from ``/admin``.
- ``{p}tg:bot_of`` hash (field = chat id, value = bot id): the bot of the pool each chat is
  bound to, written by the bot shards (the bot an update came to), read by the queue shards
  (:mod:`state.bots`); a chat without a field is the primary bot's.
- ``{p}webhooks:users`` hash (user id → ``user`` | ``admin``): users with an enabled outbound
  webhook, written by the bot and the admin API, read by the queue shards and the sender
  (:mod:`state.webhooks`, which owns the endpoint records and the delivered marks too).
"""

from __future__ import annotations

COOLDOWN_PREFIX = "elig:cooldown:"
PENDING_PREFIX = "elig:pending:"
DEAD_LETTERS_KEY = "deadletter"
WEBHOOK_USERS_KEY = "webhooks:users"
BOT_BINDINGS_KEY = "tg:bot_of"

__all__ = ["BOT_BINDINGS_KEY", "COOLDOWN_PREFIX", "DEAD_LETTERS_KEY", "PENDING_PREFIX", "WEBHOOK_USERS_KEY"]
