"""The user directory: every push target as one Polars frame, materialised from Redis
(:class:`UserDirectory`; how it stays current in :mod:`actors.directory.frame`).

The package: ``frame`` (:class:`UserDirectory`), ``index`` (the sorted id → row index,
the columnar upsert, row masks), ``marks`` (cooldowns and pending marks per dedup key in
Redis, :class:`DeliveryMarks`), ``affinity`` (the engagement model's columns, :class:`Affinities`).
"""

from actors.directory.affinity import Affinities
from actors.directory.frame import UserDirectory
from actors.directory.index import apply_row_changes, row_positions
from actors.directory.marks import DeliveryMarks, cooldown_key, pending_key

__all__ = [
    "Affinities",
    "DeliveryMarks",
    "UserDirectory",
    "apply_row_changes",
    "cooldown_key",
    "pending_key",
    "row_positions",
]
