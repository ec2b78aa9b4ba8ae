"""The proxy as a process: server death, client EOF, signals, stderr, environment, stray stdout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from proxy_harness import (
    TIMEOUT,
    RawProxy,
    denial_of,
    dumps,
    error_of,
    proxied_client,
    proxy_argv,
    python_server,
    request,
    strict_loads,
    tools_call,
    write_policy,
)
from regoguard.proxy.stdio import default_server_name

INTERNAL_ERROR = -32603

POLICY = """\
default: allow
tools:
  delete_customer:
    rules:
      - name: no deletes
        action: deny
        on_deny: Deleting customers needs a human.
"""


async def test_server_death_fails_every_inflight_request_and_proxy_exits_with_its_status(tmp_path: Path) -> None:
    log = tmp_path / "raw.log"
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_LOG": str(log)}) as proxy:
            await proxy.initialize()
            inflight = [tools_call(1, "hang", {}), request("h", "hang"), request(2.5, "hang"),
                        tools_call("also", "hang", {"x": 1})]
            for msg in inflight:
                await proxy.send(msg)
            denial_of(await proxy.call(tools_call("denied", "delete_customer", {"customer_id": "c"})))
            answered = await proxy.call(tools_call("answered", "echo", {"text": "done"}))
            assert "result" in answered
            await proxy.send(request("die", "die", {"code": 3}))
            for id_ in [1, "h", 2.5, "also", "die"]:
                err = error_of(await proxy.response(id_), INTERNAL_ERROR)
                assert "exited" in err["message"], err
            assert await proxy.wait() == 3
            # one answer per request, no more
            ids = [m["id"] for m in proxy.messages if isinstance(m, dict) and "id" in m]
            assert sorted(map(str, ids)) == sorted(map(str, ["init", 1, "h", 2.5, "also", "denied", "answered", "die"]))
            proxy.assert_all_json()
            assert "raw_echo: dying with status 3" in proxy.stderr_text()


async def test_server_death_mid_call_with_the_sdk_client(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    errors: list[MCPError] = []
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("raw_echo"), "legacy") as client:
            assert client.server_info is not None and client.server_info.name == "raw-echo"

            async def call(name: str) -> None:
                try:
                    await client.call_tool(name, {"code": 3})
                except MCPError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "hang")
                await anyio.sleep(0.2)
                tg.start_soon(call, "die")
    assert len(errors) == 2
    assert all(e.code == INTERNAL_ERROR and "exited" in str(e) for e in errors), errors


async def test_client_eof_closes_server_stdin_and_proxy_exits(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo")) as proxy:
            await proxy.initialize()
            await proxy.close_stdin()
            assert await proxy.wait(timeout=5) == 0
            assert "raw_echo: stdin closed" in proxy.stderr_text()
            assert "got SIGTERM" not in proxy.stderr_text()


async def test_client_eof_with_a_server_that_ignores_it_is_bounded(tmp_path: Path) -> None:
    """The server does not exit at EOF: after the grace period (5 s) the proxy terminates it."""
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"), env={"RAW_ECHO_IGNORE_EOF": "1"}) as proxy:
            await proxy.initialize()
            await proxy.close_stdin()
            code = await proxy.wait(timeout=15)
            assert code == 128 + signal.SIGTERM
            assert "raw_echo: stdin closed" in proxy.stderr_text()
            assert "raw_echo: got SIGTERM" in proxy.stderr_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signals_are_forwarded_to_the_server(signum: int, tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo")) as proxy:
            await proxy.initialize()
            await proxy.send(request("pending", "hang"))
            await proxy.settle()
            proxy.send_signal(signum)
            code = await proxy.wait(timeout=10)
            error_of(await proxy.response("pending"), INTERNAL_ERROR)
            stderr = proxy.stderr_text()
            if signum == signal.SIGTERM:
                assert "raw_echo: got SIGTERM" in stderr
                assert code == 128 + signal.SIGTERM
            else:  # Python's default SIGINT: KeyboardInterrupt, then death by SIGINT
                assert "KeyboardInterrupt" in stderr
                assert code == 128 + signal.SIGINT
            assert "raw_echo: stdin closed" not in stderr  # it died of the signal, not of EOF


async def test_server_stderr_passes_through_and_environment_is_inherited(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    marker = f"marker-{os.getpid()}-{tmp_path.name}"
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo"),
                                  env={"RAW_ECHO_MARKER": marker, "REGOGUARD_TEST_X": "x-value ✓"}) as proxy:
            answer = await proxy.call(request("env", "env", {"name": "REGOGUARD_TEST_X"}))
            assert answer["result"] == {"value": "x-value ✓"}
            answer = await proxy.call(request("env2", "env", {"name": "REGOGUARD_TEST_UNSET"}))
            assert answer["result"] == {"value": None}
            await proxy.close_stdin()
            await proxy.wait()
            assert f"raw_echo: started {marker}" in proxy.stderr_text()


async def test_environment_reaches_the_server_through_the_sdk_client(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        env = {"REGOGUARD_TEST_X": "via-sdk"}
        async with proxied_client(policy, python_server("raw_echo"), "legacy", env=env) as client:
            r = await client.call_tool("env", {"name": "REGOGUARD_TEST_X"})
            assert r.content[0].text == '"via-sdk"'  # type: ignore[union-attr]
            r = await client.call_tool("echo", {"text": "hi"})
            assert not r.is_error


async def test_server_stdout_noise_never_reaches_the_client(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    noise = [
        "Starting server on stdio...",
        "",
        "   ",
        "DEBUG {not json}",
        '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":NaN}}',
        '{"jsonrpc":"2.0","method":"notifications/message","params":{"a":1,"a":2}}',
        '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"valid"}}',
        "[1, 2",
    ]
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo")) as proxy:
            answer = await proxy.call(request("e", "emit", {"lines": noise}))
            assert answer["result"] == {"emitted": len(noise)}
            answer = await proxy.call(tools_call("after", "echo", {"text": "after"}))
            assert "result" in answer
            proxy.assert_all_json()
            methods = [m.get("method") for m in proxy.messages if isinstance(m, dict)]
            assert methods.count("notifications/message") == 1
            assert [m.get("id") for m in proxy.messages if isinstance(m, dict) and "id" in m] == ["e", "after"]
            assert "not JSON-RPC" in proxy.stderr_text()  # logged for the operator, on stderr


async def test_server_json_that_is_not_json_rpc_is_dropped_and_answers_nothing(tmp_path: Path) -> None:
    """A method that is not a string is no request or notification; an object with the id of a call in flight
    but neither result nor error is no answer: neither reaches the client, and the call still gets the
    server's real answer (the id-only object used to take its place, and the real one was dropped)."""
    policy = write_policy(tmp_path, POLICY)
    bogus = ['{"jsonrpc":"2.0","method":5,"params":1}', '{"jsonrpc":"2.0","id":"$LAST_HANG_ID"}',
             '{"jsonrpc":"2.0","id":"$LAST_HANG_ID","result":{"content":[{"type":"text","text":"real"}]}}']
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, python_server("raw_echo")) as proxy:
            await proxy.send(tools_call("slow", "hang"))
            await proxy.call(request("e", "emit", {"lines": bogus}))
            answer = await proxy.response("slow")
            assert answer["result"]["content"][0]["text"] == "real"
            await proxy.call(request("p", "ping"))
            proxy.assert_all_json()
            assert [m.get("id") for m in proxy.messages if isinstance(m, dict)] == ["slow", "e", "p"]


