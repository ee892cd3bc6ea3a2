"""Helpers shared by the end-to-end tests (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_root(tmp: Path) -> Path:
    """A registry root holding copies of the checkout's manifests (methods come from the installed package)."""
    root = tmp / "reg"
    root.mkdir()
    shutil.copy(ROOT / "pyproject.toml", root)
    shutil.copytree(ROOT / "manifests", root / "manifests")
    return root
