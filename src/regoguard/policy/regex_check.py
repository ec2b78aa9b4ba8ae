"""Regular expressions that mean the same under OPA (Go RE2) and regopy (C++ std::regex).

A policy regex runs in our engine today and in OPA tomorrow, so we accept only the common subset, and we
refuse patterns whose backtracking can explode (``(a+)+``): std::regex backtracks, RE2 does not.
A leading ``(?i)`` (RE2 syntax that std::regex rejects) is rewritten into character classes.
"""

from __future__ import annotations

import re

# The stdlib regex parser is the only full regex parser at hand; it ships no type stubs.
import re._constants as sre_c  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]

_UNPORTABLE: list[tuple[str, str]] = [
    (r"\(\?[=!]", "look-ahead is not supported by OPA's RE2"),
    (r"\(\?<[=!]", "look-behind is not supported by OPA's RE2"),
    (r"\\[1-9]", "back-references are not supported by OPA's RE2"),
    (r"\\[AzZ]", r"\A, \z and \Z are not portable; use ^ and $"),
    (r"\(\?P?<", "named groups are not portable; use a plain group"),
    (r"\(\?[a-zA-Z]", "inline flags are not portable (only a leading (?i) is translated)"),
    (r"[*+?}][+]", "possessive quantifiers are not portable"),
    (r"\\[pP]", r"\p{...} classes are not portable"),
]


class RegexProblem(ValueError):
    """Why a pattern cannot be used, in words meant for the policy author."""


def _escaped_spans(pattern: str) -> str:
    """The pattern with every escaped character blanked out, so checks do not see ``\\(`` as ``(``."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            out.append("\\" + (pattern[i + 1] if pattern[i + 1] in "123456789AzZpP" else "_"))
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def _fold_case(pattern: str) -> str:
    """Rewrite a case-insensitive pattern body so that each letter matches both cases."""
    out: list[str] = []
    i = 0
    in_class = False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
                out.append(ch)
            elif i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
                lo, hi = ch, pattern[i + 2]
                out.append(f"{lo}-{hi}")
                if lo.isalpha() and hi.isalpha() and lo.islower() == hi.islower():
                    out.append(f"{lo.swapcase()}-{hi.swapcase()}")
                i += 3
                continue
            else:
                out.append(ch + (ch.swapcase() if ch.isalpha() and ch.swapcase() != ch else ""))
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            if pattern[i + 1 : i + 2] == "^":
                out.append("^")
                i += 1
            if pattern[i + 1 : i + 2] == "]":
                out.append("]")
                i += 1
        elif ch.isalpha() and ch.swapcase() != ch and not _in_quantifier_braces(pattern, i):
            out.append(f"[{ch}{ch.swapcase()}]")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _in_quantifier_braces(pattern: str, i: int) -> bool:
    start = pattern.rfind("{", 0, i)
    return start != -1 and "}" not in pattern[start:i] and re.fullmatch(r"\{[\d,]*", pattern[start:i]) is not None


def _has_nested_unbounded(tree: sre_parse.SubPattern, inside_repeat: bool = False) -> bool:
    for op, av in tree:
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
            _low, high, sub = av
            unbounded = high is sre_c.MAXREPEAT or high > 1
            if unbounded and inside_repeat and high is sre_c.MAXREPEAT:
                return True
            if _has_nested_unbounded(sub, inside_repeat or unbounded):
                return True
        else:
            children = [av[-1]] if op == sre_c.SUBPATTERN else av[1] if op == sre_c.BRANCH else []
            if any(_has_nested_unbounded(child, inside_repeat) for child in children):
                return True
    return False


def portable_regex(pattern: str) -> str:
    """Check ``pattern`` and return the form to emit (``(?i)`` translated).

    Raises:
        RegexProblem: the pattern is invalid, unportable or can backtrack exponentially.
    """
    body = pattern
    fold = False
    if body.startswith("(?i)"):
        body = body[4:]
        fold = True
    plain = _escaped_spans(body)
    for rx, why in _UNPORTABLE:
        if re.search(rx, plain):
            raise RegexProblem(why)
    try:
        tree = sre_parse.parse(body)
    except re.error as exc:
        raise RegexProblem(f"invalid regular expression: {exc}") from exc
    if _has_nested_unbounded(tree):
        raise RegexProblem(
            "nested unbounded quantifiers (like (a+)+) can take exponential time; rewrite without nesting"
        )
    body = _fold_case(body) if fold else body
    return _trim_dot_star(body)


def _trim_dot_star(pattern: str) -> str:
    """Drop a leading ``.*`` / trailing ``.*`` from an unanchored pattern: ``regex.match`` searches, so
    they change nothing but the time std::regex takes (quadratic in the subject's length)."""
    while pattern.startswith(".*") and not pattern.startswith(".*?") and "|" not in pattern:
        pattern = pattern[2:]
    while (pattern.endswith(".*") and not pattern.endswith("\\.*") and "|" not in pattern
           and len(pattern) > 2):
        pattern = pattern[:-2]
    return pattern or ".*"


def glob_to_regex(glob: str) -> str:
    """An anchored, portable regex matching exactly the strings the glob matches (``*``, ``?``, ``[...]``)."""
    out = ["^"]
    i = 0
    while i < len(glob):
        ch = glob[i]
        if ch == "*":
            while i + 1 < len(glob) and glob[i + 1] == "*":
                i += 1
            out.append("[\\s\\S]*")
        elif ch == "?":
            out.append("[\\s\\S]")
        elif ch == "[":
            end = glob.find("]", i + 2 if glob[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end == -1:
                out.append("\\[")
            else:
                body = glob[i + 1 : end]
                neg = body[:1] in ("!", "^")
                if neg:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("]", "\\]")
                out.append("[" + ("^" if neg else "") + body + "]")
                i = end
        else:
            out.append(re.escape(ch) if not ch.isalnum() and ch != "_" else ch)
        i += 1
    out.append("$")
    return "".join(out)
