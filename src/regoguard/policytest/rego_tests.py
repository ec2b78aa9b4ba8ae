"""Run a group of Rego ``test_`` rules in worker processes, surviving engine crashes and hangs.

A group is the modules evaluated together (the regoguard library, a policy's settings as data, the
team's modules and their tests) and the tests found in them. Tests run in order in one worker; when the
worker dies or a test exceeds its time, that test fails with the reason and a new worker takes the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any

from regoguard.errors import PolicyError
from regoguard.policytest.rego_files import RegoTest, isolate, rego_error_positions

CRASH_HINT = ("a known rego-cpp 1.5 bug: `with input as ...` over rules that call built-ins (sprintf, concat, "
              "upper, ...) or use comprehensions (data.regoguard.lib.decision does) crashes the engine; decide "
              "such calls in a YAML test case instead")
BUILD_SECONDS = 60.0


@dataclass(frozen=True)
class RegoGroup:
    label: str
    """What the group tests against (the policy file), for names that would otherwise repeat."""
    data: str | None
    modules: dict[str, str]
    tests: tuple[RegoTest, ...]


@dataclass(frozen=True)
class RegoOutcome:
    test: RegoTest
    passed: bool
    message: str = ""
    output: str = ""
    seconds: float = 0.0


def run_group(group: RegoGroup, timeout: float) -> tuple[list[RegoOutcome], list[PolicyError]]:
    """Every test's outcome, or the errors that kept the modules from loading."""
    outcomes: list[RegoOutcome] = []
    remaining = list(group.tests)
    while remaining:
        done, errors = _one_worker(group, remaining, timeout)
        if errors:
            return outcomes, errors
        if not done:  # the worker died between tests: blame the next one rather than loop
            done = [RegoOutcome(remaining[0], False, "the Rego test worker died before this test")]
        outcomes.extend(done)
        remaining = remaining[len(done):]
    return outcomes, []


def _signal_name(code: int) -> str:
    try:
        return f"signal {-code}, {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def _read_from(f: IO[bytes], start: int | None, end: int | None = None) -> str:
    if start is None:
        return ""
    f.seek(start)
    data = f.read() if end is None else f.read(max(0, end - start))
    return data.decode("utf-8", "replace")


def _one_worker(group: RegoGroup, tests: list[RegoTest], timeout: float) -> tuple[list[RegoOutcome], list[PolicyError]]:
    """Run ``tests`` in order in one worker; return the outcomes up to and including the one that ended it."""
    tested = {t.module for t in group.tests}
    base = {name: isolate(source, None) if name in tested else source for name, source in group.modules.items()}
    job = {"data": group.data, "modules": base,
           "tests": [{"id": i, "query": t.query, "module": t.module, "source": isolate(group.modules[t.module], t.rule)}
                     for i, t in enumerate(tests)]}
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "regoguard.policytest.rego_worker", str(write_end)],
            stdin=subprocess.PIPE, stdout=out, stderr=err, pass_fds=(write_end,),
        )
        os.close(write_end)
        try:
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps(job).encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            events, ended = _read_events(read_end, timeout)
            if ended == "done":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        finally:
            os.close(read_end)
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
        return _outcomes(tests, events, ended, code, timeout, out, err, group.modules)


def _read_events(fd: int, timeout: float) -> tuple[list[dict[str, Any]], str]:
    """Events until ``done``, end of file (``eof``), or a step that took too long (``timeout``)."""
    events: list[dict[str, Any]] = []
    buf = b""
    deadline = time.monotonic() + BUILD_SECONDS
    while True:
        wait = deadline - time.monotonic()
        if wait <= 0:
            return events, "timeout"
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return events, "eof"
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            event = json.loads(line)
            events.append(event)
            if event["event"] == "done":
                return events, "done"
            deadline = time.monotonic() + (timeout if event["event"] == "start" else BUILD_SECONDS)


def _outcomes(tests: list[RegoTest], events: list[dict[str, Any]], ended: str, code: int, timeout: float,
              out: IO[bytes], err: IO[bytes], modules: dict[str, str]) -> tuple[list[RegoOutcome], list[PolicyError]]:
    outcomes: list[RegoOutcome] = []
    started: dict[str, Any] | None = None
    for event in events:
        if event["event"] == "build_error":
            return [], rego_error_positions(event["message"], modules)
        if event["event"] == "start":
            started = event
        elif event["event"] == "result":
            assert started is not None
            outcomes.append(RegoOutcome(tests[event["id"]], event["passed"], event["message"],
                                        _read_from(out, started["out"], event["out"]), event["seconds"]))
            started = None
    if ended == "done":
        return outcomes, []
    if not any(e["event"] == "ready" for e in events):
        why = "timed out loading the modules" if ended == "timeout" else f"died loading the modules ({code})"
        stderr = _read_from(err, 0).strip()
        return outcomes, [PolicyError("<rego>", 1, 1, "", f"the Rego test worker {why}: {stderr[-500:]}")]
    if started is None:  # died between tests: nothing to blame; the next worker goes on
        return outcomes, []
    test = tests[started["id"]]
    output = _read_from(out, started["out"])
    if ended == "timeout":
        outcomes.append(RegoOutcome(test, False, f"timed out after {timeout:g}s", output, timeout))
        return outcomes, []
    stderr = _read_from(err, started["err"]).strip()
    if code < 0:
        message = f"the embedded engine crashed evaluating this test ({_signal_name(code)}) — {CRASH_HINT}"
    else:
        message = f"the Rego test worker exited with status {code} during this test"
    if stderr:
        message += "\n" + "\n".join(stderr.splitlines()[-5:])
    outcomes.append(RegoOutcome(test, False, message, output))
    return outcomes, []
