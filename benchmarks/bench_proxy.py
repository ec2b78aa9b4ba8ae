"""Benchmark the latency ``regoguard run`` adds to every ``tools/call``, end to end over stdio pipes.

Usage: python benchmarks/bench_proxy.py [--quick] [--tools N] [--before SRC] [--calls N] [--concurrent-calls N]
                                       [--timeout S]

A raw driver (asyncio subprocess pipes, no MCP SDK: its own cost would swamp the numbers) talks to
benchmarks/fast_server.py (plain Python, answers every ``tools/call`` at once with ``"ok"``) through
five configurations, all started in the same run and measured interleaved:

  direct        driver <-> fast_server
  socat         driver <-> ``socat - EXEC:"python fast_server.py"`` (a bare byte relay: the cost of one
                more process and two more pipe hops, with no work at all; a tiny Python asyncio byte pump
                stands in if socat is not installed, and the output says so)
  rg cached     driver <-> ``regoguard run -c <N-tool policy> --state memory`` <-> fast_server; every
                call is identical, so every decision is a decision-cache hit
  rg uncached   the same, but each call carries a different value for the capped argument, so every call
                misses the cache and is a full regopy query
  rg denied     as "rg uncached", but every call is over the tool's cap: denied by the policy
  rg sqlite     as "rg uncached", with the default SQLite state (a file in a temporary directory)
  before ...    with ``--before SRC``: cached, uncached and denied again, running the package found in SRC
                (e.g. ``git worktree add /tmp/old HEAD~3`` then ``--before /tmp/old/src``), in the same rounds

The policy (generated; Intercept dialect): N tools (1,000 by default), each with a ``regex``, an ``lte`` cap
and an ``in`` list on its
arguments, plus a ``"*"`` rule with ``rate_limit: 1000000/minute`` (so every allowed call also takes a
token from the limit store). Every call goes to the same tool, with arguments that pass every rule; each
answer is checked (``"isError":false``, the right id), so a denial or an error fails the run.

Each driver session sends ``initialize``, ``notifications/initialized`` and one ``tools/list``, then:

1. warm-up: sequential and concurrent calls, not timed;
2. sequential: one call at a time, round trip timed with ``perf_counter_ns`` from the write of the
   request to the read of its answer; rounds of calls rotate over the configurations (so a noisy
   neighbour on a shared machine hits them all alike); median and p99 per configuration;
3. concurrent: 32 requests kept in flight (each answer sends the next request), in rounds as above;
   throughput = calls / wall time, and median/p99 of the per-call round trip.

ADDED latency = regoguard median - direct median (and - socat median). Targets (printed beside the
numbers): added median <= 0.15 ms cached and <= 0.25 ms uncached or denied; >= 5,000 uncached calls/s
through one proxy with 32 in flight. Everything runs on local pipes; every loop is bounded; the whole
run is under a hard timeout; every child runs in its own process group and is ended at exit.
Exit status: 0 targets met, 1 a target missed, 2 the benchmark itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

try:
    import regoguard  # noqa: F401
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from regoguard import Engine, compile_policy, load_policy_text
from regoguard.engine import run_with_large_stack
from regoguard.guard import Guard
from regoguard.limits import Limiter, MemoryStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVER = HERE / "fast_server.py"

N_TOOLS = 1000  # default for --tools
TOOL = "tool_0042"  # the tool every call goes to (fast_server lists tool_0040..tool_0044)
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1", "ap-northeast-1"]
INFLIGHT = 32
LINE_LIMIT = 1 << 20

TARGET_ADDED_CACHED_MS = 0.15
TARGET_ADDED_UNCACHED_MS = 0.25  # uncached and denied alike
TARGET_THROUGHPUT = 5000.0

# A Python stand-in for socat: copies bytes both ways between our stdio and the child, nothing else.
PY_PUMP = textwrap.dedent("""
    import asyncio, sys
    async def copy(reader, write, drain, close):
        while chunk := await reader.read(65536):
            write(chunk)
            await drain()
        close()
    async def main():
        loop = asyncio.get_running_loop()
        proc = await asyncio.create_subprocess_exec(*sys.argv[1:], stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin.buffer)
        t, p = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout.buffer)
        out = asyncio.StreamWriter(t, p, None, loop)
        up = asyncio.create_task(copy(stdin, proc.stdin.write, proc.stdin.drain, proc.stdin.close))
        await copy(proc.stdout, out.write, out.drain, lambda: None)
        up.cancel()
        return await proc.wait()
    sys.exit(asyncio.run(main()))
