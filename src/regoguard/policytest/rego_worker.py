"""Runs Rego ``test_`` rules in a child process: ``python -m regoguard.policytest.rego_worker RESULT_FD``.

Why a process: regopy 1.5.2 kills the whole process (SIGSEGV, or SIGABRT from an uncaught C++
exception) compiling a test that evaluates, under ``with input as ...``, a rule calling a built-in
(``sprintf``, ``concat``, ``upper``...) or holding a comprehension — ``data.regoguard.lib.decision with
input as {...}`` is one.
Every query compiles every module, so such a test breaks every query made beside it: each test
therefore gets an interpreter of its own holding no other test rule (``rego_files.isolate``). The
parent (``rego_tests``) reads our results as they come, notices a death, blames the test that was
running, and starts a new worker for the rest.

Protocol. stdin: one JSON job ``{"data": text | null, "modules": {name: source}, "tests": [{"id",
"query", "module", "source"}]}`` (``source``: the test's module holding only that test rule).
RESULT_FD: one JSON line per event, flushed at once: ``ready`` (or ``build_error``), then per test
``start`` and ``result``, then ``done``. ``start``/``result`` carry the offsets of fd 1 and fd
2 at that moment: rego-cpp prints Rego ``print()`` output and some error reports to fd 1, which the
parent points at a file (never its stdout), so it can hand each test its own output.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

Emit = Callable[[dict[str, Any]], None]


def _unbuffer_c_stdout() -> None:
    """Make C's stdout unbuffered, so what a test printed before a crash is in the file, not lost."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None)
        libc.setvbuf(ctypes.c_void_p.in_dll(libc, "stdout"), None, 2, 0)  # 2: _IONBF


def _offset(fd: int) -> int | None:
    try:
        return os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return None


def _flush_c() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def judge(raw: str) -> tuple[bool, str]:
    """A test passes iff its rule is ``true``; anything else says what it was instead."""
    from regoguard.engine_io import expression

    if raw.strip() == "undefined":
        return False, "undefined: some expression in the test's body was false or undefined"
    try:
        value = expression(raw)
    except (ValueError, KeyError, IndexError, TypeError):
        return False, f"unexpected engine output: {raw.strip()[:500]}"
    if value is True:
        return True, ""
    return False, f"the rule is {json.dumps(value)[:500]}, not true"


def _interpreter(job: dict[str, Any], module: str | None = None, source: str | None = None) -> Any:
    """An interpreter holding the job's data and modules, ``module`` replaced by ``source``."""
    import regopy

    interp = regopy.Interpreter()
    if job.get("data") is not None:
        interp.add_data_json(job["data"])
    for name, text in job["modules"].items():
        interp.add_module(name, source if name == module and source is not None else text)
    return interp


def run_job(job: dict[str, Any], emit: Emit) -> None:
    """Each test on an interpreter of its own, holding its own test rule and no other (see ``isolate``)."""
    import regopy

    try:
        _interpreter(job)
    except regopy.RegoError as exc:
        emit({"event": "build_error", "message": str(exc)})
        return
    emit({"event": "ready"})
    for test in job["tests"]:
        emit({"event": "start", "id": test["id"], "out": _offset(1), "err": _offset(2)})
        t0 = time.perf_counter()
        try:
            out = _interpreter(job, test["module"], test["source"]).query(test["query"])
            raw = str(out)
            passed, message = judge(raw) if out.ok() else (False, f"error: {raw.strip()[:2000]}")
        except regopy.RegoError as exc:
            passed, message = False, f"error: {str(exc).strip()[:2000]}"
        _flush_c()
        emit({"event": "result", "id": test["id"], "passed": passed, "message": message,
              "seconds": time.perf_counter() - t0, "out": _offset(1)})
    emit({"event": "done"})


def main(argv: list[str]) -> int:
    results = os.fdopen(int(argv[1]), "w", encoding="utf-8")
    job = json.load(sys.stdin)
    sys.stdout = sys.stderr  # Python-level prints never share fd 1 with the engine's output
    _unbuffer_c_stdout()

    def emit(event: dict[str, Any]) -> None:
        results.write(json.dumps(event) + "\n")
        results.flush()

    from regoguard.engine_threads import run_with_large_stack

    run_with_large_stack(lambda: run_job(job, emit))
    results.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
