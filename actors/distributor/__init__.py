"""The distributor, ``dist:engine``: from an opportunity event to the queue shards of exactly
the right chats (the whole story in :mod:`actors.distributor.engine`).

The package: ``engine`` (:class:`Distributor`, the plain class), ``actor``
(:class:`DistributorActor`, its ``ray.remote`` wrapper, and :func:`get_distributor`).
"""

from actors.distributor.actor import DistributorActor, get_distributor
from actors.distributor.engine import Distributor, Seen

__all__ = ["Distributor", "DistributorActor", "Seen", "get_distributor"]
