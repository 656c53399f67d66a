"""The layer contracts in pyproject.toml (``lint-imports``) hold, and catch a wrong import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("core", "pipeline", "state", "notify", "actors", "bot", "serve")
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and pyproject.toml, to break on purpose."""
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_its_contracts(tree: Path) -> None:
    out = _lint(tree)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core/_wrong.py", "import redis\n", "core is pure"),
        ("core/_wrong.py", "from pipeline import lake\n", "core is pure"),
        ("pipeline/_wrong.py", "from actors import sink\n", "pipeline is market data only"),
        ("actors/_wrong.py", "from serve.standins.sandbox import server\n", "stand-ins"),
        ("bot/_wrong.py", "from serve.standins.demo_users import plan\n", "stand-ins"),
        ("pipeline/_wrong.py", "from serve.standins.exchanges import binance\n", "stand-ins"),
        ("actors/_wrong.py", "import bot\n", "actors never import bot"),
        ("actors/_wrong.py", "from bot.deps import BotDeps\n", "actors never import bot"),
        ("bot/_wrong.py", "from actors import directory\n", "the floors"),
        ("state/_wrong.py", "from notify import texts\n", "the floors"),
        ("notify/_wrong.py", "from bot import keyboards\n", "the floors"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tree: Path, module: str, line: str, contract: str) -> None:
    (tree / module).write_text(f"from __future__ import annotations\n\n{line}")
    out = _lint(tree)
    assert out.returncode != 0
    broken = [ln for ln in out.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert any(contract in ln for ln in broken), out.stdout
