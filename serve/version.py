"""The version of the code a process runs: the package version and a hash of the source tree.

``code_version()`` is ``<package version>+<12 hex digits>``: SHA-256 over the relative
path and content of every ``.py`` file of the packages (``core``, ``pipeline``, ``state``,
``notify``, ``actors``, ``bot``, ``serve``) and of ``pyproject.toml`` / ``uv.lock`` where
they are, so any change of code or dependencies changes it, on any node holding the same
files (a node's copy has no ``.git``: the tree itself is the version). It goes into the
Serve config's ``runtime_env`` (``serve deploy`` then replaces the replicas) and onto the
detached bot shard actors (a start with other code replaces them,
serve.dispatch.UpdateShards).
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "pipeline", "state", "notify", "actors", "bot", "serve")
PROJECT_FILES = ("pyproject.toml", "uv.lock")
ENV_VAR = "ARBFLOW_CODE_VERSION"
"""The Serve config's runtime_env carries the version under this name (not a setting)."""


def tree_hash(root: Path = ROOT) -> str:
    """SHA-256 (hex) over the package sources and project files under ``root``."""
    digest = hashlib.sha256()
    files = [p for pkg in PACKAGES for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts]
    files += [root / name for name in PROJECT_FILES if (root / name).is_file()]
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def package_version() -> str:
    try:
        return metadata.version("arbflow")
    except metadata.PackageNotFoundError:
        return "0"


@functools.cache
def code_version(root: Path = ROOT) -> str:
    """``<package version>+<first 12 hex digits of tree_hash>`` (computed once per process)."""
    return f"{package_version()}+{tree_hash(root)[:12]}"


__all__ = ["ENV_VAR", "code_version", "package_version", "tree_hash"]
