"""YAML to plain values, keeping each node's position and refusing duplicate keys.

PyYAML's ``compose`` gives us nodes with marks; we walk them ourselves so the loader can name the exact
line and column of any value. A duplicate key is an error: the second one would silently win.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml


@dataclass(frozen=True)
class Pos:
    line: int
    column: int


@dataclass
class Node:
    """A YAML value with its position; mappings keep key positions too."""

    value: Any  # str | int | float | bool | None | list[Node] | dict[str, Node]
    pos: Pos
    key_pos: dict[str, Pos] | None = None

    @property
    def kind(self) -> str:
        v = self.value
        if isinstance(v, dict):
            return "mapping"
        if isinstance(v, list):
            return "list"
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "boolean"
        if isinstance(v, int | float):
            return "number"
        return "string"

    def plain(self) -> Any:
        """The value with every position stripped."""
        if isinstance(self.value, dict):
            return {k: n.plain() for k, n in self.value.items()}
        if isinstance(self.value, list):
            return [n.plain() for n in self.value]
        return self.value


class YamlProblem(Exception):
    def __init__(self, message: str, pos: Pos) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


SMALLEST_NUMBER = 1e-307
"""The smallest magnitude, other than 0, a policy number may have (see ``_scalar``)."""

_constructor = yaml.constructor.SafeConstructor()
# libyaml's parser when PyYAML has it: 7x faster on a 1,000-tool policy, with the same marks.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _pos(node: yaml.Node) -> Pos:
    return Pos(node.start_mark.line + 1, node.start_mark.column + 1)


def _scalar(node: yaml.ScalarNode) -> Any:
    try:
        value = _constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:  # an unknown tag (!custom 5), a bad !!binary, ...
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlProblem(f"unsupported YAML value {node.value!r} ({node.tag}): {problem}", _pos(node)) from exc
    if isinstance(value, float) and not math.isfinite(value):
        raise YamlProblem(f"number {node.value!r} is not finite", _pos(node))
    if isinstance(value, float) and float(format(value, ".16g")) != value:
        # the embedded engine compares numbers to 16 significant digits (0.30000000000000004 == 0.3 there)
        shorter = float(format(value, ".16g"))
        advice = f"write it as {format(value, '.16g')}" if math.isfinite(shorter) else "write it with fewer digits"
        raise YamlProblem(f"number {node.value!r} has more significant digits than the embedded engine compares "
                          f"(16); {advice}", _pos(node))
    if isinstance(value, float) and abs(value) >= 2.0**63:
        # rego-cpp compares it with a call's integers through a double (9223372036854775807 >= 2**63 there)
        raise YamlProblem(f"number {node.value!r} is beyond the 64 bits the embedded engine compares exactly with "
                          "a call's integers; write a smaller limit, or a whole number in full", _pos(node))
    if isinstance(value, float) and value != 0 and abs(value) < SMALLEST_NUMBER:
        # rego-cpp reads number literals with std::stod, which fails on magnitudes below about 2.3e-308:
        # every query of a bundle holding one would be an engine error
        raise YamlProblem(f"number {node.value!r} is smaller than the embedded engine can read; write 0 or a "
                          f"number of magnitude at least {SMALLEST_NUMBER:g}", _pos(node))
    if not isinstance(value, str | int | float | bool) and value is not None:
        raise YamlProblem(
            f"unsupported YAML value {node.value!r} ({type(value).__name__}); quote it to make it a string",
            _pos(node),
        )
    return value


def _convert(node: yaml.Node) -> Node:
    if isinstance(node, yaml.ScalarNode):
        return Node(_scalar(node), _pos(node))
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(item) for item in node.value], _pos(node))
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Node] = {}
        key_pos: dict[str, Pos] = {}
        merged: dict[str, tuple[Node, Pos]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                for source in _merge_sources(value_node):
                    converted = _convert(source)
                    assert isinstance(converted.value, dict)
                    for k, v in converted.value.items():
                        merged.setdefault(k, (v, (converted.key_pos or {}).get(k, v.pos)))  # first source wins
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlProblem("mapping keys must be plain strings", _pos(key_node))
            key = key_node.value if key_node.tag == "tag:yaml.org,2002:str" else _scalar(key_node)
            if not isinstance(key, str):
                raise YamlProblem(f"mapping key {key_node.value!r} must be a string; quote it", _pos(key_node))
            if key in out:
                first = key_pos[key]
                raise YamlProblem(
                    f"duplicate key {key!r} (first defined at line {first.line}, column {first.column})",
                    _pos(key_node),
                )
            out[key] = _convert(value_node)
            key_pos[key] = _pos(key_node)
        for k, (v, pos) in merged.items():  # keys written out override merged ones, as YAML says
            if k not in out:
                out[k] = v
                key_pos[k] = pos
        return Node(out, _pos(node), key_pos)
    raise YamlProblem(f"unsupported YAML node {type(node).__name__}", _pos(node))


def _merge_sources(node: yaml.Node) -> list[yaml.MappingNode]:
    """What a ``<<`` key merges: one mapping, or a list of them."""
    if isinstance(node, yaml.MappingNode):
        return [node]
    if isinstance(node, yaml.SequenceNode) and all(isinstance(n, yaml.MappingNode) for n in node.value):
        return list(node.value)
    raise YamlProblem("a merge key (<<) takes a mapping or a list of mappings", _pos(node))


def parse(text: str) -> Node | None:
    """Parse one YAML document into a :class:`Node` tree (None for an empty document).

    Raises:
        YamlProblem: on a syntax error, a duplicate key, an alias-bomb or a value we do not accept.
    """
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Pos(mark.line + 1, mark.column + 1) if mark else Pos(1, 1)
        raise YamlProblem(f"YAML syntax error: {exc.problem or exc}", pos) from exc
    except yaml.YAMLError as exc:
        raise YamlProblem(f"YAML error: {exc}", Pos(1, 1)) from exc
    if root is None:
        return None
    _check_aliases(root)
    try:
        return _convert(root)
    finally:  # the constructor memoises every node it built: without this, each (re)load would keep them
        _constructor.constructed_objects.clear()
        _constructor.recursive_objects.clear()


MAX_EXPANDED_NODES = 2_000_000
"""What aliases may add to a file's own nodes: about what a policy written out at the 4 MiB file limit
holds, so a policy that shares a block between thousands of tools loads, and a bomb does not."""
MAX_EXPANDED_BYTES = 8 * 1024 * 1024
"""What aliases may add to a file's own scalar text (one long string aliased many times is a bomb too)."""
MAX_DEPTH = 100
"""How deeply a policy may nest (a policy needs a handful of levels; the loader is recursive)."""


