"""The webhook answered ahead of FastAPI's routing (``serve.webhook.WebhookFastPath``): which
requests it takes, what it sends back, how it reads a body. The answers themselves (401, 413,
400, 503, exactly once) are asserted over HTTP against the deployed app in
tests/integration/test_serve_app.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from serve.webhook import (
    WEBHOOK_PATH,
    Headers,
    Receive,
    WebhookFastPath,
    WebhookRejected,
    read_body,
    webhook_headers,
)


@pytest.fixture
def answered() -> Iterator[list[tuple[Headers, bytes]]]:
    """The fast path registered with an answer that reads the body and records the request."""
    seen: list[tuple[Headers, bytes]] = []

    async def answer(headers: Headers, receive: Receive) -> tuple[int, bytes]:
        seen.append((headers, await read_body(receive)))
        return 200, b'{"ok":true}'

    WebhookFastPath.answer = answer
    try:
        yield seen
    finally:
        WebhookFastPath.answer = None


def call(
    path: str, *, method: str = "POST", root_path: str = "", body: bytes = b"{}"
) -> tuple[list[str], list[dict[str, Any]]]:
    """One request through the middleware: what reached the inner app, what was sent."""
    inner: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Any) -> None:
        inner.append(scope["path"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": root_path,
        "headers": [(b"x-telegram-bot-api-secret-token", b"s3cret"), (b"content-length", b"2")],
    }
    asyncio.run(WebhookFastPath(app)(scope, receive, send))
    return inner, sent


def test_a_webhook_post_is_answered_without_the_app(answered: list[tuple[Headers, bytes]]) -> None:
    inner, sent = call(WEBHOOK_PATH, body=b'{"update_id":1}')
    assert inner == []
    assert [h for h, _ in answered] == [
        [(b"x-telegram-bot-api-secret-token", b"s3cret"), (b"content-length", b"2")]
    ]
    assert answered[0][1] == b'{"update_id":1}'
    start, body = sent
    assert start["status"] == 200
    assert dict(start["headers"]) == {b"content-type": b"application/json", b"content-length": b"11"}
    assert body == {"type": "http.response.body", "body": b'{"ok":true}'}


def test_under_a_route_prefix_the_path_within_the_app_counts(answered: list[tuple[Headers, bytes]]) -> None:
    inner, _ = call("/bot" + WEBHOOK_PATH, root_path="/bot")
    assert inner == [] and len(answered) == 1
    inner, _ = call("/bot" + WEBHOOK_PATH)  # no such prefix: another route
    assert inner == ["/bot" + WEBHOOK_PATH] and len(answered) == 1


@pytest.mark.parametrize(
    ("method", "path"), [("GET", WEBHOOK_PATH), ("POST", "/healthz"), ("POST", WEBHOOK_PATH + "/x")]
)
def test_every_other_request_goes_to_the_app(
    answered: list[tuple[Headers, bytes]], method: str, path: str
) -> None:
    inner, sent = call(path, method=method)
    assert inner == [path] and sent == [] and answered == []


def test_before_a_replica_registered_the_app_answers() -> None:
    assert WebhookFastPath.answer is None
    inner, sent = call(WEBHOOK_PATH)
    assert inner == [WEBHOOK_PATH] and sent == []


def chunks(*parts: bytes, disconnect: bool = False) -> Receive:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)
    ]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


def test_a_body_is_read_across_chunks_and_refused_past_the_limit() -> None:
    assert asyncio.run(read_body(chunks(b'{"upd', b'ate_id"', b":1}"))) == b'{"update_id":1}'
    with pytest.raises(WebhookRejected) as info:
        asyncio.run(read_body(chunks(b"x" * 6, b"x" * 6), limit=10))
    assert info.value.status == 413
    with pytest.raises(WebhookRejected) as info:
        asyncio.run(read_body(chunks(b"{", disconnect=True)))
    assert info.value.status == 400


def test_the_secret_and_the_length_come_from_the_raw_headers() -> None:
    raw = [(b"host", b"x"), (b"content-length", b"42"), (b"x-telegram-bot-api-secret-token", b"abc")]
    assert webhook_headers(raw) == ("abc", "42")
    assert webhook_headers([(b"host", b"x")]) == (None, None)


def test_a_bots_path_of_the_pool_is_answered_with_its_bot_id() -> None:
    seen: list[tuple[int | None, bytes]] = []

    async def answer(headers: Headers, receive: Receive, bot: int | None = None) -> tuple[int, bytes]:
        seen.append((bot, await read_body(receive)))
        return 200, b'{"ok":true}'

    WebhookFastPath.answer = answer
    try:
        inner, _ = call(WEBHOOK_PATH + "/7000000002", body=b'{"update_id":2}')
        assert inner == [] and seen == [(7000000002, b'{"update_id":2}')]
        inner, _ = call(WEBHOOK_PATH, body=b'{"update_id":3}')
        assert seen[-1] == (None, b'{"update_id":3}')  # the primary's path: no bot given
        inner, _ = call(WEBHOOK_PATH + "/7000000002/x")
        assert inner == [WEBHOOK_PATH + "/7000000002/x"] and len(seen) == 2  # not a webhook
    finally:
        WebhookFastPath.answer = None
