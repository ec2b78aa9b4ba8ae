"""How long a regex can take in rego-cpp's backtracking ``std::regex`` search, as a bound in the
subject's length: what lets the engine decide a call with regexes inline, with no timeout, when the
call's own strings make the bound small.

Measured on regopy 1.5.2 (one step is ~40 ns here): ``a*a*b`` against 1,000 ``a`` takes 6.3 s and
against 2,000 takes 52 s (cubic); ``x+y`` against 8,000 ``x`` takes 1.3 s (quadratic); ``^[a-z]+$``
against 65,000 characters takes 10 ms and ``\\.\\.`` 2 ms (linear). The loader already refuses nested
unbounded repetition (exponential); this bounds the polynomial rest.

The bound, for a pattern with no backreference or lookaround: every variable repetition can try each
of up to n+1 counts, each alternation each of its branches, and an unanchored search each of n+1
starting points, so a search takes at most ``factor * (n + 1) ** degree`` attempts of the pattern's
length, plus a pass over the subject. Anything the walk cannot bound is None (the call goes to the
worker pool, behind the timeout).
"""

from __future__ import annotations

import re

# The stdlib regex parser is the only full regex parser at hand; it ships no type stubs.
import re._constants as sre_c  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
import warnings
from dataclasses import dataclass
from typing import Any

INLINE_BUDGET = 200_000
"""The most pattern steps a call's regexes may take, worst case, to be decided inline (~8 ms here)."""
_BIG = 10**9


@dataclass(frozen=True)
class Cost:
    """``steps(n) <= n + factor * (n + 1) ** degree * length`` for a subject of n bytes."""

    degree: int
    factor: int
    length: int

    def steps(self, n: int) -> int:
        return int(n + self.factor * (n + 1) ** self.degree * self.length)


_ONE_CHAR = frozenset({sre_c.LITERAL, sre_c.NOT_LITERAL, sre_c.ANY, sre_c.IN, sre_c.CATEGORY, sre_c.AT})
_REPEATS = frozenset({sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT})


@dataclass(frozen=True)
class _Walked:
    degree: int
    factor: int
    variable: bool
    """It can match in more than one way (a repetition of varying count, or an alternation)."""


def _walk(seq: Any) -> _Walked | None:
    """The bound of a sequence of items, or None when it cannot be bounded here."""
    degree, factor, variable = 0, 1, False
    for op, av in seq:
        if op in _ONE_CHAR:
            continue
        inner: _Walked | None
        if op == sre_c.SUBPATTERN:
            inner = _walk(av[-1])
        elif op == sre_c.BRANCH:
            parts = [_walk(b) for b in av[1]]
            if any(p is None for p in parts):
                return None
            inner = _Walked(max(p.degree for p in parts if p), sum(p.factor for p in parts if p), True)
        elif op in _REPEATS:
            low, high, sub = av
            body = _walk(sub)
            if body is None:
                return None
            if low == high:  # a fixed count: the body, that many times over
                inner = _Walked(body.degree * low, body.factor ** low, body.variable)
            elif body.variable:
                return None  # a varying repetition of something that itself matches in several ways: (a?)*
            elif high is sre_c.MAXREPEAT:
                inner = _Walked(body.degree + 1, body.factor, True)
            else:
                inner = _Walked(body.degree, body.factor * (high - low + 1), True)
        else:  # backreferences, lookarounds, conditionals: no bound claimed
            return None
        if inner is None:
            return None
        degree, factor, variable = degree + inner.degree, factor * inner.factor, variable or inner.variable
        if factor > _BIG or degree > 8:
            return None
    return _Walked(degree, factor, variable)


def _quantified_alternation(pattern: str) -> bool:
    """True when a group holding a ``|`` is repeated (``(a|b)*``, ``(\\w|\\d){40}``). The parser merges
    one-character branches into a set and factors out common prefixes, so such a group can look like
    one class to the walk, while std::regex still backtracks through every branch on every repetition."""
    groups: list[bool] = []  # per open group: holds a | (itself or in a group inside it)
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":  # a class: | and parentheses inside it are characters
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            if i < n and pattern[i] == "]":
                i += 1
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
        elif ch == "(":
            groups.append(False)
        elif ch == "|" and groups:
            groups[-1] = True
        elif ch == ")" and groups:
            has_bar = groups.pop()
            if has_bar and i + 1 < n and pattern[i + 1] in "*+?{":
                return True
            if has_bar and groups:
                groups[-1] = True
        i += 1
    return False


def search_cost(pattern: str) -> Cost | None:
    """The worst-case bound of ``regex.match(pattern, s)`` (a search) in rego-cpp, or None."""
    if _quantified_alternation(pattern):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            tree = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None
    walked = _walk(tree)
    if walked is None:
        return None
    # the parser may have merged branches into sets: count each written alternative as a way to try
    branches = 1 + pattern.count("|")
    items = list(tree)
    anchored = bool(items) and items[0] == (sre_c.AT, sre_c.AT_BEGINNING) and "(?m" not in pattern
    return Cost(walked.degree if anchored else walked.degree + 1, walked.factor * branches, len(pattern) + 1)


def subject_bytes(s: str) -> int:
    """The length std::regex sees: UTF-8 bytes."""
    return len(s) if s.isascii() else len(s.encode("utf-8"))
