"""Regular expressions that mean the same under OPA (Go RE2) and regopy (C++ std::regex).

A policy regex runs in our engine today and in OPA tomorrow, so it must decide alike in both. The two
differ in ways that matter for a security rule, and each difference is handled here in one of three ways:

- **refused** at load (``RegexProblem``, reported by the loader at the pattern's file:line:column): syntax
  one engine lacks or reads differently (look-around, back-references, ``\\xHH``, ``\\a``, ``\\u``,
  ``[\\b]``, ``[:^alpha:]``, ``[[.a.]]``, ``a{,3}``, counts above 1000), ``(?i)`` with non-ASCII
  letters, non-ASCII inside a negated class or a range, and nested unbounded quantifiers such as
  ``(a+)+`` (std::regex backtracks exponentially, RE2 does not);
- **translated** into a form both engines read alike: a leading ``(?i)`` into character classes, ``.``
  into ``[^\\n]`` (std::regex's ``.`` also refuses ``\\r``), ``\\s``/``\\S`` into explicit classes
  (std::regex's ``\\s`` also takes ``\\v``), a literal ``{`` and a class's leading ``]`` into escapes
  (std::regex rejects the one and reads ``[]`` as empty), a class with non-ASCII members into an
  alternation, and a quantified non-ASCII character into a group (std::regex reads UTF-8 bytes, so
  ``é+`` would repeat only the last byte of ``é``);
- **pre-checked** per call (``subject_is_portable``): what no rewrite can fix, because std::regex sees
  a non-ASCII character as 2-4 bytes where RE2 sees one character. A "unit" (``.``, a negated class,
  ``\\W``, ``\\D``, ``[\\s\\S]``) matches one byte of it in std::regex. Patterns where every unit
  repeats without bound (``[^/]+``, ``.*``) and no two units (or a unit and ``\\b``) can touch decide
  alike on any text; for the others, a subject with non-ASCII text could be read differently, and the
  engine must deny the call rather than guess.
"""

from __future__ import annotations

import functools
import re

# The stdlib regex parser is the only full regex parser at hand; it ships no type stubs.
import re._constants as sre_c  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
import warnings
from typing import Any

__all__ = ["RegexProblem", "glob_to_regex", "portable_regex", "subject_is_portable", "unportable_argument"]

_UNPORTABLE: list[tuple[str, str]] = [
    (r"\(\?[=!]", "look-ahead is not supported by OPA's RE2"),
    (r"\(\?<[=!]", "look-behind is not supported by OPA's RE2"),
    (r"\\[1-9]", "back-references are not supported by OPA's RE2"),
    (r"\\[AzZ]", r"\A, \z and \Z are not portable; use ^ and $"),
    (r"\(\?P?<", "named groups are not portable; use a plain group"),
    (r"\(\?[a-zA-Z]", "inline flags are not portable (only a leading (?i) is translated)"),
    (r"\(\?[>#(]", "atomic groups, comments and conditionals are not supported by OPA's RE2"),
    (r"[*+?}][+]", "possessive quantifiers are not portable"),
    (r"\\[pP]", r"\p{...} classes are not portable"),
    (r"\\x", r"hex escapes (\xHH) are misread by the embedded engine; write the character itself"),
    (r"\\[uUN]", r"\u, \U and \N escapes are not supported by OPA's RE2; write the character itself"),
    (r"\\a", r"\a is a bell in RE2 but the letter a in the embedded engine; leave it out"),
    (r"\\0[0-7]", r"octal escapes are not portable"),
    (r"\{,", "a{,n} is a literal in RE2 but a quantifier elsewhere; write a{0,n}"),
    (r"\\[^\x00-\x7f]", "escaping a non-ASCII character is an error in RE2; write it without the backslash"),
]

# RE2 caps a counted repetition at 1000; std::regex does not, so a larger count errors only in OPA.
_MAX_COUNT = 1000
# The POSIX classes both engines know and read as the same ASCII set.
_POSIX = frozenset({"alnum", "alpha", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space",
                    "upper", "xdigit"})
