"""How long a regex can take in rego-cpp's backtracking ``std::regex`` search, as a bound in the
subject's length: what lets the engine decide a call with regexes inline, with no timeout, when the
call's own strings make the bound small.

Measured on regopy 1.5.2 (a step is 6-40 ns here, groups and ``\\b`` the dearest):
- ``a*a*b`` against 1,000 ``a`` takes 6.3 s and against 2,000 52 s (cubic);
- ``x+y`` against 8,000 ``x`` takes 1.3 s (quadratic);
- ``^[a-z]+$`` against 65,000 characters takes 10 ms and ``\\.\\.`` 2 ms (linear);
- ``^(a|\\w)(a|\\w)…x`` (26 groups) against 26 ``a`` takes 1.3 s: every group tries both branches;
- ``(\\b){1000}x`` against 3,845 characters takes 0.17 s: a count expands into that many states.

The loader refuses nested unbounded repetition (exponential). This module claims a bound only for the
plain shapes policies are made of, and gives None for everything else (the call goes to the worker pool,
behind the timeout):

- no ``|`` inside a group (the parser merges one-character branches into a set and factors out common
  prefixes, so the tree can hide branches std::regex still tries one by one); a ``|`` at the top level
  counts once per branch;
- no word boundary, backreference or lookaround; no varying repetition of something that itself matches
  in several ways (``(a?)*``);
- at most :data:`MAX_STATES` states once counts are expanded (``a{1000}`` is a thousand).

For those, every varying repetition can try each of up to n+1 counts and an unanchored search each of
n+1 starting points, so a search takes at most ``factor * (n + 1) ** degree`` attempts of the pattern's
expanded states, plus a pass over the subject.
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
MAX_STATES = 256
"""The largest pattern, in states with its counts expanded, that may be decided inline."""
_BIG = 10**9
_GROUP_STATES = 2  # a group's entry and exit


@dataclass(frozen=True)
class Cost:
    """``steps(n) <= n + factor * (n + 1) ** degree * length`` for a subject of n bytes."""

    degree: int
    factor: int
    length: int
    """The pattern's states, counts expanded (plus one)."""

    def steps(self, n: int) -> int:
        return int(n + self.factor * (n + 1) ** self.degree * self.length)


_ONE_CHAR = frozenset({sre_c.LITERAL, sre_c.NOT_LITERAL, sre_c.ANY, sre_c.IN, sre_c.CATEGORY})
_REPEATS = frozenset({sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT})
_ANCHORS = frozenset({sre_c.AT_BEGINNING, sre_c.AT_BEGINNING_STRING, sre_c.AT_END, sre_c.AT_END_STRING})


@dataclass(frozen=True)
class _Walked:
    degree: int
    factor: int
    states: int
    variable: bool
    """It can match in more than one way (a repetition of varying count, or an alternation)."""


def _walk(seq: Any) -> _Walked | None:
    """The bound of a sequence of items, or None when it cannot be bounded here."""
    degree, factor, states, variable = 0, 1, 0, False
    for op, av in seq:
        inner: _Walked | None
        if op in _ONE_CHAR:
            inner = _Walked(0, 1, 1, False)
        elif op == sre_c.AT:
            if av not in _ANCHORS:  # \b, \B: dear in std::regex, and nothing a policy needs inline
                return None
            inner = _Walked(0, 1, 1, False)
        elif op == sre_c.SUBPATTERN:
            body = _walk(av[-1])
            inner = None if body is None else _Walked(body.degree, body.factor, body.states + _GROUP_STATES,
                                                      body.variable)
        elif op == sre_c.BRANCH:  # only at the top level (a | inside a group is refused before the walk)
            parts = [_walk(b) for b in av[1]]
            if any(p is None for p in parts):
                return None
            inner = _Walked(max(p.degree for p in parts if p), sum(p.factor for p in parts if p),
                            sum(p.states for p in parts if p), True)
        elif op in _REPEATS:
            low, high, sub = av
            body = _walk(sub)
            if body is None:
                return None
            if low == high:  # a fixed count: the body, that many times over
                inner = _Walked(body.degree * low, body.factor ** low, body.states * low, body.variable)
            elif body.variable:
                return None  # a varying repetition of something that itself matches in several ways: (a?)*
            elif high is sre_c.MAXREPEAT:
                inner = _Walked(body.degree + 1, body.factor, body.states * max(low, 1) + 1, True)
            else:
                inner = _Walked(body.degree, body.factor * (high - low + 1), body.states * high + 1, True)
        else:  # backreferences, lookarounds, conditionals: no bound claimed
            return None
        if inner is None:
            return None
        degree, factor = degree + inner.degree, factor * inner.factor
        states, variable = states + inner.states, variable or inner.variable
        if factor > _BIG or degree > 8 or states > MAX_STATES:
            return None
    return _Walked(degree, factor, states, variable)


def _bars(pattern: str) -> tuple[bool, bool]:
    """(a ``|`` stands inside a group, a group holding a ``|`` (itself or in a group inside it) is followed
    by a quantifier), reading the text: a ``|`` in a class or escaped is a character."""
    groups: list[bool] = []  # per open group: holds a |
    in_group = False
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
            groups[-1] = in_group = True
        elif ch == ")" and groups:
            has_bar = groups.pop()
            if has_bar and i + 1 < n and pattern[i + 1] in "*+?{":
                return True, True
            if has_bar and groups:
                groups[-1] = True
        i += 1
    return in_group, False


def _tree(pattern: str) -> Any:
    """The parsed pattern, or None when it does not parse (the loader says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None


def search_cost(pattern: str) -> Cost | None:
    """The worst-case bound of ``regex.match(pattern, s)`` (a search) in rego-cpp, or None."""
    tree = None if _bars(pattern)[0] else _tree(pattern)
    if tree is None:
        return None
    walked = _walk(tree)
    if walked is None:
        return None
    # the parser may have merged top-level branches into a set: count each written alternative
    branches = 1 + pattern.count("|")
    items = list(tree)
    anchored = bool(items) and items[0] == (sre_c.AT, sre_c.AT_BEGINNING) and "(?m" not in pattern
    return Cost(walked.degree if anchored else walked.degree + 1, walked.factor * branches, walked.states + 1)


def may_backtrack_exponentially(pattern: str) -> bool:
    """True for the shapes whose backtracking grows exponentially with the subject (what ``check`` warns
    about): a repeated group holding a ``|`` (``(a|ab)*``, ``(.|\\s)*``), or a repetition of something that
    itself matches in several ways (``(a?)*``, ``(a?){40}``)."""
    if _bars(pattern)[1]:
        return True
    tree = _tree(pattern)
    return tree is not None and _repeats_a_choice(tree)[0]


def _repeats_a_choice(seq: Any) -> tuple[bool, bool]:
    """(a repetition of a choice is in ``seq``, ``seq`` itself holds a choice: a branch or a varying count)."""
    found, choice = False, False
    for op, av in seq:
        if op == sre_c.SUBPATTERN:
            f, c = _repeats_a_choice(av[-1])
        elif op == sre_c.BRANCH:
            parts = [_repeats_a_choice(b) for b in av[1]]
            f, c = any(p[0] for p in parts), True
        elif op in _REPEATS:
            low, high, sub = av
            f, c = _repeats_a_choice(sub)
            f = f or (c and (low != high or low > 16))
            c = c or low != high
        else:
            continue
        found, choice = found or f, choice or c
    return found, choice


def subject_bytes(s: str) -> int:
    """The length std::regex sees: UTF-8 bytes."""
    return len(s) if s.isascii() else len(s.encode("utf-8"))
