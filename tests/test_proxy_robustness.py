"""The proxy as a process: server death, client EOF, signals, stderr, environment, stray stdout."""

from __future__ import annotations

import asyncio
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
