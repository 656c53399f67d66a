"""Telegram webhook request validation and the secrets the ingress needs (CONTRACT "HTTP").

Pure functions over headers and bytes, so the ingress stays thin and the rules are
unit-testable without Serve:

- :func:`check_secret` — ``X-Telegram-Bot-Api-Secret-Token`` compared in constant
  time (``hmac.compare_digest``); missing or wrong → 401.
- :func:`check_content_length` / :func:`read_body` — over 1 MiB → 413, judged on
  the ``Content-Length`` header first and on the bytes actually read.
- :func:`parse_update` — not JSON, not an object, no integer ``update_id`` or not a
  valid aiogram ``Update`` → 400 with a short JSON error; otherwise the parsed dict.

Secrets (resolved once by the app builder on the driver and handed to the replicas,
so every node of a cluster agrees):

- the webhook secret: ``ARBFLOW_TELEGRAM__WEBHOOK_SECRET``, else
  ``<data_dir>/webhook.secret`` (generated, mode 0600, reused);
- the admin token (``Authorization: Bearer …`` on ``/api/…``): derived from
  ``ARBFLOW_SECRET_KEY`` when that is set (HMAC-SHA256), else generated; in both
  cases the effective value is kept in ``<data_dir>/admin.token`` (0600).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import orjson

from core.bots import WEBHOOK_PATH as WEBHOOK_PATH  # the primary bot's path, named here as before
from core.bots import path_bot, webhook_path

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY_BYTES = 1024 * 1024
ALLOWED_UPDATES = (
    "message",
    "edited_message",
    "callback_query",
    "my_chat_member",
    "chat_member",
    "pre_checkout_query",  # Stars payments: Telegram cancels a checkout nobody answers
)
WEBHOOK_SECRET_FILE = "webhook.secret"
ADMIN_TOKEN_FILE = "admin.token"


class WebhookRejected(Exception):
    """A request the webhook refuses: ``status`` and a short ``error`` for the JSON body."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(f"{status}: {error}")
        self.status = status
        self.error = error

    def body(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error}


# -- checks ----------------------------------------------------------------------------


def check_secret(expected: str, given: str | None) -> None:
    """401 unless ``given`` equals ``expected`` (constant time; an empty expectation never matches)."""
    if not expected or given is None:
        raise WebhookRejected(401, "missing or wrong secret token")
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
        raise WebhookRejected(401, "missing or wrong secret token")


