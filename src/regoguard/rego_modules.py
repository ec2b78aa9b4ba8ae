"""The team's own Rego modules: found on disk, checked, and handed to the engine beside the library.

A team extends a policy with modules in ``package regoguard.custom`` (``deny``, ``approval`` and
``charges``: see ``rego/regoguard/custom.rego``) and helpers in packages of its own. This file reads them
from files and directories (``--rego DIR``, the policy's ``rego:`` list) and checks them before any call
is decided by them, so a mistake is an error with file, line and column at load time, never a surprise
at call time:

- syntax and compile errors, located from regopy's error report (name, byte offset);
- packages that would overwrite regoguard's own (``regoguard``, ``regoguard.lib``...): only
  ``regoguard.custom`` and its sub-packages, and packages outside ``regoguard``, are the team's;
- ``with`` outside test files: rego-cpp 1.5 crashes the process evaluating some rules under ``with``
  (sprintf, comprehensions), which in the proxy would end the session.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import regopy

from regoguard.compiler import CompiledPolicy, compile_policy, library_modules
from regoguard.engine_io import data_json
from regoguard.errors import PolicyError, PolicyLoadError
from regoguard.policy import Policy
from regoguard.stdout_guard import engine_chatter_silenced

MAX_MODULE_BYTES = 1024 * 1024
TEST_SUFFIX = "_test.rego"

_PACKAGE_RE = re.compile(r"^[ \t]*package[ \t]+([A-Za-z_][\w.]*)", re.MULTILINE)
# Strings, raw strings and comments, blanked before looking for keywords.
_NOISE_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')
# `with <anything> as`: through an import alias (`import input as inp`) it reaches input all the same.
_WITH_RE = re.compile(r"\bwith\s+\S+\s+as\b")
# The library decides from the team's rules; a team rule reading the library back is a cycle.
_LIBRARY_REF_RE = re.compile(r"\bdata\.regoguard\.lib\b|\bdata\.regoguard\s*\[|\bdata\.regoguard\s*$|"
                             r"\bdata\.regoguard\s+as\b", re.MULTILINE)


def load_rego(paths: Sequence[str | Path], *, tests: bool = False) -> dict[str, str]:
    """Read and check the team's modules under ``paths`` (files, or directories read recursively).

    Args:
        paths: ``.rego`` files or directories holding them.
        tests: include ``*_test.rego`` files (for ``regoguard test``); the proxy never loads them.

    Returns:
        Module name (its path) → source, in a stable order.

    Raises:
        PolicyLoadError: every problem found, each with file, line and column.
    """
    errors: list[PolicyError] = []
    modules: dict[str, str] = {}
    reserved = set(_library_names())
    for path in _expand(paths, tests, errors):
        name = str(path)
        if name in modules:
            continue
        if name in reserved:
            errors.append(PolicyError(name, 1, 1, "", f"{name} has the name of a regoguard library module",
                                      "give the directory another name, or its absolute path"))
            continue
        source = _read(path, errors)
        if source is None:
            continue
        if not path.name.endswith(TEST_SUFFIX):  # test modules are never loaded beside the proxy's library
            errors.extend(_shape_errors(name, source))
        modules[name] = source
    if not errors and modules:
        # Test modules are only parsed here: evaluating them next to the library could run a `with`
        # that crashes the process; `regoguard test` runs them in child processes.
        rules = {n: src for n, src in modules.items() if not n.endswith(TEST_SUFFIX)}
        tests_only = {n: src for n, src in modules.items() if n.endswith(TEST_SUFFIX)}
        with engine_chatter_silenced():
            if rules:
                errors.extend(compile_errors(rules))
            errors.extend(parse_errors(tests_only))
    if errors:
        raise PolicyLoadError(errors)
    return modules


def revision_with(policy_revision: str, modules: Mapping[str, str]) -> str:
    """The revision of a compiled policy together with the team's modules (the policy's own without any)."""
    if not modules:
        return policy_revision
    h = hashlib.sha256(policy_revision.encode() + b"\x00")
    for name in sorted(modules):
        h.update(name.encode() + b"\x00" + modules[name].encode() + b"\x00")
    return h.hexdigest()[:16]


def _expand(paths: Sequence[str | Path], tests: bool, errors: list[PolicyError]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*.rego"))
                         if p.is_file() and (tests or not p.name.endswith(TEST_SUFFIX)))
        elif path.is_file():
            found.append(path)
        else:
            errors.append(PolicyError(str(path), 1, 1, "", "no such Rego file or directory"))
    return found


def _read(path: Path, errors: list[PolicyError]) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        errors.append(PolicyError(str(path), 1, 1, "", f"cannot read Rego module: {exc.strerror}"))
        return None
    if len(data) > MAX_MODULE_BYTES:
        errors.append(PolicyError(str(path), 1, 1, "", f"Rego module is larger than {MAX_MODULE_BYTES} bytes"))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        errors.append(PolicyError(str(path), 1, 1, "", f"Rego module is not UTF-8: {exc}"))
        return None


def _shape_errors(name: str, source: str) -> list[PolicyError]:
    errors: list[PolicyError] = []
    code = _NOISE_RE.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), source)
    match = _PACKAGE_RE.search(code)
    if match is None:
        errors.append(PolicyError(name, 1, 1, "", "a Rego module needs a `package` line"))
    elif not _package_allowed(match.group(1)):
        line, col = _line_col(source, match.start(1))
        errors.append(PolicyError(
            name, line, col, "", f"package {match.group(1)} belongs to regoguard",
            "put the team's rules in `package regoguard.custom` (deny, approval, charges) or a package of its own",
        ))
    for m in _LIBRARY_REF_RE.finditer(code):
        line, col = _line_col(source, m.start())
        errors.append(PolicyError(
            name, line, col, "", "the team's Rego may not read data.regoguard.lib (or all of data.regoguard)",
            "the library's decision is built from data.regoguard.custom, so reading it back is a cycle; read "
            "input, data.regoguard.custom and data.regoguard.settings",
        ))
    for m in _WITH_RE.finditer(code):
        line, col = _line_col(source, m.start())
        errors.append(PolicyError(
            name, line, col, "", "`with` is allowed only in test modules (*_test.rego)",
            "the embedded engine (rego-cpp 1.5) can crash evaluating rules under `with`, which would end "
            "the proxy's session",
        ))
    return errors


def _package_allowed(package: str) -> bool:
    parts = package.split(".")
    return parts[0] != "regoguard" or (len(parts) >= 2 and parts[1] == "custom")


def _line_col(source: str, index: int) -> tuple[int, int]:
    line = source.count("\n", 0, index) + 1
    return line, index - (source.rfind("\n", 0, index) + 1) + 1


def _library_names() -> list[str]:
    return list(library_modules())


def compile_errors(modules: Mapping[str, str]) -> list[PolicyError]:
    """Build the modules with the library; regopy's complaints, located in the team's files."""
    interp = regopy.Interpreter()
    try:
        for lib_name, lib_source in library_modules().items():
            interp.add_module(lib_name, lib_source)
        for name, source in modules.items():
            interp.add_module(name, source)
        probe = _probe_policy()
        probe_module = probe.unit_module(probe.unit_for("regoguard-probe"), vector=False)  # as with team Rego
        interp.add_module("regoguard/policy/probe.rego", probe_module)
        bundle = interp.build(None, ["regoguard/lib/verdict"])
    except regopy.RegoError as exc:
        return located_errors(str(exc), modules) or [
            PolicyError(next(iter(modules)), 1, 1, "", f"the team's Rego does not compile: {exc}")]
    if not bundle.ok():
        return [PolicyError(next(iter(modules)), 1, 1, "", "the team's Rego does not compile with the library")]
    if _evaluates(modules):
        return _decision_errors(interp, modules)
    # rego-cpp builds modules that call undefined functions, then fails every query: find which module.
    culprits = [name for name in modules if not _evaluates({name: modules[name]})] or [next(iter(modules))]
    return [PolicyError(name, 1, 1, "", "the module cannot be evaluated: it calls an undefined function, or "
                        "a built-in the embedded engine lacks") for name in culprits]


def parse_errors(modules: Mapping[str, str]) -> list[PolicyError]:
    """Parse each module alone (parsing never evaluates, so it cannot crash); errors as file:line:column."""
    errors: list[PolicyError] = []
    for name, source in modules.items():
        try:
            regopy.Interpreter().add_module(name, source)
        except regopy.RegoError as exc:
            errors.extend(located_errors(str(exc), {name: source})
                          or [PolicyError(name, 1, 1, "", f"does not parse: {exc}")])
    return errors


def _decision_errors(interp: Any, modules: Mapping[str, str]) -> list[PolicyError]:
    """Decide a probe call with the library, an empty policy and the team's modules: a team module that
    breaks every decision (a cycle, a conflict with the library) is refused now, not found by every call."""
    interp.add_data_json(data_json({"regoguard": {"settings": _probe_policy().settings}}))
    interp.set_input(_PROBE)
    try:
        ok = bool(interp.query("data.regoguard.lib.verdict").ok())
    except (regopy.RegoError, ValueError):
        ok = False
    if ok:
        return []
    return [PolicyError(next(iter(modules)), 1, 1, "", "with the team's Rego loaded, the library cannot decide "
                        "a call (a conflict with the library, or a cycle through it)")]


def _probe_policy() -> CompiledPolicy:
    """An empty policy (every call allowed): what the team's modules are tried against."""
    return compile_policy(Policy(source="<probe>"))


