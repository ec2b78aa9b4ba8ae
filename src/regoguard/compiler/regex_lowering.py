"""Counted runs of one character class, written as an uncounted run and a length bound.

rego-cpp compiles a pattern on every evaluation (std::regex, no cache), and a counted repetition costs
the most: ``^[a-z ]{1,64}$`` builds its class 64 times per call, ~25 µs more than ``^[a-z ]+$`` (measured
on regopy 1.5.2, ``benchmarks/bench_engine.py``). A pattern that is a whole-string counted run of one
class of ASCII characters, ``^C{m,n}$`` (or ``{m,}``, ``{n}``, lazy or not), says: every character is in
``C`` and there are ``m`` to ``n`` of them. The compiler writes it as ``regex.match("^C+$", v)`` (``*``
when ``m`` is 0) with ``count(v)`` bounds, which both engines decide as the counted pattern:

- ``C`` matches one ASCII character at a time, so a string it runs over has as many bytes as characters,
  and ``count`` (characters in OPA and in rego-cpp) is the number of repetitions;
- the class's text is kept as written, so the regex still reads the call's text the way it read it
  before (regopy's string builtins such as ``trim`` decode backslash escapes in a call's text, which
  would let ``\\u0041`` pass ``^[A-Za-z0-9]+$``: a regex does not).

Only the positive form is written so (``not_regex`` keeps ``regex.match(...) == false``).
"""

from __future__ import annotations

import re
import re._constants as sre_c  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
import warnings
from typing import Any

_COUNTED = re.compile(r"\^(?P<atom>.+?)\{(?P<low>\d+)(?P<comma>,(?P<high>\d*))?\}\??\$")
_CATEGORIES = (sre_c.CATEGORY_DIGIT, sre_c.CATEGORY_WORD, sre_c.CATEGORY_SPACE)


def _parse(pattern: str) -> list[Any] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return list(sre_parse.parse(pattern))
    except (re.error, RecursionError, OverflowError):  # what Python cannot parse keeps its pattern
        return None


def _ascii_item(op: Any, av: Any) -> bool:
    """One member of a class (or a lone atom) that matches only ASCII characters, one at a time."""
    if op is sre_c.LITERAL:
        return bool(av < 0x80)
    if op is sre_c.RANGE:
        return bool(av[1] < 0x80)
    return bool(op is sre_c.CATEGORY and av in _CATEGORIES)  # RE2's \d \w \s are ASCII-only


def _one_ascii_class(tree: list[Any]) -> bool:
    if len(tree) != 1:
        return False
    op, av = tree[0]
    if op is sre_c.IN:  # a negated class ([^...]) starts with NEGATE and is refused here
        return bool(av) and all(_ascii_item(o, a) for o, a in av)
    return _ascii_item(op, av)


def counted_run(pattern: str) -> tuple[str, int, int | None] | None:
    """``(uncounted, low, high)`` when ``pattern`` (as the compiler emits it, see ``portable_regex``) is
    exactly ``^C{low,high}$`` for one class ``C`` of ASCII characters: ``uncounted`` is ``^C+$`` (or
    ``^C*$`` when ``low`` is 0), ``high`` None when unbounded. Otherwise None: the pattern stays as it is."""
    m = _COUNTED.fullmatch(pattern)
    if m is None or "[:" in pattern:  # Python's parser misreads POSIX classes
        return None
    atom = m["atom"]
    low = int(m["low"])
    high = None if m["comma"] and not m["high"] else int(m["high"] or low) if m["comma"] else low
    tree = _parse(pattern)
    atom_tree = _parse(atom)
    if tree is None or atom_tree is None or len(tree) != 3 or not _one_ascii_class(atom_tree):
        return None
    if tree[0] != (sre_c.AT, sre_c.AT_BEGINNING) or tree[2] != (sre_c.AT, sre_c.AT_END):
        return None
    op, av = tree[1]
    if op not in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
        return None
    t_low, t_high, sub = av
    if (t_low, None if t_high is sre_c.MAXREPEAT else t_high) != (low, high) or list(sub) != atom_tree:
        return None  # the text and the parse disagree on what the pattern is: leave it alone
    return f"^{atom}{'+' if low else '*'}$", low, high