""")


# --- the generated policy ---------------------------------------------------------------------------------


def policy_yaml(n_tools: int) -> str:
    """N tools, each: a ``regex`` on ``note``, an ``lte`` cap on ``amount`` and an ``in`` list on ``region``;
    a global rate limit."""
    lines = ['version: "1"', f"description: generated proxy benchmark policy, {n_tools} tools",
             "default: deny", "tools:"]
    for i in range(n_tools):
        cap = 10**9 + i  # large enough for every uncached call's distinct amount; "denied" calls exceed it
        allowed = [REGIONS[(i + k) % len(REGIONS)] for k in range(3)]
        if i == 42:
            allowed = ["us-east-1", "eu-west-1", "ap-south-1"]
        lines += [
            f"  tool_{i:04d}:",
            "    rules:",
            "      - name: note",
            "        conditions:",
            '          - {path: args.note, op: regex, value: "^[a-z ]{1,64}$"}',
            "      - name: amount cap",
            "        conditions:",
            f"          - {{path: args.amount, op: lte, value: {cap}}}",
            f'        on_deny: "amount must be at most {cap}"',
            "      - name: region",
            "        conditions:",
            f"          - {{path: args.region, op: in, value: [{', '.join(allowed)}]}}",
        ]
    lines += ['  "*":', "    rules:", "      - name: global rate", '        rate_limit: "1000000/minute"']
    return "\n".join(lines) + "\n"


# --- one driver session over pipes ------------------------------------------------------------------------


@dataclass
class Endpoint:
    """One configuration: a child process we speak newline-delimited JSON-RPC to."""

    name: str
    argv: list[str]
    vary: bool  # each call with a different ``amount`` (misses the decision cache)
    stderr_path: Path
    deny: bool = False  # each call over the tool's cap: denied by the policy (and uncached)
    env: dict[str, str] | None = None  # run with this environment (e.g. the code from before a change)
    proc: asyncio.subprocess.Process | None = None
    next_id: int = 0
    next_amount: int = 1
    startup_ms: float = 0.0
    seq: list[int] = field(default_factory=list)  # sequential round trips, ns
    conc: list[int] = field(default_factory=list)  # concurrent round trips, ns
    conc_calls: int = 0
    conc_wall_ns: int = 0
    _stderr: Any = None

    def call_line(self) -> tuple[int, bytes]:
        self.next_id += 1
        if self.vary or self.deny:
            amount = self.next_amount + (2 * 10**9 if self.deny else 0)
            self.next_amount += 1
        else:
            amount = 1234
        return self.next_id, (
            b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":'
            b'{"amount":%d,"region":"eu-west-1","note":"benchmark call"}}}\n' % (self.next_id, TOOL.encode(), amount)
        )

    async def start(self, env: dict[str, str]) -> None:
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        t0 = time.perf_counter_ns()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self._stderr,
            env=self.env or env, start_new_session=True, limit=LINE_LIMIT,
        )
        init = {"protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "bench-proxy", "version": "0"}}
        answer = await self.request("initialize", init)
        if "result" not in answer:
            raise BenchError(f"{self.name}: initialize failed: {answer}")
        self.startup_ms = (time.perf_counter_ns() - t0) / 1e6
        await self.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        answer = await self.request("tools/list", {})
        names = [t.get("name") for t in answer.get("result", {}).get("tools", [])]
        if TOOL not in names:
            raise BenchError(f"{self.name}: tools/list does not list {TOOL}: {answer}")

    async def send(self, line: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line)
        await self.proc.stdin.drain()

    async def readline(self) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise BenchError(f"{self.name}: the process closed its stdout (exit {self.proc.returncode}); "
                             f"stderr: {self.stderr_tail()}")
        return line

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        import json

        self.next_id += 1
        await self.send(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                                    "params": params}).encode() + b"\n")
        while True:  # bounded by the run's overall timeout
            answer = json.loads(await self.readline())
            if isinstance(answer, dict) and answer.get("id") == self.next_id:
                return answer

    def check(self, id_: int, line: bytes) -> None:
        if _answer_id(line) != id_ or (b'"isError":true' if self.deny else b'"isError":false') not in line:
            raise BenchError(f"{self.name}: unexpected answer to call {id_}: {line[:300]!r}")

    async def sequential(self, n: int, keep: bool) -> None:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        stdin, stdout = self.proc.stdin, self.proc.stdout
        perf = time.perf_counter_ns
        for _ in range(n):
            id_, line = self.call_line()
            t0 = perf()
            stdin.write(line)
            await stdin.drain()
            answer = await stdout.readline()
            t1 = perf()
            if not answer:
                await self.readline()  # raises with the stderr tail
            self.check(id_, answer)
            if keep:
                self.seq.append(t1 - t0)

    async def concurrent(self, n: int, inflight: int, keep: bool) -> None:
        """``n`` calls with ``inflight`` outstanding: every answer sends the next request."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        stdin, stdout = self.proc.stdin, self.proc.stdout
        perf = time.perf_counter_ns
        sent: dict[int, int] = {}
        lat: list[int] = []
        remaining = n
        t_start = perf()
        for _ in range(min(inflight, n)):
            id_, line = self.call_line()
            sent[id_] = perf()
            stdin.write(line)
            remaining -= 1
        await stdin.drain()
        for _ in range(n):
            answer = await stdout.readline()
            t1 = perf()
            if not answer:
                await self.readline()
            id_ = _answer_id(answer)
            t0 = sent.pop(id_, None) if isinstance(id_, int) else None
            if t0 is None:
                raise BenchError(f"{self.name}: answer to no outstanding call: {answer[:300]!r}")
            self.check(id_, answer)
            lat.append(t1 - t0)
            if remaining:
                id_, line = self.call_line()
                sent[id_] = perf()
                stdin.write(line)
                remaining -= 1
                await stdin.drain()
        wall = perf() - t_start
        if keep:
            self.conc += lat
            self.conc_calls += n
            self.conc_wall_ns += wall

    def stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr_path.read_bytes()[-2000:].decode("utf-8", "replace").strip() or "(empty)"
        return "(unreadable)"

    async def close(self) -> None:
        proc = self.proc
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
            if proc.returncode is None:
                kill_group(proc.pid)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 2.0)
            _GROUPS.discard(proc.pid)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class BenchError(RuntimeError):
    pass


