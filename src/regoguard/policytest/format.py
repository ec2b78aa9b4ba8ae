"""Read a policy test file (``*_test.yaml``) into the model, strictly, with file:line:column errors.

The same machinery as policies: ``_yaml.parse`` keeps positions and refuses duplicate keys, ``Reader``
collects every problem with a did-you-mean for misspelt keys. Nothing is returned unless the file is valid.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from regoguard.errors import PolicyError, PolicyLoadError
from regoguard.policy._yaml import Node, YamlProblem, parse
from regoguard.policy.reader import Reader, is_number, join_path
from regoguard.policytest.format_parts import CONTEXT_KEYS, read_context, read_expect
from regoguard.policytest.model import Advance, Call, Case, Step, SuiteFile, display_path

TOP_KEYS = ("policy", "rego", "description", "schemas", "tests", *CONTEXT_KEYS)
CASE_KEYS = ("name", "call", "expect", "repeat", "steps", *CONTEXT_KEYS)
STEP_KEYS = ("call", "expect", "repeat", "advance")
CALL_KEYS = ("tool", "args", "schema", "approved", *CONTEXT_KEYS)
MAX_REPEAT = 10_000
MAX_FILE_BYTES = 4 * 1024 * 1024


def load_suite(path: Path) -> SuiteFile:
    """Load and check one test file.

    Raises:
        PolicyLoadError: every problem in the file (unknown keys, wrong types, missing policy, ...).
    """
    shown = display_path(path)

    def fail(message: str) -> PolicyLoadError:
        return PolicyLoadError([PolicyError(shown, 1, 1, "", message)])

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read test file: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise fail(f"test file is larger than {MAX_FILE_BYTES} bytes")
    try:
        root = parse(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise fail(f"test file is not UTF-8: {exc}") from exc
    except YamlProblem as exc:
        raise PolicyLoadError([PolicyError(shown, exc.pos.line, exc.pos.column, "", exc.message)]) from exc
    if root is None or root.value is None:
        raise fail("test file is empty; it needs `policy:` and `tests:`")
    r = Reader(shown)
    suite = _read_suite(r, root, path)
    if r.errors or suite is None:
        raise PolicyLoadError(r.errors)
    return suite


def _read_suite(r: Reader, root: Node, path: Path) -> SuiteFile | None:
    top = r.mapping(root, "", TOP_KEYS, "a test file")
    if top is None:
        return None
    for key in ("policy", "tests"):
        if key not in top:
            r.error(root.pos, key, f"a test file needs `{key}:`")
    base = path.parent
    policy = _read_path(r, top["policy"], "policy", base, "the policy file") if "policy" in top else None
    rego: list[Path] = []
    if "rego" in top:
        rnode = top["rego"]
        items = list(enumerate(rnode.value)) if isinstance(rnode.value, list) else [(None, rnode)]
        for i, item in items:
            key = "rego" if i is None else f"rego[{i}]"
            found = _read_path(r, item, key, base, "a Rego file or directory")
            if found is not None:
                rego.append(found)
    if "description" in top:
        r.string(top["description"], "description", "description", nonempty=False)
    schemas: dict[str, dict[str, Any]] = {}
    if "schemas" in top and (entries := r.mapping(top["schemas"], "schemas", None, "schemas")) is not None:
        for tool, snode in entries.items():
            if not isinstance(snode.value, dict):
                r.error(snode.pos, join_path("schemas", tool), f"the inputSchema of {tool!r} must be a mapping")
            else:
                schemas[tool] = snode.plain()
    cases: list[Case] = []
    if "tests" in top:
        cases = _read_cases(r, top["tests"])
    if policy is None:
        return None
    return SuiteFile(path, r.file, policy, tuple(rego), read_context(r, top, ""), schemas, tuple(cases))


def _read_path(r: Reader, node: Node, key: str, base: Path, what: str) -> Path | None:
    text = r.string(node, key, what)
    if text is None:
        return None
    target = base / text
    if not target.exists():
        r.error(node.pos, key, f"{what} {text!r} does not exist (paths are relative to the test file)")
        return None
    return target


def _read_cases(r: Reader, node: Node) -> list[Case]:
    if not isinstance(node.value, list) or not node.value:
        r.error(node.pos, "tests", "tests must be a non-empty list of cases")
        return []
    cases: list[Case] = []
    names: dict[str, int] = {}
    for i, cnode in enumerate(node.value):
        path = f"tests[{i}]"
        entries = r.mapping(cnode, path, CASE_KEYS, "a test case")
        if entries is None:
            continue
        name = None
        if "name" not in entries:
            r.error(cnode.pos, path, "a test case needs `name:`")
        else:
            name = r.string(entries["name"], join_path(path, "name"), "the case name")
            if name is not None and name in names:
                r.error(entries["name"].pos, join_path(path, "name"),
                        f"duplicate case name {name!r} (also tests[{names[name]}])", "case names identify failures")
            elif name is not None:
                names[name] = i
        steps: list[Step] = []
        if "steps" in entries:
            for k in ("call", "expect", "repeat"):
                if k in entries:
                    r.error(entries[k].pos, join_path(path, k), f"a case with `steps:` takes no `{k}:` of its own",
                            "move it into a step")
            snode = entries["steps"]
            if not isinstance(snode.value, list) or not snode.value:
                r.error(snode.pos, join_path(path, "steps"), "steps must be a non-empty list")
            else:
                for j, step in enumerate(snode.value):
                    steps.extend(_read_step(r, step, f"{path}.steps[{j}]"))
        elif "call" in entries:
            steps.extend(_read_call_step(r, cnode, entries, path))
        else:
            r.error(cnode.pos, path, "a test case needs `call:` and `expect:`, or `steps:`")
        context = read_context(r, entries, path)
        if name is not None and steps:
            cases.append(Case(name, cnode.pos.line, tuple(steps), context))
    return cases


def _read_step(r: Reader, node: Node, path: str) -> list[Step]:
    entries = r.mapping(node, path, STEP_KEYS, "a step")
    if entries is None:
        return []
    if "advance" in entries:
        for k in entries:
            if k != "advance":
                r.error(entries[k].pos, join_path(path, k), f"an `advance:` step takes no `{k}:`")
        anode = entries["advance"]
        if not is_number(anode.value) or not math.isfinite(anode.value) or anode.value <= 0:
            r.error(anode.pos, join_path(path, "advance"),
                    f"advance must be a positive number of seconds, got {anode.value!r}")
            return []
        return [Advance(float(anode.value), node.pos.line)]
    if "call" not in entries:
        r.error(node.pos, path, "a step needs `call:` and `expect:`, or `advance: SECONDS`")
        return []
    return _read_call_step(r, node, entries, path)


def _read_call_step(r: Reader, node: Node, entries: dict[str, Node], path: str) -> list[Step]:
    n_errors = len(r.errors)
    expect = None
    if "expect" not in entries:
        r.error(node.pos, path, "a call needs `expect:` (allow, deny, require_approval, or {decision, rule, ...})")
    else:
        expect = read_expect(r, entries["expect"], join_path(path, "expect"))
    repeat = 1
    if "repeat" in entries:
        rnode = entries["repeat"]
        if not isinstance(rnode.value, int) or isinstance(rnode.value, bool) or not 1 <= rnode.value <= MAX_REPEAT:
            r.error(rnode.pos, join_path(path, "repeat"), f"repeat must be an integer from 1 to {MAX_REPEAT}")
        else:
            repeat = rnode.value
    cpath = join_path(path, "call")
    cnode = entries["call"]
    call = r.mapping(cnode, cpath, CALL_KEYS, "a call")
    if call is None:
        return []
    tool = None
    if "tool" not in call:
        r.error(cnode.pos, cpath, "a call needs `tool:`")
    else:
        tool = r.string(call["tool"], join_path(cpath, "tool"), "the tool name")
    args: dict[str, Any] = {}
    if "args" in call:
        anode = call["args"]
        if isinstance(anode.value, dict):
            args = anode.plain()
        elif anode.kind != "null":
            r.error(anode.pos, join_path(cpath, "args"), f"args must be a mapping, not a {anode.kind}")
    extra: dict[str, Any] = {}
    if "schema" in call:
        snode = call["schema"]
        if snode.kind not in ("mapping", "null"):
            r.error(snode.pos, join_path(cpath, "schema"),
                    f"schema must be the tool's inputSchema (a mapping) or null, not a {snode.kind}")
        extra["schema"] = snode.plain()
    if "approved" in call:
        onode = call["approved"]
        if not isinstance(onode.value, bool):
            r.error(onode.pos, join_path(cpath, "approved"),
                    f"approved must be true or false (the call as a person approved it), not a {onode.kind}")
        else:
            extra["approved"] = onode.value
    context = read_context(r, call, cpath)
    if len(r.errors) != n_errors or tool is None or expect is None:
        return []
    return [Call(tool, args, expect, node.pos.line, repeat, context, **extra)]
