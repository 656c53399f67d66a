"""Shared test helpers: where the recorded fixtures live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.fail(f"recorded fixtures not found at {SHARED_FIXTURES} (shared/ must sit beside the repo)")
    return SHARED_FIXTURES


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``make test`` runs the suite on two workers (``-n 2 --dist loadgroup``): most of its time
    is spent waiting (subprocesses starting a whole system, delays, Ray actors starting), not
    computing. A file goes to one worker whole, so its module fixtures start once; the files
    marked ``xdist_group(name)`` go to one worker together (``demo``: the demo run and the
    notebooks that read its lake share the session's ``demo_run``)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            head, at, group = nodeid.rpartition("@")
            if at and head and not any(c in group for c in "[]/:"):
                return f"group:{group}"
            return nodeid.split("::", 1)[0]

    return FilesAndGroups(config, log)
