"""bench/footprint.py tells Ray's worker processes from its daemons by their command lines."""

from __future__ import annotations

from bench.footprint import _kind

SESSION = "/tmp/ray/session_2026-12-04_18-47-07_111727_3827"
VENV = "/work/.venv/lib/python3.11/site-packages/ray"


def test_the_raylet_is_a_daemon_although_its_flags_name_the_worker_script() -> None:
    raylet = [
        f"{VENV}/core/src/ray/raylet/raylet",
        f"--raylet_socket_name={SESSION}/sockets/raylet",
        f"--python_worker_command=python {VENV}/_private/workers/default_worker.py --node-ip-address=x",
    ]
    assert _kind(raylet, "raylet") == ("raylet", False)


def test_a_worker_still_starting_or_idle_is_a_worker() -> None:
    idle = ["python", f"{VENV}/_private/workers/default_worker.py", f"--raylet-name={SESSION}/sockets/raylet"]
    assert _kind(idle, "python") == ("ray::IDLE", True)


def test_an_actor_is_a_worker_named_by_its_class() -> None:
    assert _kind(["ray::QueueShardActor.pump", ""], "python") == ("ray::QueueShardActor", True)
    assert _kind(["ray::DashboardAgent"], "python") == ("ray::DashboardAgent", False)
