"""Request ids as the bytes that carry them: find an ``"id"`` member in a message's text, and put another
value in its place, leaving every other byte as it was.

The relay owns the upstream id space: each request it forwards goes out under an id the proxy chose, and
the answer goes back under the client's id exactly as the client wrote it (``1.0``, ``1e2``, a 30-digit
integer, ``"\\u0061"``), so no parser on either side ever has to agree with ours about what an id means.

Spans are found with the standard library's C scanner: the top level of the message is walked member by
member, and each value is skipped with ``raw_decode`` (numbers and objects are not built), so finding an
id costs about as much as one more parse of what precedes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from json.decoder import scanstring  # type: ignore[attr-defined]  # public since 2.6, not in typeshed
from typing import Any

from regoguard.proxy.jsonrpc import loads

_WS = re.compile(r"[ \t\n\r]*")


def _skip_ws(text: str, i: int) -> int:
    return _WS.match(text, i).end()  # type: ignore[union-attr]  # matches the empty string too

# Skips a value without building it: numbers, constants and objects become cheap placeholders.
_SKIPPER = json.JSONDecoder(
    parse_int=lambda _s: 0, parse_float=lambda _s: 0.0, parse_constant=lambda _s: 0,
    object_pairs_hook=lambda _p: None,
)


class NoSpan(ValueError):
    """The text is not an object whose top level can be walked."""


def members(text: str, start: int = 0) -> Iterator[tuple[str, int, int]]:
    """The top-level members of the object that begins at ``start`` (after optional whitespace), as
    ``(name, value begin, value end)``, in order, names decoded (``"\\u0069d"`` is ``id``).

    Raises:
        NoSpan: ``text`` holds no well-formed object at ``start`` (raised when the walk reaches the fault).
    """
    try:
        i = _skip_ws(text, start)
        if text[i:i + 1] != "{":
            raise NoSpan("not an object")
        i = _skip_ws(text, i + 1)
        if text[i:i + 1] == "}":
            return
        while True:
            if text[i:i + 1] != '"':
                raise NoSpan("expected a member name")
            name, i = scanstring(text, i + 1, True)
            i = _skip_ws(text, i)
            if text[i:i + 1] != ":":
                raise NoSpan("expected ':'")
            begin = _skip_ws(text, i + 1)
            _, end = _SKIPPER.raw_decode(text, begin)
            yield name, begin, end
            i = _skip_ws(text, end)
            sep = text[i:i + 1]
            if sep == "}":
                return
            if sep != ",":
                raise NoSpan("expected ',' or '}'")
            i = _skip_ws(text, i + 1)
    except NoSpan:
        raise
    except (ValueError, RecursionError) as exc:
        raise NoSpan(str(exc)) from exc


def member_span(text: str, key: str, start: int = 0) -> tuple[int, int] | None:
    """The ``[begin, end)`` character span of the value of top-level member ``key`` of the object that
    begins at ``start``, or None when it has no such member.

    Raises:
        NoSpan: ``text`` holds no well-formed object at ``start`` before the member is reached.
    """
    for name, begin, end in members(text, start):
        if name == key:
            return begin, end
    return None


def element_spans(text: str) -> list[tuple[int, int]]:
    """The character spans of the elements of the JSON array ``text`` (a batch).

    Raises:
        NoSpan: ``text`` is not a well-formed array.
    """
    spans: list[tuple[int, int]] = []
    try:
        i = _skip_ws(text, 0)
        if text[i:i + 1] != "[":
            raise NoSpan("not an array")
        i = _skip_ws(text, i + 1)
        if text[i:i + 1] == "]":
            return spans
        while True:
            _, end = _SKIPPER.raw_decode(text, i)
            spans.append((i, end))
            i = _skip_ws(text, end)
            sep = text[i:i + 1]
            if sep == "]":
                return spans
            if sep != ",":
                raise NoSpan("expected ',' or ']'")
            i = _skip_ws(text, i + 1)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, NoSpan):
            raise
        raise NoSpan(str(exc)) from exc


def splice(text: str, spans: list[tuple[int, int]], parts: list[str | None]) -> str:
    """A batch rebuilt from its entries: ``parts[i]`` replaces the entry at ``spans[i]`` (None drops it).
    With nothing dropped, whatever lay between the entries is kept as it was."""
    if all(part is not None for part in parts):
        out: list[str] = []
        last = 0
        for (begin, end), part in zip(spans, parts, strict=True):
            out += (text[last:begin], part or "")
            last = end
        out.append(text[last:])
        return "".join(out)
    return "[" + ",".join(part for part in parts if part is not None) + "]"


# Fast paths for where ids usually stand, valid only on text that already parsed strictly (no duplicate
# keys, so the first top-level "id" is the id): first or after "jsonrpc" (most clients), or last with an
# integer value (servers that write the result first). Anything else takes the member walk.
_WSC = "[ \t\n\r]*"
_HEAD = re.compile(_WSC + r'\{' + _WSC + r'(?:"jsonrpc"' + _WSC + ":" + _WSC + r'"2\.0"' + _WSC + "," + _WSC + r")?"
                   r'"id"' + _WSC + ":" + _WSC + r'(-?(?:0|[1-9][0-9]*)|"(?:[^"\\\x00-\x1f]|\\.)*")' + _WSC + "[,}]")
_TAIL = re.compile("[,{]" + _WSC + '"id"' + _WSC + ":" + _WSC + "(-?(?:0|[1-9][0-9]*))" + _WSC + r"\}" + _WSC
                   + r"\Z")
_TAIL_WINDOW = 96


def id_span(text: str) -> tuple[int, int] | None:
    """The span of the id's value in the message object ``text`` (which parsed strictly), or None."""
    head = _HEAD.match(text)
    if head is not None:
        return head.span(1)
    start = max(0, len(text) - _TAIL_WINDOW)
    tail = _TAIL.search(text, start)
    if tail is not None:
        return tail.span(1)
    return member_span(text, "id")