async def test_server_that_cannot_start(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with RawProxy.start(policy, [str(tmp_path / "no-such-server")]) as proxy:
            assert await proxy.wait() == 127
            assert "cannot start MCP server" in proxy.stderr_text()
            assert proxy.lines == []


async def test_stdio_may_be_regular_files(tmp_path: Path) -> None:
    """``regoguard run ... < requests.jsonl > answers.jsonl``: stdin and stdout need not be pipes."""
    policy = write_policy(tmp_path, POLICY)
    requests = tmp_path / "requests.jsonl"
    answers = tmp_path / "answers.jsonl"
    requests.write_bytes(dumps(tools_call(1, "echo", {"text": "from a file"}))
                         + dumps(tools_call(2, "delete_customer", {"customer_id": "c"})))
    with anyio.fail_after(TIMEOUT), requests.open("rb") as stdin, answers.open("wb") as stdout:
        proc = await asyncio.create_subprocess_exec(
            *proxy_argv(policy, python_server("raw_echo")), stdin=stdin, stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    by_id = {m["id"]: m for m in map(strict_loads, answers.read_bytes().splitlines())}
    assert by_id[1]["result"]["content"][0]["text"] == 'echo {"text": "from a file"}'
    denial_of(by_id[2])


@pytest.mark.parametrize("file", [True, False], ids=["file", "pipe"])
async def test_calls_waiting_for_the_tool_list_at_client_eof_still_run(tmp_path: Path, file: bool) -> None:
    """A client that sends its calls and closes its stdin (``< calls.jsonl``) while they wait for the proxy's
    own tools/list (validate: {required_args: true}): they still reach the server and are answered. The
    server's stdin was closed at the client's EOF, so they were answered "the MCP server exited"."""
    policy = write_policy(tmp_path, 'default: allow\ntools:\n  echo:\n    rules:\n'
                                    '      - name: args\n        validate: {required_args: true}\n')
    requests = tmp_path / "requests.jsonl"
    answers = tmp_path / "answers.jsonl"
    requests.write_bytes(dumps(tools_call(1, "echo", {"text": "one"})) + dumps(tools_call(2, "echo", {"text": "two"})))
    with anyio.fail_after(TIMEOUT), requests.open("rb") as source, answers.open("wb") as stdout:
        proc = await asyncio.create_subprocess_exec(
            *proxy_argv(policy, python_server("raw_echo")), stdin=source if file else asyncio.subprocess.PIPE,
            stdout=stdout, stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await proc.communicate(None if file else requests.read_bytes())
    assert proc.returncode == 0, stderr.decode()
    by_id = {m["id"]: m for m in map(strict_loads, answers.read_bytes().splitlines())}
    texts = [by_id[i]["result"]["content"][0]["text"] for i in (1, 2)]
    assert texts == ['echo {"text": "one"}', 'echo {"text": "two"}']


async def test_stdio_may_be_dev_null(tmp_path: Path) -> None:
    """``regoguard run ... < /dev/null > /dev/null``: a character device the event loop cannot watch. The
    client's EOF must still end the session (it once hung with a traceback from inside the loop)."""
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT), open(os.devnull, "rb") as stdin, open(os.devnull, "wb") as stdout:
        proc = await asyncio.create_subprocess_exec(
            *proxy_argv(policy, python_server("raw_echo")), stdin=stdin, stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()



@pytest.mark.parametrize(("command", "name"), [
    (["npx", "-y", "@modelcontextprotocol/server-filesystem", "/tmp"], "server-filesystem"),
    (["node", "/x/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js", "/tmp"], "server-filesystem"),
    (["node", "servers/payments/build/main.mjs"], "payments"),
    (["python3", "tests/servers/spy.py"], "spy"),
    (["uvx", "mcp-server-time"], "mcp-server-time"),
    (["python", "-m", "server"], "server"),
    (["./index.js"], "index"),
])
def test_default_server_name_names_the_server_not_its_entry_script(command: list[str], name: str) -> None:
    """The name lands in counter keys and log labels: ``index`` for every npm server would merge them."""
    assert default_server_name(command) == name


def _accepted_bytes(fd: int, message: bytes, most: int, stall: float) -> int:
    """How much of ``most`` bytes of ``message`` copies a non-blocking pipe takes before it stays full for
    ``stall`` seconds."""
    import time

    os.set_blocking(fd, False)
    sent, blocked_since = 0, None
    view = memoryview(message)
    offset = 0
    while sent < most:
        try:
            n = os.write(fd, view[offset:])
        except BlockingIOError:
            now = time.monotonic()
            blocked_since = blocked_since or now
            if now - blocked_since > stall:
                return sent
            time.sleep(0.01)
            continue
        blocked_since = None
        sent += n
        offset = (offset + n) % len(message)
        if offset:
            view = memoryview(message)
    return sent


def test_a_server_that_stops_reading_makes_the_proxy_stop_reading_the_client(tmp_path: Path) -> None:
    """Back-pressure: what the proxy holds for a server that does not read is bounded by the pipes and
    one read, so a client writing faster than the server reads is held up, not buffered without end."""
    import subprocess
    import sys

    policy = write_policy(tmp_path, POLICY)
    server = [sys.executable, "-c", "import time; time.sleep(60)"]  # never reads its stdin
    proc = subprocess.Popen(proxy_argv(policy, server, "--state", "memory"), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None
        # a notification (no id to answer or to clash), forwarded as it is
        message = dumps({"jsonrpc": "2.0", "method": "notifications/roots/list_changed",
                         "params": {"_meta": {"note": "x" * 4000}}})
        most = 32 * 1024 * 1024
        accepted = _accepted_bytes(proc.stdin.fileno(), message, most, stall=2.0)
        # two 64 KiB pipes, the transport's high-water mark, one 64 KiB read and one batch: well under 2 MiB
        assert accepted < 2 * 1024 * 1024, f"the proxy took {accepted} bytes for a server that reads none"
        assert proc.poll() is None  # held up, not failed
    finally:
        proc.kill()
        proc.wait(timeout=10)


FLOOD = """\
import json, sys
count_path = sys.argv[1]
line = (json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                    "params": {"level": "info", "data": "x" * 4000}}) + "\\n").encode()
written = 0
while written < 64 * 1024 * 1024:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()
    written += len(line)
    with open(count_path, "w") as f:
        f.write(str(written))
"""


def test_a_client_that_stops_reading_makes_the_proxy_stop_reading_the_server(tmp_path: Path) -> None:
    """The other way: a server flooding a client that reads nothing is held up by the proxy's full pipe
    to the client, not buffered by the proxy without end."""
    import subprocess
    import sys
    import time

    policy = write_policy(tmp_path, POLICY)
    count = tmp_path / "written"
    server = [sys.executable, "-c", FLOOD, str(count)]
    proc = subprocess.Popen(proxy_argv(policy, server, "--state", "memory"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the server has been held up for a second
            time.sleep(0.1)
            written = int(count.read_text() or 0) if count.exists() else 0
            if written != last:
                last, stable_since = written, time.monotonic()
            elif written and time.monotonic() - stable_since > 1.0:
                break
        assert 0 < last < 2 * 1024 * 1024, f"the server wrote {last} bytes to a client that reads none"
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=10)


SLOW_BIG_ANSWERS = """\
import json, sys, time
for line in sys.stdin.buffer:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    time.sleep(0.002)
    body = {"jsonrpc": "2.0", "id": msg["id"], "result": {"contents": [{"uri": "x", "text": "y" * 100000}]}}
    sys.stdout.buffer.write((json.dumps(body) + "\\n").encode())
    sys.stdout.buffer.flush()
"""


def test_a_slow_server_with_large_answers_gets_every_request_while_its_stdin_is_full(tmp_path: Path) -> None:
    """A server that is slow to read its stdin while it writes answers larger than a pipe holds: the
    proxy keeps reading the answers (holding them back would block the server mid-write, and it would
    never read again), and every request is answered."""
    import subprocess
    import sys
    import threading

    policy = write_policy(tmp_path, POLICY)
    proc = subprocess.Popen(proxy_argv(policy, [sys.executable, "-c", SLOW_BIG_ANSWERS], "--state", "memory"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    n = 200
    answered: set[int] = set()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            answered.add(strict_loads(line)["id"])
            if len(answered) == n:
                return

    def write() -> None:
        assert proc.stdin is not None
        pad = "p" * 4000  # 200 requests of 4 KB: more than the server's stdin pipe and high-water mark hold
        with contextlib.suppress(OSError):  # the proxy is killed below if it deadlocked
            for i in range(n):
                proc.stdin.write(dumps({"jsonrpc": "2.0", "id": i, "method": "resources/read",
                                        "params": {"uri": "file:///x", "_meta": {"pad": pad}}}))
            proc.stdin.flush()

    reader = threading.Thread(target=read, daemon=True)
    writer = threading.Thread(target=write, daemon=True)
    reader.start()
    writer.start()
    try:
        reader.join(timeout=60)
        assert answered == set(range(n)), f"{n - len(answered)} requests never answered"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_calls_released_by_the_servers_tool_list_do_not_stall_its_answers(tmp_path: Path) -> None:
    """Calls that waited for the proxy's own tools/list (validate: {required_args: true}) are released by the
    server's answer, in one burst larger than its stdin holds. Reading the server goes on while that drains:
    a server that answers one line at a time writes 100 KB answers meanwhile, and pausing its stdout for its
    own stdin (as for a client's writes) left both waiting on each other, with only initialize answered."""
    import subprocess
    import threading

    policy = write_policy(tmp_path, 'default: allow\ntools:\n  echo:\n    rules:\n'
                                    '      - name: args\n        validate: {required_args: true}\n')
    proc = subprocess.Popen(proxy_argv(policy, python_server("raw_echo"), "--state", "memory"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    big = "x" * 100_000
    lines = [request(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                       "clientInfo": {"name": "t", "version": "1"}}),
             *(tools_call(i, "echo", {"text": big}) for i in range(1, 6)), request("ping", "ping")]
    answered: set[object] = set()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            answered.add(strict_loads(line)["id"])
            if len(answered) == len(lines):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.stdin.write(b"".join(dumps(m) for m in lines))
        proc.stdin.flush()
        reader.join(timeout=30)
        assert answered == {0, 1, 2, 3, 4, 5, "ping"}
    finally:
        proc.kill()
        proc.wait(timeout=10)
