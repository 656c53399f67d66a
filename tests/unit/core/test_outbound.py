"""Outbound webhooks, the pure part: payload, signature, retries, address policy, record."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from core.outbound import (
    PAYLOAD_FIELDS,
    SCHEMA,
    Endpoint,
    Verdict,
    address_refusal,
    backoff_s,
    build_payload,
    delivery_id,
    encode_body,
    parse_ranges,
    parse_url,
    request_headers,
    schedule,
    sign,
    url_refusal,
    verdict,
    verify,
)
from core.settings import OutboundSettings
from pipeline.opportunities import OPPORTUNITIES

EVENT = {
    "event": "opened",
    "opportunity_id": "abc123",
    "kind": "spot_spread",
    "symbol": "BTC/USDT",
    "buy_exchange": "binance",
    "sell_exchange": "okx",
    "gross_bps": 32.0,
    "net_bps": 12.5,
    "gross_apr": None,
    "notional_usd": 10_000.0,
    "executable_usd": 8_000.0,
    "confidence": 0.91,
    "priority": "high",
    "pushable": True,
    "flags": ["thin_book"],
    "detected_at": "2026-12-06T21:00:00.123456+00:00",
    "details": {"vwap_buy": 1.0},
    "opened_at": "2026-12-06T20:59:59+00:00",
    "reopened": False,
}


def test_payload_has_every_opportunities_column_plus_delivery_and_user() -> None:
    body = build_payload(EVENT, user_id=42)
    assert tuple(OPPORTUNITIES.names) == PAYLOAD_FIELDS
    assert set(body) == set(PAYLOAD_FIELDS) | {"schema", "delivery_id", "user_id"}
    assert body["schema"] == SCHEMA == "arbflow.push/1"
    assert body["ts"] == body["detected_at"] == "2026-12-06T21:00:00.123Z"
    assert body["opened_at"] == "2026-12-06T20:59:59.000Z"
    assert body["flags"] == "thin_book" and body["details"] == {"vwap_buy": 1.0}
    assert body["lifetime_s"] is None and body["gross_apr"] is None
    assert body["delivery_id"] == delivery_id(42, EVENT)


def test_delivery_id_is_stable_per_user_and_event() -> None:
    assert delivery_id(1, EVENT) == delivery_id(1, dict(EVENT))
    assert delivery_id(1, EVENT) != delivery_id(2, EVENT)
    assert delivery_id(1, EVENT) != delivery_id(1, {**EVENT, "event": "updated"})
    assert delivery_id(1, EVENT) != delivery_id(1, {**EVENT, "detected_at": "2026-12-06T22:00:00+00:00"})
    assert len(delivery_id(1, EVENT)) == 32


def test_signature_is_hmac_sha256_of_the_exact_body_and_a_receiver_verifies_it() -> None:
    body = encode_body(build_payload(EVENT, user_id=7))
    secret = "whsec_test"
    header = sign(secret, body)
    assert header == "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert verify(secret, body, header)
    assert not verify("whsec_other", body, header)
    assert not verify(secret, body + b" ", header)
    assert not verify(secret, body, None)
    assert json.loads(body)["user_id"] == 7
    headers = request_headers(
        secret, body, delivery="d1", event="opened", attempt=2, now=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert headers["X-Arbflow-Signature"] == header and headers["X-Arbflow-Delivery"] == "d1"
    assert headers["X-Arbflow-Attempt"] == "2" and headers["X-Arbflow-Timestamp"] == "1767225600"


def test_body_is_the_same_bytes_on_every_build() -> None:
    assert encode_body(build_payload(EVENT, user_id=1)) == encode_body(build_payload(dict(EVENT), user_id=1))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (429, Verdict.RETRY),
        (None, Verdict.RETRY),
        (400, Verdict.FAILED),
        (404, Verdict.FAILED),
        (410, Verdict.FAILED),
        (301, Verdict.FAILED),
    ],
)
def test_verdicts(status: int | None, expected: Verdict) -> None:
    assert verdict(status) is expected


def test_backoff_doubles_is_capped_and_honours_retry_after() -> None:
    assert schedule(5, base_s=2.0, cap_s=10.0) == [2.0, 4.0, 8.0, 10.0]
    assert backoff_s(1, base_s=1.0, cap_s=60.0, jitter=0.0) == 0.5
    assert backoff_s(1, base_s=1.0, cap_s=60.0, jitter=0.99) == pytest.approx(1.49)
    assert backoff_s(1, base_s=1.0, cap_s=60.0, retry_after_s=30) == 30
    assert backoff_s(1, base_s=1.0, cap_s=60.0, retry_after_s=3600) == 60


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link_local"),
        ("fe80::1", "link_local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "not_global"),
        ("2002:7f00:1::1", "tunnel"),
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_policy(address: str, reason: str | None) -> None:
    assert address_refusal([address], []) == reason


def test_every_address_must_pass_and_allowed_ranges_let_private_ones_through() -> None:
    assert address_refusal(["8.8.8.8", "127.0.0.1"], []) == "loopback"
    assert address_refusal([], []) == "unresolved"
    allowed = parse_ranges(["127.0.0.0/8", "::1/128"])
    assert address_refusal(["127.0.0.1"], allowed) is None
    assert address_refusal(["::ffff:127.0.0.1"], allowed) is None  # mapped: judged as its IPv4
    assert address_refusal(["::1"], allowed) is None
    assert address_refusal(["10.0.0.1"], allowed) == "private"
    with pytest.raises(ValueError, match="CIDR"):
        parse_ranges(["not-a-range"])


def test_https_is_required_except_inside_an_allowed_range() -> None:
    allowed = parse_ranges(["127.0.0.0/8"])
    plain = parse_url("http://127.0.0.1:8080/hook")
    assert not isinstance(plain, str)
    assert url_refusal(plain, ["127.0.0.1"], allowed) is None
    assert url_refusal(plain, ["127.0.0.1"], []) == "loopback"
    public = parse_url("http://example.com/hook")
    assert not isinstance(public, str)
    assert url_refusal(public, ["93.184.216.34"], allowed) == "https_required"
    secure = parse_url("https://example.com/hook")
    assert not isinstance(secure, str) and secure.port == 443
    assert url_refusal(secure, ["93.184.216.34"], []) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme"),
        ("https://user:pw@example.com/", "credentials_in_url"),
        ("not a url", "bad_url"),
        ("https:///path", "bad_url"),
        ("", "bad_url"),
    ],
)
def test_bad_urls(url: str, reason: str) -> None:
    assert parse_url(url) == reason


def test_record_round_trips_and_an_older_record_still_reads() -> None:
    now = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)
    endpoint = Endpoint("wh_1", 5, "https://x.example/h", "whsec_abcdefghijkl", now, failures=2)
    back = Endpoint.from_record(endpoint.to_record())
    assert back == endpoint
    old = {
        "id": "wh_0",
        "user_id": "5",
        "url": "https://x.example/h",
        "secret": "whsec_zz",
        "created_at": now.isoformat(),
    }
    read = Endpoint.from_record(old)  # no version, none of the later fields
    assert read.failures == 0 and not read.disabled and read.created_by == 5 and not read.by_admin
    newer = {**endpoint.to_record(), "v": "2", "labels": "a,b"}
    assert Endpoint.from_record(newer).to_record()["labels"] == "a,b"  # unknown fields kept
    assert "abcdefghijkl" not in endpoint.public()["secret"]


def test_settings_validate_ranges_and_tier() -> None:
    s = OutboundSettings(allow_private="127.0.0.0/8, ::1", min_tier="Premium")
    assert s.allow_private == ["127.0.0.0/8", "::1"] and s.min_tier == "premium"
    with pytest.raises(ValueError):
        OutboundSettings(allow_private="nope")
    with pytest.raises(ValueError):
        OutboundSettings(min_tier="gold")