def check_bearer(expected: str, authorization: str | None) -> None:
    """401 unless ``Authorization: Bearer <expected>`` (constant time)."""
    scheme, _, token = (authorization or "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not token:
        raise WebhookRejected(401, "admin token required (Authorization: Bearer …)")
    if not hmac.compare_digest(token.strip().encode("utf-8", "surrogateescape"), expected.encode()):
        raise WebhookRejected(401, "admin token required (Authorization: Bearer …)")


def check_content_length(value: str | None, limit: int = MAX_BODY_BYTES) -> None:
    """413 when the declared length is over ``limit``; 400 when it is not a number."""
    if value is None:
        return
    try:
        length = int(value)
    except ValueError:
        raise WebhookRejected(400, "bad Content-Length") from None
    if length > limit:
        raise WebhookRejected(413, f"body over {limit} bytes")


Headers = Sequence[tuple[bytes, bytes]]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body from an ASGI ``receive``; 413 as soon as more than ``limit`` bytes
    arrived (a body without ``Content-Length`` is judged on what is read)."""
    buf = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise WebhookRejected(400, "client disconnected")
        buf += message.get("body", b"")
        if len(buf) > limit:
            raise WebhookRejected(413, f"body over {limit} bytes")
        if not message.get("more_body", False):
            return bytes(buf)


def structural_schema(node: Any) -> Any:
    """A pydantic core schema without its Python hooks and without building model instances.

    ``model`` nodes become their inner fields as a ``typed-dict`` (a dict comes out, not an
    object), ``function-before`` / ``function-after`` validators become their inner schema.
    For aiogram's ``Update`` those hooks are ``TelegramObject.remove_unset`` (drops the
    ``UNSET`` sentinels, which JSON cannot carry) and the literal → enum conversions, and
    model construction runs ``model_post_init`` and private attributes for every object:
    none of them rejects an input, yet together they are two thirds of the cost. A field
    with a default becomes a field that may be missing (:func:`_lean_fields`): the answer
    holds what the update holds instead of every one of a ``Message``'s ~100 optional
    fields set to ``None`` — another two thirds of what was left. What remains checks the
    same types, required fields, aliases, literals and nesting.
    """
    if isinstance(node, list):
        return [structural_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "model" or (kind in ("function-before", "function-after") and "schema" in node):
        inner = structural_schema(node["schema"])
        return dict(inner, ref=node["ref"]) if "ref" in node else inner
    if kind == "model-fields":
        return _lean_fields(node)
    return {k: v if k in ("serialization", "metadata") else structural_schema(v) for k, v in node.items()}


def _lean_fields(node: dict[str, Any]) -> dict[str, Any]:
    """A model's ``model-fields`` as a ``typed-dict``: a field with a default is not required
    (and left out of the answer when missing); unknown fields are ignored, as the model's
    ``extra`` would keep them without judging them."""
    fields: dict[str, Any] = {}
    for name, field in node["fields"].items():
        schema, required = field["schema"], True
        if isinstance(schema, dict) and schema.get("type") == "default":
            schema, required = schema["schema"], False
        lean = {"type": "typed-dict-field", "schema": structural_schema(schema), "required": required}
        for alias in ("validation_alias", "serialization_alias"):
            if alias in field:
                lean[alias] = field[alias]
        fields[name] = lean
    out: dict[str, Any] = {"type": "typed-dict", "fields": fields, "extra_behavior": "ignore"}
    if "ref" in node:
        out["ref"] = node["ref"]
    return out


def _loads(body: bytes) -> Any:
    """JSON → Python: orjson (~1 µs for an update, a quarter of the standard library's); what
    it refuses and ``json`` accepts (a lone surrogate escape, ``NaN``) is read by ``json``."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


@functools.cache
def _aiogram_validator() -> Callable[[dict[str, Any]], Any]:
    """Accepts what aiogram's ``Update.model_validate`` accepts (tests/unit/serve/test_webhook_validation.py),
    in ≈ 3 µs instead of ≈ 25 µs: the bot validates again, into aiogram objects, on its shard."""
    from aiogram.types import Update  # ~4 s on first import: only ever inside a replica
    from pydantic_core import SchemaValidator

    return SchemaValidator(structural_schema(Update.__pydantic_core_schema__)).validate_python


def parse_update(
    body: bytes, *, validate: Callable[[dict[str, Any]], Any] | None = None, limit: int = MAX_BODY_BYTES
) -> dict[str, Any]:
    """The update as a dict, or :class:`WebhookRejected` (413 / 400).

    ``validate`` defaults to aiogram's ``Update`` schema (:func:`structural_schema`); any
    exception it raises means "not an Update".
    """
    if len(body) > limit:
        raise WebhookRejected(413, f"body over {limit} bytes")
    try:
        data = _loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise WebhookRejected(400, "body is not a JSON object")
    update_id = data.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise WebhookRejected(400, "no integer update_id")
    try:
        (validate or _aiogram_validator())(data)
    except Exception as exc:  # pydantic ValidationError and friends
        log.debug("update %s is not an Update: %s", update_id, exc)
        raise WebhookRejected(400, "not a Telegram Update") from None
    return data


# -- the hot route ahead of the framework --------------------------------------------------

Answer = Callable[..., Awaitable[tuple[int, bytes]]]
"""``answer(headers, receive)`` for the primary bot's path, ``answer(headers, receive, bot)``
for ``/telegram/webhook/<bot>`` (a pool of bots, docs/bot-pool.md)."""
Send = Callable[[dict[str, Any]], Awaitable[None]]


def webhook_headers(headers: Headers) -> tuple[str | None, str | None]:
    """The secret token and the ``Content-Length`` of raw ASGI headers, in one pass."""
    secret = length = None
    for name, value in headers:
        if name == b"x-telegram-bot-api-secret-token":
            secret = value.decode("latin-1")
        elif name == b"content-length":
            length = value.decode("latin-1")
    return secret, length


def rejection(exc: WebhookRejected) -> tuple[int, bytes]:
    return exc.status, json.dumps(exc.body(), separators=(",", ":")).encode()


class WebhookFastPath:
    """Pure ASGI middleware: ``POST /telegram/webhook`` answered by the replica's ingress
    (:attr:`answer`, set when the replica is built) ahead of the framework's routing,
    dependencies and request object — the one route Telegram calls thousands of times a
    second; the rest of the app, and this route until a replica registered, pass through.

    The answer is the same as the route's (serve.app: 401, 413, 400, 503, ``{"ok":true}``);
    what it saves is FastAPI's part of a request (its middleware stack, the router, the
    dependency solver), ~10 % of an empty endpoint's CPU in a Serve replica."""

    answer: ClassVar[Answer | None] = None

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        answer = WebhookFastPath.answer
        bot = webhook_target(scope) if answer is not None and scope["type"] == "http" else False
        if answer is None or bot is False or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if bot is None:
            status, body = await answer(scope["headers"], receive)
        else:
            status, body = await answer(scope["headers"], receive, bot)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})


