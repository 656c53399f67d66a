"""Outbound webhooks, the pure part: what is POSTed, how it is signed, when it is retried,
which addresses may be reached (docs/outbound-webhooks.md). No I/O here: the sender
(``actors.outbound``) and the registry (``state.webhooks``) do the network and Redis.

- :func:`build_payload` / :func:`encode_body`: one push for one user as JSON, schema
  :data:`SCHEMA` (the ``opportunities`` row's fields plus ``delivery_id`` and ``user_id``);
  the body is the same bytes on every attempt of a delivery.
- :func:`delivery_id`: stable per (user, opportunity event): the dedup key of the sender and
  of a receiver.
- :func:`sign` / :func:`verify`: ``X-Arbflow-Signature: sha256=<hex>``, HMAC-SHA256 of the
  exact body bytes with the endpoint's secret.
- :func:`verdict` / :func:`backoff_s`: 2xx delivered; 5xx, 429, timeouts and connection
  errors retried with exponential backoff; any other answer is final.
- :func:`address_refusal` / :func:`url_refusal`: loopback, private, link-local, multicast,
  reserved, unspecified and other non-global targets are refused (IPv4, IPv6, IPv4-mapped)
  unless they lie in a range the operator allowed; plain ``http`` only to such a range.
- :class:`Endpoint`: a registered endpoint as the registry stores it (versioned record).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

SCHEMA = "arbflow.push/1"
"""The payload's versioned name: a field added keeps ``/1``; a field removed or changed in
meaning makes ``/2`` (receivers read ``schema`` first)."""

SIGNATURE_HEADER = "X-Arbflow-Signature"
DELIVERY_HEADER = "X-Arbflow-Delivery"
TIMESTAMP_HEADER = "X-Arbflow-Timestamp"
EVENT_HEADER = "X-Arbflow-Event"
ATTEMPT_HEADER = "X-Arbflow-Attempt"
USER_AGENT = "arbflow-webhooks/1"

PAYLOAD_FIELDS: tuple[str, ...] = (
    "ts",
    "opportunity_id",
    "event",
    "kind",
    "symbol",
    "buy_exchange",
    "sell_exchange",
    "gross_bps",
    "net_bps",
    "gross_apr",
    "notional_usd",
    "executable_usd",
    "confidence",
    "priority",
    "pushable",
    "flags",
    "detected_at",
    "opened_at",
    "lifetime_s",
    "reopened",
    "details",
)
"""The ``opportunities`` lake row's columns, in its order (``pipeline.opportunities.OPPORTUNITIES``)."""

MAX_URL_LEN = 2048


# -- payload -------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    """A timestamp as ISO 8601 UTC with milliseconds and ``Z`` (the lake's ms precision)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(float(value) / 1000, UTC)
    elif isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def delivery_id(user_id: int, event: Mapping[str, Any]) -> str:
    """Stable per (user, opportunity event): the same push handed twice (a retry, a shard's
    restart) has the same id; another event of the opportunity (a re-opening, an update
    that made it pushable again) has another. 32 hex characters."""
    detected = _iso(event.get("detected_at")) or ""
    text = f"{int(user_id)}|{event.get('opportunity_id')}|{event.get('event', 'opened')}|{detected}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def build_payload(event: Mapping[str, Any], *, user_id: int, delivery: str | None = None) -> dict[str, Any]:
    """The JSON object POSTed for one opportunity event pushed to ``user_id``.

    ``event``: the event as the distributor hands it to the queue shards
    (``actors.opportunities.event_payload``: the candidate's fields, ``opened_at``,
    ``reopened``). Fields as the lake row has them, except: timestamps are ISO 8601 UTC
    strings, ``details`` is a JSON object (the row holds it as JSON text), ``flags`` stays
    the row's comma-separated string."""
    flags = event.get("flags") or ""
    if not isinstance(flags, str):
        flags = ",".join(str(f) for f in flags)
    details = event.get("details") or {}
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            details = {"raw": details}
    detected = _iso(event.get("detected_at"))
    kind = str(event.get("kind", ""))
    body: dict[str, Any] = {
        "schema": SCHEMA,
        "delivery_id": delivery or delivery_id(user_id, event),
        "user_id": int(user_id),
        "ts": detected,
        "opportunity_id": str(event["opportunity_id"]),
        "event": str(event.get("event") or "opened"),
        "kind": kind,
        "symbol": str(event.get("symbol", "")),
        "buy_exchange": event.get("buy_exchange") or None,
        "sell_exchange": event.get("sell_exchange") or None,
        "gross_bps": _num(event.get("gross_bps")),
        "net_bps": _num(event.get("net_bps")),
        "gross_apr": _num(event.get("gross_apr")),
        "notional_usd": _num(event.get("notional_usd")),
        "executable_usd": _num(event.get("executable_usd")),
        "confidence": _num(event.get("confidence")),
        "priority": str(event.get("priority") or "low"),
        "pushable": bool(event.get("pushable", True)),
        "flags": flags,
        "detected_at": detected,
        "opened_at": _iso(event.get("opened_at")) or detected,
        "lifetime_s": _num(event.get("lifetime_s")),
        "reopened": bool(event.get("reopened", False)),
        "details": details if isinstance(details, dict) else {},
    }
    return body


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed: compact JSON, keys sorted, UTF-8, no NaN."""
    return json.dumps(
        payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
    ).encode()


# -- signature -----------------------------------------------------------------------------


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Arbflow-Signature`` value: ``sha256=`` and the HMAC-SHA256 of ``body`` in hex."""
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body), header.strip())