def _answer_id(line: bytes) -> Any:
    """The id of an answer line. Every relay here passes the server's bytes unchanged, so the id is the
    first field after ``"jsonrpc"``; anything else is parsed properly."""
    prefix = b'{"jsonrpc":"2.0","id":'
    if line.startswith(prefix):
        end = line.find(b",", len(prefix))
        with contextlib.suppress(ValueError):
            return int(line[len(prefix):end])
    import json

    with contextlib.suppress(ValueError):
        msg = json.loads(line)
        return msg.get("id") if isinstance(msg, dict) else None
    return None


_GROUPS: set[int] = set()


def kill_group(pid: int) -> None:
    """End a child we started (it leads its own process group: its children go with it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _GROUPS.discard(pid)


def source_state() -> str:
    """The checkout the proxy runs from: commit, and whether src/ differs from it (numbers follow the code)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "rego"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"{ROOT / 'src'} (not a git checkout)"
    return f"{ROOT / 'src'} at {head}" + (f", with {len(dirty.splitlines())} changed file(s) in src/ rego/"
                                           if dirty else "")


# --- statistics and output --------------------------------------------------------------------------------


def pct(samples: list[int], q: float) -> float:
    s = sorted(samples)
    return s[max(0, math.ceil(q * len(s)) - 1)] / 1e6


def med(samples: list[int]) -> float:
    return statistics.median(samples) / 1e6


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


# --- the decision alone, in process ----------------------------------------------------------------------


