"""``arbflow demo`` end to end: sim market data, the lake, and simulated Telegram users.

The demo runs as a subprocess (its own embedded Ray and Ray Serve) against a Redis
database of its own; the sandbox, the webhook on Serve and the bot shards all come up
inside it. The output must carry the opportunity tables and the onboarding funnel
with at least one session started. The run is the session's ``demo_run`` (conftest.py):
the notebook tests read its lake, so the suite runs the demo once.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import DEMO_USERS

pytestmark = pytest.mark.xdist_group("demo")  # one worker runs the demo and reads its lake


@pytest.mark.timeout(420)
def test_demo_with_users(demo_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = demo_run
    out = proc.stdout
    assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{out[-4000:]}\n{proc.stderr[-4000:]}"

    # the market side
    assert "live market data (ccxt against the exchange emulators at http" in out, out[:2000]
    assert "Ingest" in out and "Rows per dataset" in out
    assert "Opportunities by kind (this run)" in out
    assert "Top pushable (spot by net bps, funding by net % APR)" in out
    assert "Flagged (never pushable), by flag" in out

    # the Telegram side
    assert "Telegram (sandbox → Ray Serve webhook → bot shards)" in out, out[-4000:]
    assert "Onboarding funnel" in out, out[-4000:]
    created = re.search(r"users simulated / created in the sandbox\s*│\s*(\d+) / (\d+)", out)
    assert created and created.groups() == (str(DEMO_USERS), str(DEMO_USERS)), out[-4000:]
    active = re.search(r"sessions active \(demo users\)\s*│\s*(\d+)", out)
    assert active and int(active.group(1)) >= 1, out[-4000:]
    started = re.search(r"(\d+) users started \(sent /start and opted in\)", out)
    assert started and int(started.group(1)) >= 1, out[-4000:]
    opted_in = re.search(r"│ opted_in\s*│\s*\d+\s*│\s*\S+\s*│\s*(\d+)", out)
    assert opted_in and int(opted_in.group(1)) >= 1, out[-4000:]
    flood = re.search(r"429s \(flood limits\)\s*│\s*(\d+)", out)
    assert flood and int(flood.group(1)) == 0, out[-4000:]
    assert "error" not in out.split("Telegram (sandbox")[1].split("Onboarding funnel")[0], out[-4000:]
    assert "Try the bot by hand" in out
    # the push side ran: its tables, zero 429s from its sends, the DuckDB view of deliveries
    assert "Pushes by tier" in out and "Skipped, by deciding layer" in out, out[-4000:]
    # every tier has its row, Free and Basic included, with what their delays hid and the
    # "missed while delayed" digests (the demo's digest period is seconds, not a day)
    per_tier = out.split("Pushes by tier")[1].split("Skipped, by deciding layer")[0]
    for tier in ("free", "basic", "premium", "enterprise"):
        assert re.search(rf"│ {tier}\s*│(\s*[\d,]+\s*│){{5}}", per_tier), per_tier
    assert "missed while delayed / digests sent" in out, out[-4000:]
    pushed_429 = re.search(r"429 answers from Telegram\s*│\s*(\d+)", out)
    assert pushed_429 and int(pushed_429.group(1)) == 0, out[-4000:]
    queued = re.search(r"│ queued\s*│\s*([\d,]+)", out)
    assert queued and int(queued.group(1).replace(",", "")) >= 1, out[-4000:]
    assert "DuckDB: SELECT status" in out
    # the demo's experiment (none configured): its users read pushes and press some, those in
    # the compact variant more often (a planted effect); its report is among the last tables
    assert "pushes seen / pressed, by variant" in out, out[-4000:]
    assert "arbflow report --experiment demo-layout (this run" in out, out[-4000:]
    experiment = out.split("Experiment demo-layout: engagement per variant")[1]
    assert re.search(r"│ full\s*│\s*\d+\s*│\s*\d+\s*│\s*\d+\s*│[^│]*│\s*control", experiment), experiment
    assert re.search(r"│ compact\s*│\s*\d+\s*│", experiment), experiment
    # it ends with the report's tables and where the dashboard is
    assert "arbflow report (this run" in out and "/dashboard?token=" in out, out[-3000:]
    assert out.index("/dashboard?token=") > out.index("arbflow report (this run")
