"""Tool pinning: each tool's definition as reviewed, so a server cannot change a tool behind the policy's
back (a "rug pull": same name, new description or schema).

A tool's *definition* is its ``name``, ``title``, ``description``, ``inputSchema``, ``outputSchema``,
``annotations``, ``execution`` and ``_meta``; its *digest* is the SHA-256 of their canonical JSON: keys
sorted, numbers by value (``1``, ``1.0`` and ``1e0`` are one number), an absent field and a null one the
same; anything else (a null inside a schema included) changes it. A listing that names a tool twice pins
nothing for that name: it is refused. A lock file
(``regoguard pin``) holds one entry per tool, the digest and the definition itself, so a reviewer sees the
change as a diff in git.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regoguard.canonical import canonical

FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations", "execution", "_meta")
LOCK_VERSION = 1
ON_CHANGE = ("deny", "warn")


class PinError(ValueError):
    """A lock file that cannot be read."""


def definition(tool: dict[str, Any]) -> dict[str, Any]:
    """The fields of a tool that are pinned, canonical (null and absent alike)."""
    return {k: canonical(tool[k]) for k in FIELDS if tool.get(k) is not None}


def digest(tool: dict[str, Any]) -> str:
    # ASCII escapes: a lone surrogate in a description hashes like any other text instead of raising
    text = json.dumps(definition(tool), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def changed_fields(pinned: dict[str, Any], seen: dict[str, Any]) -> list[str]:
    """Which pinned fields differ between two definitions."""
    a, b = definition(pinned), definition(seen)
    return [k for k in FIELDS if a.get(k) != b.get(k)]


def _twice(name: str) -> str:
    return f"tool {name!r} is listed more than once, so no one definition can be checked"


@dataclass(frozen=True)
class LockFile:
    server: str
    tools: dict[str, dict[str, Any]]  # name -> {"sha256", "definition"}

    @staticmethod
    def of(server: str, tools: list[dict[str, Any]]) -> LockFile:
        entries = {}
        for tool in tools:
            if isinstance(tool.get("name"), str) and tool["name"] not in entries:
                entries[tool["name"]] = {"sha256": digest(tool), "definition": definition(tool)}
        return LockFile(server, dict(sorted(entries.items())))

    def text(self) -> str:
        doc = {"version": LOCK_VERSION, "server": self.server, "tools": self.tools}
        return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"

    @staticmethod
    def read(path: str | Path) -> LockFile:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise PinError(f"cannot read the lock file {path}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise PinError(f"the lock file {path} is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != LOCK_VERSION or not isinstance(doc.get("tools"), dict):
            raise PinError(f"{path} is not a regoguard lock file (version {LOCK_VERSION}, a `tools` object)")
        tools: dict[str, dict[str, Any]] = {}
        for name, entry in doc["tools"].items():
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                    and isinstance(entry.get("definition"), dict)):
                raise PinError(f"{path}: the entry of tool {name!r} needs `sha256` and `definition`")
            if digest(entry["definition"]) != entry["sha256"]:
                # what a reviewer reads must be what is enforced
                raise PinError(f"{path}: the sha256 of tool {name!r} is not the digest of its definition; "
                               "write the file again with `regoguard pin`")
            tools[name] = entry
        return LockFile(str(doc.get("server", "")), tools)

    def verdict(self, tool: dict[str, Any]) -> str | None:
        """Why ``tool`` (as a server lists it now) is not the pinned one, or None when it is."""
        name = tool.get("name")
        entry = self.tools.get(name) if isinstance(name, str) else None
        if entry is None:
            return f"tool {name!r} is not in the lock file (a new tool)"
        if digest(tool) == entry["sha256"]:
            return None
        fields = changed_fields(entry["definition"], tool)
        return f"tool {name!r} changed since it was pinned ({', '.join(fields) or 'its definition'})"

    def diff(self, tools: list[dict[str, Any]]) -> list[str]:
        """Every difference between the lock file and a server's listing, one line each."""
        lines = []
        listed: dict[str, dict[str, Any]] = {}
        for tool in tools:
            if isinstance(tool.get("name"), str):
                if tool["name"] in listed:
                    lines.append(_twice(tool["name"]))
                listed.setdefault(tool["name"], tool)
                why = self.verdict(tool)
                if why is not None:
                    lines.append(why)
        lines.extend(f"tool {name!r} is pinned but the server no longer lists it"
                     for name in self.tools if name not in listed)
        return lines


FIRST_USE = "first-use"


@dataclass(frozen=True)
class Pinning:
    """What the relay holds a server's tools to, and what to do with a tool that differs.

    Either a lock file, or (``pin: first-use``) the state store: each tool's digest is recorded the first
    time any proxy sharing the store sees it, and every later listing is held to it.
    """

    lock: LockFile | None
    on_change: str = "deny"  # deny: hidden and its calls denied; warn: allowed, logged
    store: Any = None  # a limits Store, for first-use
    server: str = ""
    _recorded: dict[str, str] = field(default_factory=dict, compare=False)  # first-use digests already read

    def check(self, tools: list[dict[str, Any]]) -> list[tuple[str, str | None, list[str]]]:
        """``(name, why it is not its pinned definition or None, the fields that changed)`` per tool name
        of one listing (page). A name listed twice fails, whatever each entry holds."""
        named = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
        counts: dict[str, int] = {}
        for t in named:
            counts[t["name"]] = counts.get(t["name"], 0) + 1
        results: dict[str, tuple[str | None, list[str]]] = {}
        for tool, found in zip(named, self._each(named), strict=True):
            name = tool["name"]
            verdict = (_twice(name), ["listed twice"]) if counts[name] > 1 else found
            if name not in results or results[name][0] is None:
                results[name] = verdict
        return [(name, why, fields) for name, (why, fields) in results.items()]

    def _each(self, named: list[dict[str, Any]]) -> list[tuple[str | None, list[str]]]:
        if self.lock is not None:
            out: list[tuple[str | None, list[str]]] = []
            for tool in named:
                why = self.lock.verdict(tool)
                entry = self.lock.tools.get(tool["name"])
                fields = changed_fields(entry["definition"], tool) if entry is not None else ["new"]
                out.append((why, fields if why else []))
            return out
        digests = [(f"{self.server}/{t['name']}", digest(t)) for t in named]
        unknown = {k: d for k, d in digests if self._recorded.get(k) is None}
        if unknown:
            try:
                self._recorded.update(self.store.pin_first_use(unknown))
            except Exception as exc:  # the store is down: nothing can be shown to be the pinned tool
                return [(f"the pin store is unavailable, so tool {t['name']!r} cannot be checked: {exc}", [])
                        for t in named]
        return [(None, []) if self._recorded.get(k) == d else
                (f"tool {t['name']!r} changed since it was first seen", ["definition"])
                for (k, d), t in zip(digests, named, strict=True)]

    def knows(self, name: str) -> bool:
        """Whether a tool the server never listed in a session could still be a pinned one."""
        return self.lock is None or name in self.lock.tools
