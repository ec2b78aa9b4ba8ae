"""Prometheus metrics after a known sequence of calls: ``serve``'s ``/metrics`` and ``run --metrics-listen``;
and the W3C trace context of a call, passed upstream untouched and recorded on its decision event."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

import anyio
import httpx2
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.shared.exceptions import MCPError

from conftest import free_port
from http_harness import serving
from proxy_harness import READ_TIMEOUT, TIMEOUT, python_server, write_policy

POLICY = """\
version: "1"
default: allow
tools:
  delete_customer:
    rules:
      - name: never delete
        action: deny
        on_deny: not here
  echo:
    rules:
      - name: two echoes
        rate_limit: 2/minute
"""


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if match and match.group(1) == name:
            got = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
            if got == want:
                return float(match.group(3))
    return 0.0


async def _sequence(client: Client) -> None:
    for n in range(3):  # two allowed, one rate-limited
        await client.call_tool("echo", {"text": f"{n}"})
    await client.call_tool("delete_customer", {"customer_id": "cus_001"})
    with contextlib.suppress(MCPError):  # allowed (default: allow), and the server has no such tool
        await client.call_tool("not_a_tool_the_policy_names", {})


def _check(text: str) -> None:
    assert sample(text, "regoguard_decisions_total", outcome="allowed", tool="echo", rule="") == 2
    assert sample(text, "regoguard_decisions_total", outcome="denied", tool="echo", rule="echo/two echoes") == 1
    assert sample(text, "regoguard_decisions_total", outcome="denied", tool="delete_customer",
                  rule="delete_customer/never delete") == 1
    assert sample(text, "regoguard_decisions_total", outcome="upstream_error", tool="*", rule="") == 1
    assert sample(text, "regoguard_decision_seconds_count") == 5
    assert sample(text, "regoguard_limit_store_seconds_count") == 3
    assert sample(text, "regoguard_upstream_seconds_count") == 3
    assert sample(text, "regoguard_store_errors_total") == 0


async def test_serve_metrics(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    with serving(policy, command=python_server("spy")) as gw, anyio.fail_after(TIMEOUT):
        async with Client(gw.url, mode="legacy", read_timeout_seconds=READ_TIMEOUT) as client:
            await _sequence(client)
            async with httpx2.AsyncClient(timeout=READ_TIMEOUT) as http:
                during = (await http.get(gw.url.removesuffix("/mcp") + "/metrics")).text
        assert sample(during, "regoguard_active_sessions") == 1
        _check(during)
        async with httpx2.AsyncClient(timeout=READ_TIMEOUT) as http:
            after = (await http.get(gw.url.removesuffix("/mcp") + "/metrics")).text
        assert sample(after, "regoguard_active_sessions") == 0


async def test_run_metrics_and_trace_context(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    port = free_port()
    log = tmp_path / "decisions.jsonl"
    argv = [sys.executable, "-m", "regoguard", "run", "-c", str(policy), "--state", "memory",
            "--metrics-listen", f"127.0.0.1:{port}", "--decision-log", str(log), "--", *python_server("spy")]
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with anyio.fail_after(TIMEOUT):
        async with Client(StdioServerParameters(command=argv[0], args=argv[1:]), mode="legacy",
                          read_timeout_seconds=READ_TIMEOUT) as client:
            await _sequence(client)
            await client.call_tool("echo", {"text": "traced"},
                                   meta={"traceparent": traceparent, "tracestate": "vendor=1"})
            async with httpx2.AsyncClient(timeout=READ_TIMEOUT) as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert sample(text, "regoguard_active_sessions") == 1
    assert sample(text, "regoguard_decisions_total", outcome="denied", tool="echo", rule="echo/two echoes") == 2
    events = [json.loads(line) for line in log.read_text().splitlines()]
    traced = [e for e in events if e.get("trace_context")]
    assert len(traced) == 1 and traced[0]["trace_context"] == {"traceparent": traceparent, "tracestate": "vendor=1"}
    assert traced[0]["input"]["tool"]["arguments"] == {"text": "traced"}