def _check_aliases(root: yaml.Node) -> None:
    """Anchors and aliases are accepted, but what they add is bounded: a "billion laughs" file (a few lines
    whose aliases nest into millions of nodes, or one long string aliased a million times) is refused,
    naming the first node that blows up. A large policy written out without aliases is not: only what the
    aliases add to the file's own nodes and text counts."""
    sizes: dict[int, tuple[int, int]] = {}  # id -> (nodes, scalar bytes) once expanded
    order: list[yaml.Node] = []
    stack: list[tuple[yaml.Node, bool, int]] = [(root, False, 1)]
    on_path: set[int] = set()
    while stack:  # sizes bottom-up, without recursion (an aliased node is sized once)
        node, done, depth = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not done:
            if id(node) in on_path:
                raise YamlProblem("a YAML alias refers to a node that contains it", _pos(node))
            if depth > MAX_DEPTH:
                raise YamlProblem(f"the policy nests deeper than {MAX_DEPTH} levels", _pos(node))
            on_path.add(id(node))
            stack.append((node, True, depth))
            stack.extend((c, False, depth + 1) for c in children if id(c) not in sizes)
            continue
        on_path.discard(id(node))
        own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
        sizes[id(node)] = (1 + sum(sizes[id(c)][0] for c in children), own + sum(sizes[id(c)][1] for c in children))
        order.append(node)
    node_limit = len(sizes) + MAX_EXPANDED_NODES  # the file's own nodes, and what aliases may add to them
    byte_limit = sum(len(n.value) for n in order if isinstance(n, yaml.ScalarNode)) + MAX_EXPANDED_BYTES
    for node in order:  # bottom-up: the first node past a limit is where the expansion blows up
        nodes, text = sizes[id(node)]
        if nodes > node_limit:
            raise YamlProblem(f"this policy's anchors and aliases expand to more than {MAX_EXPANDED_NODES:,} "
                              "nodes beyond the file's own (a YAML bomb?)", _pos(node))
        if text > byte_limit:
            raise YamlProblem(f"this policy's anchors and aliases expand to more than {MAX_EXPANDED_BYTES:,} "
                              "bytes of text beyond the file's own (a YAML bomb?)", _pos(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []
