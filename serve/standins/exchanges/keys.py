"""API keys as the emulated exchanges see them: signed-request checks and key permissions.

**Signatures.** A signed request is checked the way each exchange checks it:

- binance: ``X-MBX-APIKEY`` header, ``timestamp`` (and ``recvWindow``, default 5000 ms)
  and ``signature`` = hex HMAC-SHA256 of the query string before ``&signature=``;
- bybit (v5): ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP``, ``X-BAPI-RECV-WINDOW`` and
  ``X-BAPI-SIGN`` = hex HMAC-SHA256 of ``timestamp + key + recvWindow + query``;
- okx: ``OK-ACCESS-KEY``, ``OK-ACCESS-PASSPHRASE``, ``OK-ACCESS-TIMESTAMP`` (ISO 8601, within
  30 s) and ``OK-ACCESS-SIGN`` = base64 HMAC-SHA256 of ``timestamp + METHOD + path?query + body``.

A key registered with :meth:`KeyBook.add` (``Exchanges.add_key`` from Python,
``POST /_control/keys`` over HTTP) has its secret (and okx passphrase) checked: a wrong
one gets the exchange's own error. Any other key is accepted with any secret, as long as
the request is signed in the exchange's shape (headers present, timestamp in the window,
a signature of the right form) — the demo's keys are made up.

**Permissions** (``/sapi/v1/account/apiRestrictions``, ``/v5/user/query-api``,
``/api/v5/account/config``): a registered key has the permissions it was registered
with; otherwise they follow the key's name: ``trade-…`` can trade, ``withdraw-…`` can
trade and withdraw, ``transfer-…`` can move funds between the account's wallets, anything
else is read-only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import web

PERMISSIONS = ("read", "trade", "withdraw", "transfer")


@dataclass(frozen=True, slots=True)
class EmulatedKey:
    secret: str
    passphrase: str | None = None
    permissions: frozenset[str] = frozenset({"read"})


def permissions_by_name(api_key: str) -> frozenset[str]:
    """What an unregistered key may do, from its name (see the module docstring)."""
    name = api_key.lower()
    if name.startswith("withdraw-"):
        return frozenset({"read", "trade", "withdraw"})
    if name.startswith("trade-"):
        return frozenset({"read", "trade"})
    if name.startswith("transfer-"):
        return frozenset({"read", "transfer"})
    return frozenset({"read"})


class SignatureRefused(Exception):
    """A signed request the exchange refuses: ``code`` and ``message`` are its own."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class KeyBook:
    """The keys one emulated exchange knows (registered ones; any other is accepted)."""

    def __init__(self) -> None:
        self.keys: dict[str, EmulatedKey] = {}

    def add(
        self,
        api_key: str,
        secret: str,
        *,
        passphrase: str | None = None,
        permissions: frozenset[str] | set[str] | None = None,
    ) -> None:
        perms = frozenset(permissions) if permissions is not None else permissions_by_name(api_key)
        unknown = perms - set(PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permissions {sorted(unknown)}: use {', '.join(PERMISSIONS)}")
        self.keys[api_key] = EmulatedKey(secret, passphrase, perms)

    def permissions(self, api_key: str) -> frozenset[str]:
        known = self.keys.get(api_key)
        return known.permissions if known is not None else permissions_by_name(api_key)

    def _secret_ok(self, api_key: str, expected: str | None, given: str, encoding: str) -> bool:
        """``given`` signature of ``expected``'s payload with the key's secret (shape only for
        an unregistered key)."""
        if encoding == "hex":
            shaped = len(given) == 64 and all(c in "0123456789abcdefABCDEF" for c in given)
        else:
            try:
                shaped = len(base64.b64decode(given, validate=True)) == 32
            except ValueError:
                shaped = False
        if not shaped:
            return False
        known = self.keys.get(api_key)
        if known is None or expected is None:
            return True
        digest = hmac.new(known.secret.encode(), expected.encode(), hashlib.sha256).digest()
        if encoding == "hex":
            return hmac.compare_digest(digest.hex(), given.lower())
        return hmac.compare_digest(base64.b64encode(digest).decode(), given)

    # -- one check per protocol ------------------------------------------------------

    def check_binance(self, request: web.Request, now_ms: int) -> str:
        """The key of a signed binance request (raises :class:`SignatureRefused`)."""
        api_key = request.headers.get("X-MBX-APIKEY", "")
        if not api_key:
            raise SignatureRefused(401, "-2014", "API-key format invalid.")
        query = request.query_string
        payload, sep, signature = query.rpartition("&signature=")
        if not sep:
            payload, sep, signature = query.rpartition("signature=")
        if not sep or "timestamp" not in request.query:
            raise SignatureRefused(
                400, "-1102", "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
            )
        try:
            ts = int(request.query["timestamp"])
            window = int(request.query.get("recvWindow", "5000"))
        except ValueError:
            raise SignatureRefused(
                400, "-1100", "Illegal characters found in parameter 'timestamp'."
            ) from None
        if ts > now_ms + 1000 or now_ms - ts > window:
            raise SignatureRefused(400, "-1021", "Timestamp for this request is outside of the recvWindow.")
        if not self._secret_ok(api_key, payload, signature, "hex"):
            raise SignatureRefused(400, "-1022", "Signature for this request is not valid.")
        return api_key

    def check_bybit(self, request: web.Request, now_ms: int) -> str:
        h = request.headers
        api_key = h.get("X-BAPI-API-KEY", "")
        if not api_key:
            raise SignatureRefused(401, "10003", "API key is invalid.")
        try:
            ts = int(h.get("X-BAPI-TIMESTAMP", ""))
            window = int(h.get("X-BAPI-RECV-WINDOW", "5000"))
        except ValueError:
            raise SignatureRefused(
                200, "10002", "invalid request, please check your server timestamp or recv_window param"
            ) from None
        if ts > now_ms + 1000 or now_ms - ts > window:
            raise SignatureRefused(
                200, "10002", "invalid request, please check your server timestamp or recv_window param"
            )
        payload = f"{ts}{api_key}{h.get('X-BAPI-RECV-WINDOW', '5000')}{request.query_string}"
        if not self._secret_ok(api_key, payload, h.get("X-BAPI-SIGN", ""), "hex"):
            raise SignatureRefused(401, "10004", "error sign! origin_string[...]")
        return api_key

    def check_okx(self, request: web.Request, path: str, body: str, now_ms: int) -> str:
        h = request.headers
        api_key = h.get("OK-ACCESS-KEY", "")
        if not api_key:
            raise SignatureRefused(401, "50103", 'Request header "OK-ACCESS-KEY" cannot be empty.')
        stamp = h.get("OK-ACCESS-TIMESTAMP", "")
        try:
            ts = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            raise SignatureRefused(401, "50107", "Invalid OK-ACCESS-TIMESTAMP") from None
        if abs(ts.timestamp() * 1000 - now_ms) > 30_000:
            raise SignatureRefused(401, "50102", "Timestamp request expired.")
        known = self.keys.get(api_key)
        passphrase = h.get("OK-ACCESS-PASSPHRASE", "")
        if not passphrase or (
            known is not None and known.passphrase is not None and passphrase != known.passphrase
        ):
            raise SignatureRefused(401, "50105", 'Request header "OK-ACCESS-PASSPHRASE" incorrect.')
        query = f"?{request.query_string}" if request.query_string else ""
        payload = f"{stamp}{request.method.upper()}{path}{query}{body}"
        if not self._secret_ok(api_key, payload, h.get("OK-ACCESS-SIGN", ""), "base64"):
            raise SignatureRefused(401, "50113", "Invalid Sign")
        return api_key
