"""The admin API of outbound webhooks (``/api/webhooks``, admin token), for serve/app.py.

Each function takes the registry and the request's data and returns ``(HTTP status, JSON
body)``; serve/app.py checks the Bearer token first. An admin registers an endpoint for any
user (no tier check; the address rules still apply); such an endpoint is delivered whatever
the user's tier (``created_by`` is 0: the admin API). docs/outbound-webhooks.md.

- ``GET /api/webhooks[?user_id=N]``: endpoints (secrets masked).
- ``POST /api/webhooks`` ``{"user_id": N, "url": "https://…"}``: 201 with the endpoint and
  its ``secret`` (the only time it is shown); 400 with the refusal reason.
- ``DELETE /api/webhooks/{id}``; ``POST /api/webhooks/{id}/enable``;
  ``POST /api/webhooks/{id}/test`` (one sample POST from the replica, under the same rules).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from core.errors import StoreUnavailable
from core.settings import Settings
from state.webhooks import RedisWebhookStore, Refused, allowed_ranges, resolve_checked

Reply = tuple[int, Any]


def _unavailable(exc: Exception) -> Reply:
    return 503, {"ok": False, "error": str(exc)[:300]}


async def list_endpoints(store: RedisWebhookStore, user_id: str | None) -> Reply:
    try:
        if user_id not in (None, ""):
            try:
                uid = int(str(user_id))
            except ValueError:
                return 400, {"ok": False, "error": "user_id must be an integer"}
            endpoints = await store.of_user(uid)
        else:
            endpoints = await store.all()
    except StoreUnavailable as exc:
        return _unavailable(exc)
    return 200, {"ok": True, "endpoints": [e.public() for e in endpoints]}


async def add_endpoint(store: RedisWebhookStore, settings: Settings, body: Any) -> Reply:
    if not isinstance(body, dict):
        return 400, {"ok": False, "error": 'a JSON object: {"user_id": N, "url": "https://..."}'}
    url, uid = body.get("url"), body.get("user_id")
    if not isinstance(url, str) or isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0:
        return 400, {"ok": False, "error": "user_id (a positive integer) and url (a string) are required"}
    try:
        await resolve_checked(url, allowed_ranges(settings.outbound.allow_private))
    except Refused as exc:
        return 400, {"ok": False, "error": "refused", "reason": exc.reason}
    try:
        endpoint = await store.add(uid, url, datetime.now(UTC), created_by=0)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    assert endpoint is not None  # no limit for admins
    return 201, {"ok": True, "endpoint": endpoint.public(), "secret": endpoint.secret}


async def remove_endpoint(store: RedisWebhookStore, endpoint_id: str) -> Reply:
    try:
        endpoint = await store.get(endpoint_id)
        if endpoint is None:
            return 404, {"ok": False, "error": "unknown endpoint"}
        await store.remove(endpoint.user_id, endpoint_id)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    return 200, {"ok": True, "removed": endpoint_id}


async def enable_endpoint(store: RedisWebhookStore, endpoint_id: str) -> Reply:
    try:
        endpoint = await store.set_enabled(endpoint_id, True)
    except StoreUnavailable as exc:
        return _unavailable(exc)
    if endpoint is None:
        return 404, {"ok": False, "error": "unknown endpoint"}
    return 200, {"ok": True, "endpoint": endpoint.public()}


async def test_endpoint(
    store: RedisWebhookStore, endpoint_id: str, tester: Callable[[str], Awaitable[dict[str, Any]]]
) -> Reply:
    try:
        if await store.get(endpoint_id) is None:
            return 404, {"ok": False, "error": "unknown endpoint"}
    except StoreUnavailable as exc:
        return _unavailable(exc)
    try:
        result = await tester(endpoint_id)
    except Exception as exc:  # Redis away, a bug: said, never a 500 page
        return 503, {"ok": False, "error": f"the test POST could not be made: {type(exc).__name__}"}
    return 200, result


__all__ = ["add_endpoint", "enable_endpoint", "list_endpoints", "remove_endpoint", "test_endpoint"]
