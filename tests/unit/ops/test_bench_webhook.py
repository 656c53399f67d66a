"""bench/webhook.py's verdict: every client against empty Serve, httpx against bare aiohttp."""

from __future__ import annotations

from typing import Any

from bench.webhook import verdict


def row(ours: float, empty: float, aio: float) -> dict[str, Any]:
    def t(rps: float) -> dict[str, Any]:
        return {"rps": rps, "errors": 0}

    return {"webhook": t(ours), "empty_serve": t(empty), "bare_aiohttp": t(aio)}


def test_ratios_and_targets_per_client() -> None:
    results = {
        "keepalive:1": row(950, 1000, 3000),
        "keepalive:10": row(890, 1000, 3000),  # just under issue 14's 0.9 at one level
        "httpx:1": row(900, 1000, 1500),
        "httpx:10": row(700, 1000, 1500),
    }
    light, hx = verdict(results, "keepalive"), verdict(results, "httpx")
    assert light["ratio_vs_empty_serve"] == {"1": 0.95, "10": 0.89} and light["ratio"] == 0.89
    assert not light["ok_vs_empty_serve"] and not light["ok_vs_aiohttp"]
    assert light["empty_serve_vs_aiohttp"] == {"1": 0.333, "10": 0.333}
    assert not hx["ok_vs_empty_serve"]  # 0.7 at 10 connections
    assert hx["ratio_vs_aiohttp"] == {"1": 0.6, "10": 0.467} and not hx["ok_vs_aiohttp"]
    results["httpx:10"] = row(950, 1000, 1500)
    hx = verdict(results, "httpx")
    assert hx["ok_vs_empty_serve"] and hx["ok_vs_aiohttp"]


def test_40_connections_are_not_judged_against_aiohttp() -> None:
    results = {"httpx:1": row(900, 1000, 1000), "httpx:40": row(900, 1000, 9000)}
    out = verdict(results, "httpx")
    assert out["ratio_vs_aiohttp"]["40"] == 0.1 and out["ok_vs_aiohttp"] and out["ok_vs_empty_serve"]
