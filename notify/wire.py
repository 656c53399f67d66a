"""Telling a sender when its request is on the wire (:func:`on_wire`), without aiogram: the
queue shards import it; ``notify.client.WireSession`` calls back."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

_ON_WIRE: ContextVar[Callable[[], None] | None] = ContextVar("arbflow_on_wire", default=None)


@contextlib.contextmanager
def on_wire(callback: Callable[[], None]) -> Iterator[None]:
    """Within this block, the first request the task makes through a ``notify.client.WireSession``
    calls ``callback`` just before its bytes are written to the socket (once).

    A request is not on the wire when the call is made: aiohttp writes its body from a task of
    its own (on Python < 3.12, scheduled behind everything ready in the loop), and a busy
    loop holds it there for tens of milliseconds; requests held together then leave together.
    A sender that counts what it sends per second (``core.flood.DepartureWindow``) counts the
    moment the bytes go, not the moment it asked."""
    fired = False

    def once() -> None:
        nonlocal fired
        if not fired:
            fired = True
            callback()

    token = _ON_WIRE.set(once)
    try:
        yield
    finally:
        _ON_WIRE.reset(token)


def wire_callback() -> Callable[[], None] | None:
    """The callback of the :func:`on_wire` block this task is in, if any."""
    return _ON_WIRE.get()


__all__ = ["on_wire", "wire_callback"]
