"""Redis key names that more than one room writes or reads (``p`` = ``prefix + ":"``).

- ``{p}elig:cooldown:{dedup_key}`` / ``{p}elig:pending:{dedup_key}`` hashes (field =
  target id, value = until ms): the eligibility cooldowns and pending marks, written by
  the distributor and the queue shards (``actors.directory``), erased per user by
  ``/forget`` (:func:`state.erase.erase_user`).
- ``deadletter`` list: pushes the queue shards gave up on (never prefixed), counted and
  replayed from ``/admin``.
"""

from __future__ import annotations

COOLDOWN_PREFIX = "elig:cooldown:"
PENDING_PREFIX = "elig:pending:"
DEAD_LETTERS_KEY = "deadletter"

__all__ = ["COOLDOWN_PREFIX", "DEAD_LETTERS_KEY", "PENDING_PREFIX"]
