"""One router per feature; :func:`feature_routers` builds fresh ones in the order they are included.

``groups`` comes before ``settings`` (``/settings`` in a group is the group's settings)
and ``fallback`` last (unknown commands, plain text, stale buttons).
"""

from __future__ import annotations

from aiogram import Router


def feature_routers() -> list[Router]:
    from bot.routers import (
        admin,
        apikeys,
        fallback,
        forget,
        groups,
        help,
        mute,
        opportunities,
        pushes,
        settings,
        start,
        status,
        subscription,
        webhooks,
    )

    specs = [
        start,
        help,
        status,
        groups,
        opportunities,
        pushes,
        settings,
        mute,
        subscription,
        apikeys,
        webhooks,
        forget,
        admin,
        fallback,
    ]
    return [module.router.build() for module in specs]


__all__ = ["feature_routers"]