# RE2's \s. std::regex's \s also takes \v, so \s is always written out as this class.
_SPACE = "\\t\\n\\f\\r "
# Non-ASCII characters that RE2's (?i) folds onto ASCII letters: KELVIN SIGN (k), LATIN SMALL LONG S (s).
# Our (?i) translation yields [kK] and [sS], which do not take them: subject_is_portable flags them.
_ASCII_FOLDS = frozenset({"\u212a", "\u017f"})
_QUANT_AFTER = re.compile(r"[*+?]|\{\d+(?:,\d*)?\}")


class RegexProblem(ValueError):
    """Why a pattern cannot be used, in words meant for the policy author."""


def _escaped_spans(pattern: str) -> str:
    """The pattern with every escaped character blanked out, so checks do not see ``\\(`` as ``(``."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append("\\" + (nxt if nxt in "0123456789AzZpPxuUNa" or not nxt.isascii() else "_"))
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
                lo, hi, end = ch, pattern[i + 2], pattern[i + 2]
                if hi == "\\":  # an escaped end: [ -\~] is printable ASCII
                    hi = pattern[i + 3: i + 4]
                    end = "\\" + hi
                    if not hi or hi.isalnum():  # a class escape (\d) or an unknown one: left as written
                        out.append(ch)
                        i += 1
                        continue
                out.append(f"{lo}-{end}")
                out.extend(_other_case(lo, hi))
                i += 1 + len(end) + 1
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


def _other_case(lo: str, hi: str) -> list[str]:
    """The ASCII letters of the range ``lo-hi`` in their other case, as ranges: ``[0-Z]`` covers A-Z, so
    ``a-z``; ``[Z-a]`` covers Z and a, so ``z-z`` and ``A-A`` (non-ASCII letters under (?i) are refused)."""
    extra = []
    for first, last in (("A", "Z"), ("a", "z")):
        a, b = max(lo, first), min(hi, last)
        if a <= b:
            extra.append(f"{a.swapcase()}-{b.swapcase()}")
    return extra


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


def backtracking_problem(pattern: str) -> str | None:
    """Why ``pattern`` may not run against untrusted text in a backtracking engine (it does not parse, or
    nests unbounded repetition, as in ``(a+)+``), or None. The check policy regexes pass, for patterns
    that run in Python's ``re`` (a tool's JSON Schema)."""
    try:
        tree = _parse(pattern)
    except RegexProblem as exc:
        return str(exc)
    if _has_nested_unbounded(tree):
        return f"pattern {pattern!r} nests unbounded repetition and can backtrack exponentially"
    return None


def portable_regex(pattern: str) -> str:
    """Check ``pattern`` and return the form to emit: one both engines read alike (see the module doc).

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
    tree = _parse(body)
    if _has_nested_unbounded(tree):
        raise RegexProblem(
            "nested unbounded quantifiers (like (a+)+) can take exponential time; rewrite without nesting"
        )
    if _max_count(tree) > _MAX_COUNT:
        raise RegexProblem(f"a repetition count above {_MAX_COUNT} is an error in OPA's RE2")
    if _count_product(tree) > _MAX_COUNT:
        raise RegexProblem(f"nested repetition counts that multiply past {_MAX_COUNT} (like (a{{100}}){{100}}) are "
                           "an error in OPA's RE2, and more than the embedded engine can build")
    if fold:
        if any(not ch.isascii() and (ch.lower() != ch or ch.upper() != ch) for ch in plain):
            raise RegexProblem(
                "(?i) with non-ASCII letters is not portable (the embedded engine cannot fold them); "
                "write both cases, e.g. (é|É)"
            )
        if "[:" in plain:
            raise RegexProblem("(?i) with POSIX classes ([:lower:]) is not portable; write the ranges")
        body = _fold_case(body)
    out = _translate(_trim_dot_star(body))
    _parse(out)  # what we emit must itself be a valid pattern
    return out


def _parse(pattern: str) -> sre_parse.SubPattern:
    try:
        with warnings.catch_warnings():
            # "Possible nested set" for [[:alpha:]]: RE2 and std::regex read POSIX classes; see _analysable.
            warnings.simplefilter("ignore", FutureWarning)
            return sre_parse.parse(pattern)
    except re.error as exc:
        raise RegexProblem(f"invalid regular expression: {exc}") from exc


