"""Keep secrets out of the decision log: erase or mask arguments, or log only their hash.

Paths are JSON pointers into the call's arguments (``/card/number``) or bare key names (``password``,
matched at any depth, case-insensitively). Every erased or masked path is listed on the event, as OPA's
decision log does (``erased``, ``masked``), prefixed ``/input/tool/arguments``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Key names holding one of these (ignoring case, "-" and "_") are masked too: db_password, github_token,
# Proxy-Authorization, x-api-key.
SENSITIVE_WORDS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "authorization", "cookie",
                   "privatekey", "credential")

DEFAULT_SENSITIVE_KEYS = (
    "password", "passwd", "passphrase", "secret", "client_secret", "token", "access_token", "refresh_token",
    "id_token", "api_key", "apikey", "x-api-key", "authorization", "auth", "cookie", "set-cookie",
    "private_key", "session_token", "credentials", "credit_card", "card_number", "cvv", "ssn",
)
MASK = "***"
ARGS_POINTER = "/input/tool/arguments"


@dataclass(frozen=True)
class MaskingRules:
    erase: tuple[str, ...] = ()
    mask: tuple[str, ...] = ()
    default_keys: tuple[str, ...] = DEFAULT_SENSITIVE_KEYS
    hash_arguments: bool = False
    _keys: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self) -> None:
        keys = {k.lower() for k in (*self.mask, *self.default_keys) if not k.startswith("/")}
        object.__setattr__(self, "_keys", frozenset(keys))


def _pointer(parts: list[str]) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _parse_pointer(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def _parent(tree: Any, parts: list[str]) -> tuple[Any, str | int] | None:
    """The container holding the pointer's target, and the target's key or index; None if absent."""
    if not parts:
        return None
    node = tree
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    last = parts[-1]
    if isinstance(node, dict) and last in node:
        return node, last
    if isinstance(node, list) and last.isascii() and last.isdigit() and int(last) < len(node):
        return node, int(last)
    return None


def _pop(tree: Any, parts: list[str]) -> bool:
    found = _parent(tree, parts)
    if found is not None:
        container, key = found
        del container[key]
    return found is not None


def _set(tree: Any, parts: list[str], value: Any) -> bool:
    found = _parent(tree, parts)
    if found is not None:
        container, key = found
        container[key] = value
    return found is not None


def _erase_keys(node: Any, names: frozenset[str], at: list[str], out: list[str]) -> None:
    if isinstance(node, dict):
        for key in list(node):
            if key.lower() in names:
                del node[key]
                out.append(ARGS_POINTER + _pointer([*at, key]))
            else:
                _erase_keys(node[key], names, [*at, key], out)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _erase_keys(item, names, [*at, str(i)], out)


def _sensitive(key: str, names: frozenset[str], words: tuple[str, ...]) -> bool:
    lowered = key.lower()
    if lowered in names:
        return True
    compact = lowered.replace("-", "").replace("_", "")
    return any(w in compact for w in words)


def _mask_keys(node: Any, names: frozenset[str], at: list[str], out: list[str],
               words: tuple[str, ...] = ()) -> None:
    if isinstance(node, dict):
        for key in list(node):
            if _sensitive(key, names, words):
                node[key] = MASK
                out.append(ARGS_POINTER + _pointer([*at, key]))
            else:
                _mask_keys(node[key], names, [*at, key], out, words)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _mask_keys(item, names, [*at, str(i)], out, words)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _copy_masking_keys(node: Any, names: frozenset[str], at: tuple[str, ...], out: list[str],
                       words: tuple[str, ...]) -> Any:
    """What ``_mask_keys`` leaves of a deep copy of ``node``, made in one walk: objects and arrays are new,
    JSON scalars shared (they cannot change), anything else deep-copied."""
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            if _sensitive(key, names, words):
                result[key] = MASK
                out.append(ARGS_POINTER + _pointer([*at, key]))
            elif type(value) in _SCALARS:
                result[key] = value
            else:
                result[key] = _copy_masking_keys(value, names, (*at, key), out, words)
        return result
    if isinstance(node, list):
        return [item if type(item) in _SCALARS else _copy_masking_keys(item, names, (*at, str(i)), out, words)
                for i, item in enumerate(node)]
    return node if type(node) in _SCALARS else copy.deepcopy(node)


def mask_arguments(arguments: Any, rules: MaskingRules) -> tuple[Any, list[str], list[str]]:
    """Return (arguments as they may be logged, erased paths, masked paths). ``arguments`` is not changed."""
    if rules.hash_arguments:
        # surrogatepass: a lone surrogate (a cut-off emoji) is hashed as written, never an exception
        text = json.dumps(arguments, sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return {"sha256": digest}, [], [ARGS_POINTER]
    words = SENSITIVE_WORDS if rules.default_keys else ()
    if not rules.erase and not rules.mask:  # the usual case: copy and mask the keys in one walk
        masked: list[str] = []
        return _copy_masking_keys(arguments, rules._keys, (), masked, words), [], sorted(set(masked))
    tree = copy.deepcopy(arguments)
    erased: list[str] = []
    masked = []
    for path in rules.erase:
        if path.startswith("/"):
            if _pop(tree, _parse_pointer(path)):
                erased.append(ARGS_POINTER + path)
        else:
            _erase_keys(tree, frozenset({path.lower()}), [], erased)
    for path in rules.mask:
        if path.startswith("/") and _set(tree, _parse_pointer(path), MASK):
            masked.append(ARGS_POINTER + path)
    _mask_keys(tree, rules._keys, [], masked, words)
    return tree, sorted(set(erased)), sorted(set(masked))
