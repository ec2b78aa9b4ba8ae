"""Where the hand-written Rego library lives, and its modules.

The library (``rego/regoguard/*.rego``) is what combines a compiled policy with the team's own Rego
(``package regoguard.custom``). It sits here, below both the engine and the team-Rego loader, so that
each imports it and neither imports the other.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from regoguard.errors import EngineError


def rego_library_dir() -> Path:
    """The library's root: inside the installed package, or the repository's ``rego/``."""
    packaged = resources.files("regoguard").joinpath("_rego")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[3] / "rego"


def library_modules() -> dict[str, str]:
    """Every ``.rego`` file of the library, by path relative to the library root (sorted, deterministic)."""
    root = rego_library_dir()
    files = sorted(p for p in root.rglob("*.rego") if not p.name.endswith("_test.rego"))
    if not files:
        raise EngineError(f"the Rego library is missing: no .rego files under {root}")
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in files}