def webhook_target(scope: Mapping[str, Any]) -> int | bool | None:
    """Which webhook the request's path (within the app: its ``root_path``, a Serve route
    prefix, removed) is: None the primary bot's, a bot id ``/telegram/webhook/<id>``'s,
    False none (:func:`core.bots.path_bot`)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path_bot(path)


def _is_webhook(scope: Mapping[str, Any]) -> bool:
    """The request is for a webhook path (the primary bot's or one bot's of the pool)."""
    return webhook_target(scope) is not False


# -- routing keys ----------------------------------------------------------------------

_CHAT_BEARING = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_message",
    "edited_business_message",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
    "message_reaction",
    "message_reaction_count",
)
_USER_BEARING = (
    "inline_query",
    "chosen_inline_result",
    "shipping_query",
    "pre_checkout_query",
    "poll_answer",
    "purchased_paid_media",
)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def update_chat_id(update: Mapping[str, Any]) -> int | None:
    """The chat an update belongs to (the sender for chat-less updates), or None."""
    for field in _CHAT_BEARING:
        obj = update.get(field)
        if isinstance(obj, dict):
            chat = obj.get("chat")
            if isinstance(chat, dict) and (cid := _int(chat.get("id"))) is not None:
                return cid
    cq = update.get("callback_query")
    if isinstance(cq, dict):
        msg = cq.get("message")
        if isinstance(msg, dict):
            chat = msg.get("chat")
            if isinstance(chat, dict) and (cid := _int(chat.get("id"))) is not None:
                return cid
        sender = cq.get("from")
        if isinstance(sender, dict) and (uid := _int(sender.get("id"))) is not None:
            return uid
    for field in _USER_BEARING:
        obj = update.get(field)
        if isinstance(obj, dict):
            for who in ("from", "user"):
                sender = obj.get(who)
                if isinstance(sender, dict) and (uid := _int(sender.get("id"))) is not None:
                    return uid
    poll = update.get("poll")
    if isinstance(poll, dict) and isinstance(poll.get("id"), str):
        return int(hashlib.blake2b(poll["id"].encode(), digest_size=4).hexdigest(), 16)
    return None


# -- secrets ---------------------------------------------------------------------------


def _write_secret_file(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` (0600) atomically; when racing, the first writer wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(value + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_token(path: Path, nbytes: int = 32) -> str:
    """The token in ``path``, generated (URL-safe, 0600) on first use and reused after."""
    path = Path(path)
    if not path.exists():
        _write_secret_file(path, secrets.token_urlsafe(nbytes))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    token = path.read_text(encoding="ascii").strip()
    if not token:
        raise ValueError(f"{path} is empty: delete it to generate a new token")
    return token


def webhook_secret(configured: str, data_dir: Path) -> str:
    """``ARBFLOW_TELEGRAM__WEBHOOK_SECRET`` or the generated one under the data dir.

    Telegram accepts 1-256 characters of ``A-Z a-z 0-9 _ -``: ``token_urlsafe`` fits.
    """
    return configured or load_or_create_token(Path(data_dir) / WEBHOOK_SECRET_FILE)


def admin_token(secret_key: str, data_dir: Path) -> str:
    """The admin token: HMAC of ``ARBFLOW_SECRET_KEY`` when set, else generated; kept in ``admin.token``."""
    path = Path(data_dir) / ADMIN_TOKEN_FILE
    if not secret_key:
        return load_or_create_token(path)
    first_key = secret_key.split(",")[0].strip()
    token = hmac.new(first_key.encode(), b"arbflow admin token v1", hashlib.sha256).hexdigest()
    try:
        if not path.exists() or path.read_text(encoding="ascii").strip() != token:
            path.unlink(missing_ok=True)
            _write_secret_file(path, token)
    except OSError as exc:  # a read-only data dir must not stop the app
        log.warning("could not write %s: %s", path, exc)
    return token


# -- setWebhook ------------------------------------------------------------------------


async def set_webhook(
    api_base: str,
    token: str,
    public_url: str,
    secret: str,
    *,
    allowed_updates: tuple[str, ...] = ALLOWED_UPDATES,
    max_connections: int = 40,
    timeout_s: float = 10.0,
    bot: int | None = None,
) -> dict[str, Any]:
    """Call Bot API ``setWebhook`` for ``{public_url}/telegram/webhook`` (``bot``: that bot's path
    of the pool, ``/telegram/webhook/<bot>``); returns Telegram's answer."""
    import httpx

    url = public_url.rstrip("/") + webhook_path(bot)
    payload = {
        "url": url,
        "secret_token": secret,
        "allowed_updates": list(allowed_updates),
        "max_connections": max_connections,
    }
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        resp = await client.post(f"{api_base.rstrip('/')}/bot{token}/setWebhook", json=payload)
    try:
        answer: dict[str, Any] = resp.json()
    except ValueError:
        answer = {"ok": False, "description": resp.text[:200]}
    if not answer.get("ok"):
        raise RuntimeError(f"setWebhook {url} failed: {answer.get('description') or resp.status_code}")
    return answer
