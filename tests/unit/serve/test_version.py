"""The code version: the package version and a hash of the source tree, not of where it lies."""

from __future__ import annotations

import shutil
from pathlib import Path

from serve.version import PACKAGES, ROOT, code_version, package_version, tree_hash


def _tree(at: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, at / pkg, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", at / "pyproject.toml")
    return at


def test_the_same_code_elsewhere_has_the_same_version_and_a_change_changes_it(tmp_path: Path) -> None:
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert tree_hash(a) == tree_hash(b)
    (b / "pipeline" / "__pycache__").mkdir(exist_ok=True)
    (b / "pipeline" / "__pycache__" / "x.py").write_text("cached = 1\n")  # not source
    (b / "README.md").write_text("docs are not code\n")
    assert tree_hash(a) == tree_hash(b)
    (b / "serve" / "dispatch.py").write_text((b / "serve" / "dispatch.py").read_text() + "\n# changed\n")
    assert tree_hash(a) != tree_hash(b)
    (a / "pyproject.toml").write_text((a / "pyproject.toml").read_text() + "\n")
    assert tree_hash(a) != tree_hash(_tree(tmp_path / "c"))  # dependencies count too


def test_the_version_names_the_package_and_the_tree() -> None:
    version = code_version()
    assert version == f"{package_version()}+{tree_hash()[:12]}"
    assert version == code_version()
