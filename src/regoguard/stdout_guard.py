"""Keep file descriptor 1 for JSON-RPC (or the CLI's own output) only.

regopy's C++ core writes Rego ``print()`` output and some error reports straight to fd 1. In the proxy,
fd 1 is the client's JSON-RPC stream, so one stray line corrupts the session. :func:`claim_stdout` moves
the real stdout to a private descriptor, points fd 1 (and ``sys.stdout``) at stderr, and hands the
caller the only writer that reaches the real stdout.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from typing import BinaryIO

_claimed: BinaryIO | None = None


def claim_stdout() -> BinaryIO:
    """Return a binary writer for the real stdout; afterwards anything else written to fd 1 goes to stderr.

    Idempotent: a second call returns the same writer.
    """
    global _claimed  # noqa: PLW0603 - one process has one stdout
    if _claimed is not None:
        return _claimed
    sys.stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _claimed = os.fdopen(private, "wb", buffering=0)
    return _claimed


@contextlib.contextmanager
def engine_chatter_silenced() -> Iterator[None]:
    """While regopy reports errors we parse and print ourselves, send what it writes to fd 1 nowhere.

    Only once stdout is claimed (fd 1 is then a copy of stderr that nothing else writes to); before that,
    fd 1 is the real stdout and is left alone.
    """
    if _claimed is None:
        yield
        return
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        with contextlib.suppress(Exception):  # what C stdio still buffers goes where the rest went
            ctypes.CDLL(None).fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