_PROBE = {"tool": {"name": "regoguard-probe", "arguments": {}}, "server": {"name": "probe"},
          "session": {"id": "probe"}, "principal": {"id": "probe", "claims": {}}}


def _evaluates(modules: Mapping[str, str]) -> bool:
    interp = regopy.Interpreter()
    try:
        for name, source in modules.items():
            interp.add_module(name, source)
        interp.set_input(_PROBE)
        return bool(interp.query("data").ok())
    except (regopy.RegoError, ValueError):  # regopy raises ValueError parsing the empty output of a failure
        return False


_ERROR_HEAD = re.compile(r"\(error (\d+):")
_ERROR_MSG = re.compile(r"\(errormsg (\d+):")


def located_errors(report: str, modules: Mapping[str, str]) -> list[PolicyError]:
    """Parse regopy's error report (``(error 14:team/deny.rego|82|2 (errormsg 24:Invalid ...)``: length-
    prefixed name, byte offset, length) into errors with line and column."""
    errors: list[PolicyError] = []
    for head in _ERROR_HEAD.finditer(report):
        start = head.end()
        name = report[start:start + int(head.group(1))]
        rest = report[start + len(name):]
        offset_match = re.match(r"\|(\d+)\|", rest)
        msg_match = _ERROR_MSG.search(rest)
        message = rest[msg_match.end():msg_match.end() + int(msg_match.group(1))] if msg_match else "Rego error"
        source = modules.get(name)
        if source is None:  # an error inside the library: caused by the team's modules, but not locatable
            errors.append(PolicyError(next(iter(modules)), 1, 1, "", f"{message} (reported in {name})"))
            continue
        line, col = 1, 1
        if offset_match:
            prefix = source.encode()[: int(offset_match.group(1))].decode(errors="ignore")
            line, col = _line_col(prefix, len(prefix))
        errors.append(PolicyError(name, line, col, "", message))
    return errors