def decision_baseline(n: int, n_tools: int) -> tuple[list[int], list[int]]:
    """``Guard.decide`` for the same policy and calls, in this process, on a large-stack thread (the inline
    path the CLI takes), with a memory store: what one decision costs without any relaying. Returns the
    cached and uncached samples (ns), interleaved call by call."""

    def measure() -> tuple[list[int], list[int]]:
        engine = Engine(compile_policy(load_policy_text(policy_yaml(n_tools), "bench.yaml")))
        guard = Guard(engine, Limiter(MemoryStore()))
        perf = time.perf_counter_ns

        def doc(amount: int) -> dict[str, Any]:
            return {"tool": {"name": TOOL, "arguments": {"amount": amount, "region": "eu-west-1",
                                                          "note": "benchmark call"}},
                    "server": {"name": "fast_server"},
                    "session": {"id": "bench", "client": {"name": "bench-proxy", "version": "0"},
                                "protocol_version": "2025-06-18"},
                    "principal": {"id": "bench", "claims": {}}}

        cached: list[int] = []
        uncached: list[int] = []
        try:
            for i in range(n + 100):
                d = doc(1234)
                t0 = perf()
                v1 = guard.decide(d, 150)
                t1 = perf()
                d = doc(10_000 + i)
                t2 = perf()
                v2 = guard.decide(d, 150)
                t3 = perf()
                if not (v1.allow and v2.allow) or v2.decision.cached or (i > 0 and not v1.decision.cached):
                    raise BenchError(f"in-process decision not as expected: {v1.decision} / {v2.decision}")
                if i >= 100:
                    cached.append(t1 - t0)
                    uncached.append(t3 - t2)
        finally:
            engine.close()
        return cached, uncached

    result: tuple[list[int], list[int]] = run_with_large_stack(measure)
    return result