def request_headers(
    secret: str | bytes, body: bytes, *, delivery: str, event: str, attempt: int, now: datetime
) -> dict[str, str]:
    """The headers of one attempt (the body and its signature are the same on every attempt)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(secret, body),
        DELIVERY_HEADER: delivery,
        EVENT_HEADER: event,
        TIMESTAMP_HEADER: str(int(now.timestamp())),
        ATTEMPT_HEADER: str(attempt),
    }


# -- retries -------------------------------------------------------------------------------


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


def verdict(status: int | None) -> Verdict:
    """An attempt's answer: ``None`` is a timeout or a connection error (retried), 2xx is
    delivered, 5xx and 429 are retried, anything else (3xx: redirects are not followed,
    4xx) is final."""
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status >= 500 or status == 429:
        return Verdict.RETRY
    return Verdict.FAILED


def backoff_s(
    attempt: int, *, base_s: float, cap_s: float, jitter: float = 0.5, retry_after_s: float | None = None
) -> float:
    """Wait before attempt ``attempt + 1`` (``attempt`` ≥ 1 failed): ``base * 2^(attempt-1)``
    capped, scaled by ``0.5 + jitter`` (``jitter`` in [0, 1): a random draw, 0.5 = none), and
    at least a 429's ``Retry-After`` (itself capped)."""
    delay = min(cap_s, base_s * (2 ** max(0, attempt - 1))) * (0.5 + min(max(jitter, 0.0), 1.0))
    if retry_after_s is not None and retry_after_s > 0:
        delay = max(delay, min(cap_s, retry_after_s))
    return delay


def schedule(max_attempts: int, *, base_s: float, cap_s: float) -> list[float]:
    """The waits between ``max_attempts`` attempts without jitter (for the docs and the tests)."""
    return [backoff_s(a, base_s=base_s, cap_s=cap_s) for a in range(1, max_attempts)]


# -- addresses -----------------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ranges(values: Iterable[str]) -> list[IPNetwork]:
    """CIDR ranges (``127.0.0.0/8``, ``::1/128``, a bare address); ValueError names a bad one."""
    out: list[IPNetwork] = []
    for value in values:
        text = str(value).strip()
        if not text:
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"not a CIDR range: {text!r}") from exc
    return out


