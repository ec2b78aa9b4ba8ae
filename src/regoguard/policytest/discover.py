"""Find test files: the PATHs given, directories searched recursively for ``*_test.yaml`` / ``*.test.yaml``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

SUFFIXES = ("_test.yaml", "_test.yml", ".test.yaml", ".test.yml")
SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}


def is_test_file(name: str) -> bool:
    return name.endswith(SUFFIXES)


def discover(paths: Sequence[Path]) -> list[Path]:
    """Test files under ``paths`` in a stable order (each once). A file given by name is taken as is."""
    found: list[Path] = []
    for root in paths:
        if root.is_file():
            found.append(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            # hidden directories (.git, .venv), virtualenvs and dependency trees hold no tests of ours
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS
                                 and not (Path(dirpath) / d / "pyvenv.cfg").exists())
            found.extend(Path(dirpath) / f for f in sorted(filenames) if is_test_file(f))
    seen: set[Path] = set()
    unique: list[Path] = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
