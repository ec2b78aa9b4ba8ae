"""Numbers whose JSON text says more than a double holds.

A client's message is forwarded as the client wrote it, so the server reads its numbers from that text; the
rules must decide on the same number. ``100.00000000000000001`` parses to the double ``100.0`` (and would
pass ``lte: 100``), ``-1e-400`` to ``-0.0``, ``9007199254740993.0`` to ``9007199254740992.0``: such a number
is parsed into an :class:`InexactFloat`, which keeps its text, and the engine denies a call holding one.
Imports nothing of ours.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

_NORMAL_MIN = 2.2250738585072014e-308
"""Below this a double has fewer than 15 significant digits (subnormal), down to 0 (underflow)."""
_BIG = 2.0**53


class InexactFloat(float):
    """A double read from JSON text that names another number; ``text`` is that text."""

    text: str

    def __new__(cls, value: float, text: str) -> InexactFloat:
        self = super().__new__(cls, value)
        self.text = text
        return self

    def __reduce__(self) -> tuple[type[InexactFloat], tuple[float, str]]:  # copy, deepcopy and pickle
        return InexactFloat, (float(self), self.text)


def read_float(text: str, value: float) -> float:
    """``value`` (``float(text)``, finite) when it is the number ``text`` names, else an :class:`InexactFloat`.

    Below 2**53 the text names the double when the double's shortest spelling has the same decimal value
    (``0.1`` does; ``100.00000000000000001`` does not). Fast: text of at most 16 characters holds at most 15
    significant digits (it has a ``.`` or an ``e``), and every such decimal in the normal range is the number
    its nearest double names (DBL_DIG is 15). From 2**53 on every double is an integer, and the text must
    name exactly that integer: ``9.223372036854775e18`` is 9223372036854775000 to a reader of decimals and
    9223372036854774784 to a reader of doubles (and to the engine), which a limit between them would tell
    apart."""
    if abs(value) < _BIG and (text == repr(value) or (len(text) <= 16 and abs(value) >= _NORMAL_MIN)):
        return value
    try:
        exact = Decimal(text) == (Decimal(value) if abs(value) >= _BIG else Decimal(repr(value)))
    except InvalidOperation:  # an exponent beyond Decimal's (1e-9999999999999999999999): only zero is exact
        exact = value == 0.0 and not text.lower().partition("e")[0].strip("+-0.")
    return value if exact else InexactFloat(value, text)