def _plain(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is judged as the IPv4 it maps."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_class(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (``loopback``, ``private``, …), None when it is."""
    ip = _plain(ip)
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link_local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return name
    if isinstance(ip, ipaddress.IPv6Address) and (ip.sixtofour is not None or ip.teredo is not None):
        return "tunnel"  # 6to4 / Teredo carry an IPv4 inside: not judged through them
    if not ip.is_global:
        return "not_global"  # shared address space (100.64/10), documentation ranges, …
    return None


def in_ranges(ip: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    plain = _plain(ip)
    return any(plain.version == net.version and plain in net for net in allowed) or any(
        ip.version == net.version and ip in net for net in allowed
    )


def address_refusal(addresses: Sequence[str], allowed: Sequence[IPNetwork]) -> str | None:
    """Why these resolved addresses may not be reached (None: they may). Every address must
    pass (a name that resolves to one public and one private address is refused): public,
    or inside an ``allowed`` range."""
    if not addresses:
        return "unresolved"
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return "bad_address"
        if in_ranges(ip, allowed):
            continue
        why = address_class(ip)
        if why is not None:
            return why
    return None


def all_allowed(addresses: Sequence[str], allowed: Sequence[IPNetwork]) -> bool:
    """Every address lies in an allowed (private) range: plain ``http`` is accepted there."""
    try:
        return bool(addresses) and all(
            in_ranges(ipaddress.ip_address(a.split("%", 1)[0]), allowed) for a in addresses
        )
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Target:
    """A URL taken apart: what the sender connects to (after resolving ``host``)."""

    url: str
    scheme: str
    host: str
    port: int


_HOST_OK = re.compile(r"^[A-Za-z0-9.\-_:\[\]]+$")


def parse_url(url: str) -> Target | str:
    """``url`` as a :class:`Target`, or why it cannot be one (a refusal reason)."""
    text = (url or "").strip()
    if not text or len(text) > MAX_URL_LEN or not text.isprintable() or " " in text:
        return "bad_url"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "bad_url"
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        return "scheme"
    if parts.username is not None or parts.password is not None:
        return "credentials_in_url"
    host = (parts.hostname or "").lower()
    if not host or not _HOST_OK.match(host):
        return "bad_url"
    if parts.fragment:
        return "bad_url"
    return Target(text, scheme, host, port or (443 if scheme == "https" else 80))


def url_refusal(target: Target, addresses: Sequence[str], allowed: Sequence[IPNetwork]) -> str | None:
    """The whole rule for one URL resolved to ``addresses``: the addresses must pass
    :func:`address_refusal`, and the scheme must be ``https`` unless every address lies in
    an allowed range (a test receiver on plain ``http``)."""
    why = address_refusal(addresses, allowed)
    if why is not None:
        return why
    if target.scheme != "https" and not all_allowed(addresses, allowed):
        return "https_required"
    return None


def literal_address(host: str) -> str | None:
    """``host`` when it is an IP literal (``[::1]`` unbracketed), else None."""
    text = host.strip("[]")
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return None


# -- the registry's record -----------------------------------------------------------------

RECORD_VERSION = 1
"""The endpoint record's format (``v`` field). A record without ``v`` is version 1; fields
added later read their defaults from records written before them."""


@dataclass(slots=True)
class Endpoint:
    """One registered endpoint. ``secret`` signs the bodies (shown once at registration)."""

    id: str
    user_id: int
    url: str
    secret: str
    created_at: datetime
    created_by: int = 0
    """Who registered it: the user, or an admin (the admin API says ``0``, the bot the admin's id)."""
    failures: int = 0
    """Consecutive failed deliveries (reset by a delivered one)."""
    disabled: bool = False
    disabled_reason: str = ""
    disabled_at: datetime | None = None
    delivered: int = 0
    last_status: str = ""
    last_at: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)
    """Fields of a newer record this code does not know (kept, never lost on a write)."""

    @property
    def by_admin(self) -> bool:
        return self.created_by != self.user_id

    def masked_secret(self) -> str:
        return mask(self.secret)

    def to_record(self) -> dict[str, str]:
        out = dict(self.extra)
        out.update(
            {
                "v": str(RECORD_VERSION),
                "id": self.id,
                "user_id": str(self.user_id),
                "url": self.url,
                "secret": self.secret,
                "created_at": self.created_at.astimezone(UTC).isoformat(),
                "created_by": str(self.created_by),
                "failures": str(self.failures),
                "disabled": "1" if self.disabled else "0",
                "disabled_reason": self.disabled_reason,
                "disabled_at": self.disabled_at.astimezone(UTC).isoformat() if self.disabled_at else "",
                "delivered": str(self.delivered),
                "last_status": self.last_status,
                "last_at": self.last_at.astimezone(UTC).isoformat() if self.last_at else "",
            }
        )
        return out

    @classmethod
    def from_record(cls, raw: Mapping[str, str]) -> Endpoint:
        """Any version: missing fields take their defaults; unknown ones are kept in ``extra``."""

        def when(name: str) -> datetime | None:
            text = raw.get(name) or ""
            return datetime.fromisoformat(text) if text else None

        user_id = int(raw["user_id"])
        known = {
            "v", "id", "user_id", "url", "secret", "created_at", "created_by", "failures", "disabled",
            "disabled_reason", "disabled_at", "delivered", "last_status", "last_at",
        }  # fmt: skip
        return cls(
            id=raw["id"],
            user_id=user_id,
            url=raw["url"],
            secret=raw["secret"],
            created_at=when("created_at") or datetime(1970, 1, 1, tzinfo=UTC),
            created_by=int(raw.get("created_by") or user_id),
            failures=int(raw.get("failures") or 0),
            disabled=raw.get("disabled") == "1",
            disabled_reason=raw.get("disabled_reason") or "",
            disabled_at=when("disabled_at"),
            delivered=int(raw.get("delivered") or 0),
            last_status=raw.get("last_status") or "",
            last_at=when("last_at"),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def public(self) -> dict[str, Any]:
        """As the admin API and ``/webhooks`` show it: the secret masked."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "url": self.url,
            "secret": self.masked_secret(),
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "failures": self.failures,
            "disabled": self.disabled,
            "disabled_reason": self.disabled_reason or None,
            "disabled_at": _iso(self.disabled_at),
            "delivered": self.delivered,
            "last_status": self.last_status or None,
            "last_at": _iso(self.last_at),
        }


def mask(secret: str) -> str:
    """``whsec_ab…yz``: enough to tell two secrets apart, never enough to sign."""
    if len(secret) <= 10:
        return "…"
    return f"{secret[:8]}…{secret[-2:]}"


__all__ = [
    "ATTEMPT_HEADER",
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "PAYLOAD_FIELDS",
    "RECORD_VERSION",
    "SCHEMA",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Endpoint",
    "Target",
    "Verdict",
    "address_class",
    "address_refusal",
    "all_allowed",
    "backoff_s",
    "build_payload",
    "delivery_id",
    "encode_body",
    "literal_address",
    "mask",
    "parse_ranges",
    "parse_url",
    "request_headers",
    "schedule",
    "sign",
    "url_refusal",
    "verdict",
    "verify",
]
