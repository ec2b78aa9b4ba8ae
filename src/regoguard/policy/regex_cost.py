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


def _walk(seq: Any) -> tuple[int, int] | None:
    """(degree, factor) of a sequence of items, or None when it cannot be bounded."""
    degree, factor = 0, 1
    for op, av in seq:
        if op in _ONE_CHAR:
            continue
        if op == sre_c.SUBPATTERN:
            inner = _walk(av[-1])
        elif op == sre_c.BRANCH:
            parts = [_walk(b) for b in av[1]]
            if any(p is None for p in parts):
                return None
            inner = (max(p[0] for p in parts if p), sum(p[1] for p in parts if p))
        elif op in _REPEATS:
            low, high, sub = av
            body = _walk(sub)
            if body is None or (body[0] > 0 and low != high):
                return None  # a variable repetition of something itself variable: not bounded here
            if low == high:  # a fixed count: the body, that many times over
                inner = (body[0] * low, body[1] ** low if body[1] > 1 else 1)
            elif high is sre_c.MAXREPEAT:
                inner = (body[0] + 1, body[1])
            else:
                inner = (body[0], body[1] * (high - low + 1))
        else:  # backreferences, lookarounds, conditionals: no bound claimed
            return None
        if inner is None:
            return None
        degree, factor = degree + inner[0], factor * inner[1]
        if factor > _BIG or degree > 8:
            return None
    return degree, factor


def search_cost(pattern: str) -> Cost | None:
    """The worst-case bound of ``regex.match(pattern, s)`` (a search) in rego-cpp, or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            tree = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None
    walked = _walk(tree)
    if walked is None:
        return None
    degree, factor = walked
    items = list(tree)
    anchored = bool(items) and items[0] == (sre_c.AT, sre_c.AT_BEGINNING) and "(?m" not in pattern
    return Cost(degree if anchored else degree + 1, factor, len(pattern) + 1)


def subject_bytes(s: str) -> int:
    """The length std::regex sees: UTF-8 bytes."""
    return len(s) if s.isascii() else len(s.encode("utf-8"))