def raw_id(text: str) -> str | None:
    """The id of the message object ``text`` as written (its JSON text), or None without one."""
    span = id_span(text)
    return None if span is None else text[span[0]:span[1]]


def with_id(text: str, new_id: str) -> str:
    """``text`` (a message object holding an ``"id"`` member) with that member's value replaced by the JSON
    text ``new_id``; every other character is kept.

    Raises:
        NoSpan: ``text`` is not an object with an ``"id"`` member.
    """
    span = id_span(text)
    if span is None:
        raise NoSpan("the message has no id")
    return text[:span[0]] + new_id + text[span[1]:]


def _decoded(line: bytes, head: bool) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        if head and exc.reason == "unexpected end of data":  # the cut fell inside a character
            return line[:exc.start].decode("utf-8")
        raise


def salvage_id(line: bytes, head: bool = False) -> str | None:
    """The id of a message that could not be accepted (too deep, too long a number, a duplicate key
    elsewhere), read leniently so its error can name it; None when it cannot be read unambiguously.
    ``head``: ``line`` is only the start of the message (an oversize one), so an id running into its end
    may be cut short (``12`` of ``123``) and is not taken."""
    found: str | None = None
    try:
        text = _decoded(line, head)
        for name, begin, end in members(text):
            if name == "id":
                if found is not None:  # two ids: which one would a server read?
                    return None
                if head and text[_skip_ws(text, end):][:1] not in (",", "}"):
                    return None  # cut short, or followed by what would make it another number (1. of 1.5)
                found = text[begin:end]
    except (NoSpan, UnicodeDecodeError):
        if found is None:
            return None
    try:
        if found is None or found[:1] in "[{":
            return None
        loads(found.encode("utf-8"))  # strictly: no NaN, no overflowing number, no over-long digits
        return found
    except (ValueError, RecursionError):  # ParseError is a ValueError
        return None


def id_key(value: Any) -> tuple[str, Any]:
    """A hashable key under which two spellings of one id are the same id: numbers by value (``1``,
    ``1.0`` and ``1e0`` are one id, as a JavaScript client reads them), strings by their text, anything
    else by its canonical JSON."""
    if isinstance(value, bool) or value is None:
        return ("c", value)
    if isinstance(value, int | float):
        try:
            return ("n", Decimal(repr(value) if isinstance(value, float) else value).normalize())
        except InvalidOperation:
            return ("x", repr(value))
    if isinstance(value, str):
        return ("s", value)
    return ("j", json.dumps(value, sort_keys=True, ensure_ascii=True))
