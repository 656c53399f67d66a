"""The demo reaches outbound webhooks: its Premium users' pushes are POSTed to the demo's
local receiver (``serve/standins/demo_webhooks.py``), every signature verifies, the retried
deliveries are delivered once, and the lake has their ``channel = 'webhook'`` rows. The run
is the session's ``demo_run`` (conftest.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from core.settings import LakeSettings
from pipeline.lake import Lake
from pipeline.query import run_query


def _figure(out: str, name: str) -> str:
    found = re.search(rf"│ {re.escape(name)}\s*│\s*([^│]+?)\s*│", out)
    assert found, f"no {name!r} in the demo's output"
    return found.group(1)


def test_demo_posts_the_premium_users_pushes_to_its_receiver(
    demo_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, base = demo_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Outbound webhooks" in out
    posts, verified = int(_figure(out, "POSTs received")), int(_figure(out, "signatures verified"))
    unique, retried = (
        int(_figure(out, "deliveries (unique ids)")),
        int(_figure(out, "503 answered (then retried)")),
    )
    assert posts > 0 and verified == posts and posts == unique + retried
    delivered, retries, failed = (
        int(v) for v in _figure(out, "sender: delivered / retries / failed").split(" / ")
    )
    assert (delivered, retries, failed) == (unique, retried, 0)
    assert _figure(out, "schema") == "arbflow.push/1"
    lake = Lake.from_settings(LakeSettings(url=str(base / "lake")))
    rows = run_query(
        lake, "SELECT status, count(*) AS n FROM deliveries WHERE channel = 'webhook' GROUP BY status"
    ).to_pylist()
    assert {r["status"]: r["n"] for r in rows} == {"sent": unique, "retry": retried}