def _count_product(tree: sre_parse.SubPattern) -> int:
    """The largest product of explicit repetition counts along one nesting (``(a{2}){3}`` is 6)."""
    best = 1
    for op, av in tree:
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
            low, high, sub = av
            count = low if high is sre_c.MAXREPEAT else high
            best = max(best, max(count, 1) * _count_product(sub))
        elif op == sre_c.SUBPATTERN:
            best = max(best, _count_product(av[-1]))
        elif op == sre_c.BRANCH:
            best = max([best, *(_count_product(b) for b in av[1])])
    return best


def _max_count(tree: sre_parse.SubPattern) -> int:
    """The largest explicit repetition count (``{n}``, ``{n,m}``) anywhere in the pattern."""
    best = 0
    for op, av in tree:
        if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
            low, high, sub = av
            best = max(best, low, 0 if high is sre_c.MAXREPEAT else high, _max_count(sub))
        elif op == sre_c.SUBPATTERN:
            best = max(best, _max_count(av[-1]))
        elif op == sre_c.BRANCH:
            best = max([best, *(_max_count(b) for b in av[1])])
    return best


def _translate(pattern: str) -> str:
    """Rewrite the constructs std::regex reads differently into ones both engines read alike:
    ``.`` -> ``[^\\n]``, ``\\s`` / ``\\S`` -> explicit classes, a literal ``{`` -> ``\\{``, classes via
    ``_translate_class``, and a
    quantified non-ASCII character into a group (so the quantifier repeats the character, not its last
    byte)."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            esc = pattern[i + 1]
            out.append(f"[{_SPACE}]" if esc == "s" else f"[^{_SPACE}]" if esc == "S" else pattern[i : i + 2])
            i += 2
            continue
        if ch == "[":
            end, text = _translate_class(pattern, i)
            out.append(text)
            i = end
            continue
        if ch == ".":
            out.append("[^\\n]")
        elif ch == "{" and not _QUANT_AFTER.match(pattern, i):
            out.append("\\{")  # a literal brace: RE2 reads it so, std::regex rejects the pattern
        elif not ch.isascii() and _QUANT_AFTER.match(pattern, i + 1):
            out.append(f"(?:{ch})")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _translate_class(pattern: str, start: int) -> tuple[int, str]:
    """Translate the bracket class opening at ``start``; return the index after it and its new text.

    ASCII members are kept (``\\s`` written out). Non-ASCII members become alternatives of a group,
    since std::regex would read ``[é]`` as a class of two bytes. What cannot be rewritten is refused.
    """
    i = start + 1
    negated = pattern[i : i + 1] == "^"
    if negated:
        i += 1
    items: list[str] = []  # ASCII members, as written (or rewritten)
    wide: list[str] = []  # non-ASCII members
    escapes: set[str] = set()
    first = True
    while i < len(pattern) and (pattern[i] != "]" or first):
        first = False
        ch = pattern[i]
        if ch == "[" and pattern[i + 1 : i + 2] == ":":
            end = pattern.find(":]", i + 2)
            name = pattern[i + 2 : end] if end != -1 else ""
            if end == -1 or name not in _POSIX:
                raise RegexProblem(f"unknown or unportable POSIX class [:{name}:]; use one of {sorted(_POSIX)}")
            items.append(pattern[i : end + 2])
            i = end + 2
            continue
        if ch == "[" and pattern[i + 1 : i + 2] in ("=", "."):
            raise RegexProblem("collating elements ([[.a.]], [[=a=]]) are not supported by OPA's RE2")
        if ch == "\\" and i + 1 < len(pattern):
            member = pattern[i : i + 2]
            escapes.add(pattern[i + 1])
            if member == "\\b":
                raise RegexProblem(r"[\b] is an error in RE2 (and a backspace elsewhere); leave it out")
            i += 2
        else:
            # A leading ] is a member in RE2 but closes an empty class in std::regex: escape it.
            member = "\\]" if ch == "]" else ch
            i += 1
        is_range = pattern[i : i + 1] == "-" and i + 1 < len(pattern) and pattern[i + 1] != "]"
        if is_range:
            hi_len = 2 if pattern[i + 1] == "\\" else 1
            hi = pattern[i + 1 : i + 1 + hi_len]
            if not (member.isascii() and hi.isascii()):
                raise RegexProblem(
                    f"a range with non-ASCII ends ({member}-{hi}) is not portable: the embedded engine "
                    "compares bytes; list the characters"
                )
            items.append(f"{member}-{hi}")
            i += 1 + hi_len
        elif member.isascii():
            items.append(member)
        else:
            wide.append(member)
    if i >= len(pattern):
        raise RegexProblem("invalid regular expression: unterminated character set")
    end = i + 1
    if {"s", "S"} <= escapes or {"d", "D"} <= escapes or {"w", "W"} <= escapes:
        # Every character (or, negated, none) in both engines, \\v included: keep as written.
        return end, pattern[start:end]
    if "S" in escapes:
        if items == ["\\S"] and not wide:
            return end, f"[{_SPACE}]" if negated else f"[^{_SPACE}]"
        raise RegexProblem(
            r"\S inside a class with other members is not portable (the embedded engine's \s includes \v); "
            r"write the class out, e.g. [^\t\n\f\r ]"
        )
    items = [_SPACE if m == "\\s" else m for m in items]
    if wide:
        if negated:
            raise RegexProblem(
                f"a negated class with non-ASCII members ({''.join(wide)}) is not portable: the embedded "
                "engine compares bytes"
            )
        alts = ([f"[{''.join(items)}]"] if items else []) + wide
        return end, "(?:" + "|".join(alts) + ")"
    return end, "[" + ("^" if negated else "") + "".join(items) + "]"


def subject_is_portable(regex: str, subject: str) -> bool:
    """Whether OPA and the embedded engine are sure to decide ``regex`` (as ``portable_regex`` or
    ``glob_to_regex`` emitted it) alike on ``subject``.

    False means they might not: the engine must deny the call (fail closed) instead of trusting either
    answer. That is the case for a non-ASCII subject against a pattern with a single-character
    "unit" (``.``, ``?`` in a glob, a negated class, ``[\\s\\S]``) that is not an unbounded run of its
    own (std::regex matches one byte of a character there, RE2 the whole character); for a subject
    holding KELVIN SIGN or LATIN SMALL LONG S (RE2's ``(?i)`` folds them onto ``k`` and ``s``); and for
    text that is not valid Unicode (lone surrogates). An ASCII subject is always portable.
    """
    if subject.isascii():
        return True
    if any(ch in _ASCII_FOLDS or "\ud800" <= ch <= "\udfff" for ch in subject):
        return False
    return _wide_safe(regex)


@functools.lru_cache(maxsize=4096)
def _wide_safe(regex: str) -> bool:
    """Whether ``regex`` decides alike on any non-ASCII text (see ``subject_is_portable``).

    Argument: a byte-level match and a character-level match can differ only where a character's bytes
    are split between two matched elements. Only units can match a byte inside a character, so the
    split needs two unit steps meeting (or a unit next to ``\\b``/``\\B``, which then test a position
    inside the character). One unbounded run ``U*`` / ``U+`` can always regroup its bytes into whole
    characters; anything else is unsafe.
    """
    try:
        tree = _parse(re.sub(r"\[:[a-z]+:\]", "a", regex))  # POSIX classes are ASCII-only members
    except RegexProblem:
        return False
    return not _shape(tree)[3]


_Shape = tuple[bool, bool, bool, bool]  # nullable, may start with a unit, may end with a unit, unsafe
_UNIT_CATEGORIES = frozenset({sre_c.CATEGORY_NOT_DIGIT, sre_c.CATEGORY_NOT_WORD, sre_c.CATEGORY_NOT_SPACE})


def _is_unit(op: Any, av: Any) -> bool:
    """A one-character element that matches non-ASCII characters (so, in std::regex, any high byte)."""
    if op in (sre_c.ANY, sre_c.NOT_LITERAL):
        return True
    if op == sre_c.IN:
        return any(o == sre_c.NEGATE or (o == sre_c.CATEGORY and a in _UNIT_CATEGORIES) for o, a in av)
    return False


def _unit_body(sub: sre_parse.SubPattern) -> bool:
    items = list(sub)
    if len(items) != 1:
        return False
    op, av = items[0]
    return _is_unit(op, av) or (op == sre_c.SUBPATTERN and _unit_body(av[-1]))


def _shape(sub: sre_parse.SubPattern) -> _Shape:
    nullable, starts, ends, bad = True, False, False, False
    for op, av in sub:
        n, f, l_, b = _item_shape(op, av)
        bad = bad or b or (ends and f)
        starts = starts or (nullable and f)
        ends = l_ or (ends and n)
        nullable = nullable and n
    return nullable, starts, ends, bad


def _item_shape(op: Any, av: Any) -> _Shape:
    if _is_unit(op, av):
        return False, True, True, True  # a lone unit: one byte against one character
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT):
        low, high, body = av
        if _unit_body(body):
            return low == 0, True, True, not (high is sre_c.MAXREPEAT and low <= 1)
        n, f, l_, b = _shape(body)
        repeats = high is sre_c.MAXREPEAT or high > 1
        return low == 0 or n, f, l_, b or (repeats and f and l_)
    if op == sre_c.SUBPATTERN:
        return _shape(av[-1])
    if op == sre_c.BRANCH:
        shapes = [_shape(b) for b in av[1]]
        return (any(s[0] for s in shapes), any(s[1] for s in shapes), any(s[2] for s in shapes),
                any(s[3] for s in shapes))
    if op == sre_c.AT:
        if av == sre_c.AT_NON_BOUNDARY:
            # \B holds inside any non-ASCII character for std::regex (two high bytes, both non-word), where
            # RE2 has no position at all: unsafe on any non-ASCII text
            return True, False, False, True
        if av == sre_c.AT_BOUNDARY:
            return True, True, True, False  # must not touch a unit (it would test inside a character)
        return True, False, False, False
    return False, False, False, False  # a literal or an ASCII-only class: whole characters only


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
    """An anchored, portable regex matching exactly the strings the glob matches (``*``, ``?``, ``[...]``).

    ``*`` and ``?`` become ``[\\s\\S]*`` and ``[\\s\\S]`` (any character, newline included, in both
    engines). ``?`` and ``[!...]`` are single-character units: ``subject_is_portable`` flags non-ASCII
    subjects for them.

    Raises:
        RegexProblem: the glob's classes cannot be made portable (e.g. ``[!é]``).
    """
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
    # Through the same translation as a regex (non-ASCII class members, quantifier limits), so that the
    # compiler's output and the loader's check agree.
    return portable_regex("".join(out))


PATTERN_OPS = frozenset({"regex", "not_regex", "glob"})
"""The operators whose conditions run a regex (a glob is compiled to one)."""


def unportable_argument(entry: dict[str, Any], arguments: Any, doc: dict[str, Any] | None = None) -> str | None:
    """Why this call must be denied before evaluation, or None: the first ``regex`` / ``not_regex`` /
    ``glob`` condition of a compiled settings ``entry`` whose argument is a string that
    ``subject_is_portable`` flags for the condition's emitted pattern.

    ``entry`` is what ``CompiledPolicy.entry_for(tool name)`` returns (``{"rules": [{"conditions":
    [{"op", "path", "key_path"?, "regex", "text"}]}]}``); ``arguments`` is the call's
    ``tool.arguments``. Pure, and cheap for calls whose strings are ASCII.
    """
    for rule in entry.get("rules", ()):
        for cond in rule.get("conditions", ()):
            if cond.get("op") not in PATTERN_OPS or "regex" not in cond:
                continue
            root = cond.get("root", "args")
            base = arguments if root == "args" else (doc or {}).get(root)
            value = argument_at(base, cond.get("path", ()), cond.get("key_path"))
            if isinstance(value, str) and not subject_is_portable(cond["regex"], value):
                return (
                    f"the argument of condition {cond.get('text', cond['regex'])} holds text that OPA and the "
                    "embedded engine could match differently (non-ASCII characters against a single-character "
                    "pattern element, or a character OPA's (?i) folds onto ASCII); denied rather than guessed"
                )
    return None


def argument_at(arguments: Any, path: list[Any], key_path: list[str] | None) -> Any:
    """The value at a condition's path, resolved as the Rego library does: an integer segment indexes
    a list, and (via ``key_path``) names an object key when the value there is an object."""
    value = arguments
    for i, seg in enumerate(path):
        if isinstance(value, dict):
            key = key_path[i] if key_path else seg
            if not isinstance(key, str) or key not in value:
                return None
            value = value[key]
        elif isinstance(value, list) and isinstance(seg, int) and not isinstance(seg, bool) and 0 <= seg < len(value):
            value = value[seg]
        else:
            return None
    return value