# --- the run ----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, tmp: Path, baseline: tuple[list[int], list[int]]) -> int:
    py = sys.executable
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("REGOGUARD_LOG_LEVEL", None)
    policy = tmp / "bench.yaml"
    policy.write_text(policy_yaml(args.tools), encoding="utf-8")
    check = subprocess.run([py, "-m", "regoguard", "check", str(policy)], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    if check.returncode != 0:
        raise BenchError(f"the generated policy does not check:\n{check.stdout}{check.stderr}")

    server = [py, str(SERVER)]
    socat = shutil.which("socat")
    if socat:
        relay_argv = [socat, "-", "EXEC:" + subprocess.list2cmdline(server)]
        relay_name = "socat"
        relay_note = subprocess.run([socat, "-V"], capture_output=True, text=True, check=False).stdout
        relay_note = next((ln.strip() for ln in relay_note.splitlines() if "version" in ln), "socat")
    else:
        relay_argv = [py, "-c", PY_PUMP, *server]
        relay_name = "pypump"
        relay_note = "socat NOT installed: a Python asyncio byte pump stands in for it"
    rg = [py, "-m", "regoguard", "run", "-c", str(policy)]
    endpoints = [
        Endpoint("direct", server, False, tmp / "direct.err"),
        Endpoint(relay_name, relay_argv, False, tmp / "relay.err"),
        Endpoint("rg cached", [*rg, "--state", "memory", "--", *server], False, tmp / "rg-cached.err"),
        Endpoint("rg uncached", [*rg, "--state", "memory", "--", *server], True, tmp / "rg-uncached.err"),
        Endpoint("rg denied", [*rg, "--state", "memory", "--", *server], False, tmp / "rg-denied.err", deny=True),
        Endpoint("rg sqlite", [*rg, "--state", str(tmp / "state.db"), "--", *server], True, tmp / "rg-sqlite.err"),
    ]
    direct, relay, cached, uncached, denied, sqlite_ep = endpoints
    before: list[tuple[Endpoint, Endpoint]] = []  # (before, after) pairs
    if args.before:
        old_env = {**env, "PYTHONPATH": str(Path(args.before).resolve())}
        for ep in (cached, uncached, denied):
            old = Endpoint(ep.name.replace("rg ", "before "), ep.argv, ep.vary, tmp / f"before-{len(before)}.err",
                           deny=ep.deny, env=old_env)
            endpoints.append(old)
            before.append((old, ep))

    try:
        regopy_v = metadata.version("regopy")
    except metadata.PackageNotFoundError:
        regopy_v = "?"
    load = os.getloadavg()
    print(f"python {platform.python_version()} on {platform.platform()}; cpus={os.cpu_count()}; "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; regopy {regopy_v}")
    print(f"regoguard: {source_state()}")
    print(f"relay: {relay_note}")
    if args.before:
        print(f"before: the same configurations with the code in {args.before}")
    print(f"policy: {args.tools} tools (regex + lte cap + in list each) + \"*\" rate_limit 1000000/minute; "
          f"every call: {TOOL}")
    print(f"sequential: {args.calls} calls per configuration in {args.rounds} interleaved rounds "
          f"(+{args.warmup} warm-up); concurrent: {args.concurrent_calls} calls per configuration, "
          f"{INFLIGHT} in flight, in {args.conc_rounds} rounds (+{args.conc_warmup} warm-up)")
    print()

    try:
        for ep in endpoints:
            await ep.start(env)
            assert ep.proc is not None
            _GROUPS.add(ep.proc.pid)

        # warm-up: fill caches, JIT-free but warm (imports, allocator, page cache, SQLite WAL)
        for ep in endpoints:
            await ep.sequential(args.warmup, keep=False)
            await ep.concurrent(args.conc_warmup, INFLIGHT, keep=False)

        # sequential, interleaved rounds with a rotating order
        per_round = math.ceil(args.calls / args.rounds)
        for r in range(args.rounds):
            order = endpoints[r % len(endpoints):] + endpoints[:r % len(endpoints)]
            for ep in order:
                await ep.sequential(min(per_round, args.calls - len(ep.seq)), keep=True)

        # concurrent, interleaved rounds
        per_round = math.ceil(args.concurrent_calls / args.conc_rounds)
        for r in range(args.conc_rounds):
            order = endpoints[r % len(endpoints):] + endpoints[:r % len(endpoints)]
            for ep in order:
                n = min(per_round, args.concurrent_calls - ep.conc_calls)
                if n > 0:
                    await ep.concurrent(n, INFLIGHT, keep=True)
    finally:
        for ep in endpoints:
            await ep.close()

    # -- report -------------------------------------------------------------------------------------------
    failures: list[str] = []
    print("startup (spawn to initialize answered), ms: " + ", ".join(
        f"{ep.name} {ep.startup_ms:.0f}" for ep in endpoints))
    print()

    print(f"sequential round trip, one call at a time ({args.calls} calls each), ms")
    print(f"{'configuration':<13} {'median':>8} {'p99':>8} {'mean':>8} {'/direct':>8} "
          f"{'added vs direct':>16} {f'added vs {relay.name}':>16}   target (added median vs direct)")
    d_med, r_med = med(direct.seq), med(relay.seq)
    for ep in endpoints:
        m = med(ep.seq)
        row = (f"{ep.name:<13} {m:>8.3f} {pct(ep.seq, 0.99):>8.3f} {statistics.fmean(ep.seq) / 1e6:>8.3f} "
               f"{m / d_med:>7.2f}x")
        target: float | None = None
        if ep is cached:
            target = TARGET_ADDED_CACHED_MS
        elif ep in (uncached, denied, sqlite_ep):
            target = TARGET_ADDED_UNCACHED_MS
        if ep is direct:
            row += f" {'-':>16} {'-':>16}"
        else:
            vs_relay = f"{m - r_med:.3f}" if ep is not relay else "-"
            row += f" {m - d_med:>16.3f} {vs_relay:>16}"
        if target is not None:
            ok = m - d_med <= target
            row += f"   <= {target:.2f} ms  {verdict(ok)}"
            if not ok:
                failures.append(f"{ep.name}: sequential added median {m - d_med:.3f} ms > {target} ms")
        print(row)
    print()

    b_cached, b_uncached = med(baseline[0]), med(baseline[1])
    print(f"where the added latency goes (medians, ms): Guard.decide alone, in process, same policy and calls: "
          f"cached {b_cached:.3f}, uncached {b_uncached:.3f} (p99 {pct(baseline[0], 0.99):.3f} / "
          f"{pct(baseline[1], 0.99):.3f})")
    for ep, b in ((cached, b_cached), (uncached, b_uncached), (sqlite_ep, b_uncached)):
        added = med(ep.seq) - d_med
        print(f"  {ep.name:<12} added {added:.3f} = decision {b:.3f} + relaying/parsing/limits {added - b:.3f}"
              f" (the {relay.name} hop alone: {r_med - d_med:.3f})")
    print(f"  ceiling for one single-threaded proxy, decision time only: cached {1e3 / b_cached:,.0f} calls/s, "
          f"uncached {1e3 / b_uncached:,.0f} calls/s")
    print()

    print(f"concurrent, {INFLIGHT} in flight ({args.concurrent_calls} calls each)")
    print(f"{'configuration':<13} {'calls/s':>9} {'/direct':>8} {'median ms':>10} {'p99 ms':>8}   "
          f"target (calls/s)")
    d_tput = direct.conc_calls / (direct.conc_wall_ns / 1e9)
    for ep in endpoints:
        tput = ep.conc_calls / (ep.conc_wall_ns / 1e9)
        row = (f"{ep.name:<13} {tput:>9.0f} {tput / d_tput:>7.2f}x {med(ep.conc):>10.3f} "
               f"{pct(ep.conc, 0.99):>8.3f}")
        if ep is uncached:
            ok = tput >= TARGET_THROUGHPUT
            row += f"   >= {TARGET_THROUGHPUT:.0f}  {verdict(ok)}"
            if not ok:
                failures.append(f"{ep.name}: {tput:.0f} calls/s with {INFLIGHT} in flight < {TARGET_THROUGHPUT:.0f}")
        print(row)
    print()
    if before:
        print("before -> after, same run (medians, ms; throughput calls/s at 32 in flight)")
        for old, new in before:
            o_t = old.conc_calls / (old.conc_wall_ns / 1e9)
            n_t = new.conc_calls / (new.conc_wall_ns / 1e9)
            print(f"  {new.name:<12} sequential {med(old.seq):.3f} -> {med(new.seq):.3f} "
                  f"({med(new.seq) - med(old.seq):+.3f}, {med(new.seq) / med(old.seq):.2f}x); "
                  f"concurrent {o_t:,.0f} -> {n_t:,.0f} calls/s ({n_t / o_t:.2f}x)")
        print()
    print("ratios are regoguard/direct from this run; 'added' = median difference. The machine is shared: "
          "compare configurations within a run, not across runs.")
    print()
    if failures:
        print("targets missed:")
        for f in failures:
            print(f"  {f}")
        return 1
    print("all targets met")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (~15 s): the minimum call counts")
    ap.add_argument("--calls", type=int, default=None, help="sequential calls per configuration (default 2000)")
    ap.add_argument("--concurrent-calls", type=int, default=None,
                    help="concurrent calls per configuration (default 10000)")
    ap.add_argument("--baseline", type=int, default=None,
                    help="in-process Guard.decide calls for the decision-only baseline (default 1000)")
    ap.add_argument("--timeout", type=float, default=None, help="hard limit on the whole run, s (default 300)")
    ap.add_argument("--tools", type=int, default=N_TOOLS, help=f"tools in the generated policy (default {N_TOOLS})")
    ap.add_argument("--before", metavar="SRC", default=None,
                    help="also run the regoguard configurations with the package in SRC (e.g. a checkout's src/ "
                         "from before a change), measured in the same interleaved rounds")
    args = ap.parse_args()
    args.tools = max(1, args.tools)
    if args.quick:
        defaults = {"calls": 1000, "concurrent_calls": 2000, "rounds": 5, "conc_rounds": 2, "warmup": 100,
                    "conc_warmup": 256, "timeout": 90.0, "baseline": 300}
    else:
        defaults = {"calls": 2000, "concurrent_calls": 10000, "rounds": 10, "conc_rounds": 5, "warmup": 300,
                    "conc_warmup": 1000, "timeout": 300.0, "baseline": 1000}
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.calls = max(1, min(args.calls, 200_000))
    args.concurrent_calls = max(INFLIGHT, min(args.concurrent_calls, 1_000_000))
    args.rounds = min(args.rounds, args.calls)
    args.baseline = max(10, min(args.baseline, 100_000))

    # Backstop: if the loop itself wedges, end our children and leave.
    def alarm(signum: int, frame: Any) -> None:
        for pid in list(_GROUPS):
            kill_group(pid)
        print(f"bench_proxy: hard timeout ({args.timeout + 30:.0f} s): gave up", file=sys.stderr)
        os._exit(2)

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(int(args.timeout) + 30)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
            try:
                baseline = decision_baseline(args.baseline, args.tools)
                return asyncio.run(asyncio.wait_for(run(args, Path(tmp), baseline), args.timeout))
            except TimeoutError:
                print(f"bench_proxy: the run exceeded its {args.timeout:.0f} s timeout", file=sys.stderr)
                return 2
            except BenchError as exc:
                print(f"bench_proxy: {exc}", file=sys.stderr)
                return 2
    finally:
        signal.alarm(0)
        for pid in list(_GROUPS):
            kill_group(pid)


if __name__ == "__main__":
    sys.exit(main())
