"""``regoguard serve``: the HTTP front, in front of the stdio spy server (one process per MCP session).

The SDK's own Streamable HTTP and SSE clients for what real clients do, and raw HTTP (httpx2) for what they
never would: sessions crossed or deleted, a foreign Origin or Host, headers that disagree with the body, a
``tools/call`` inside a batch, duplicate keys, content-type and encoding tricks, an oversize body. In every
case the spy's log shows what reached the server, so "never forwarded" is seen, not assumed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.types import CallToolResult, TextContent

from http_harness import Proc, serving
from proxy_harness import MODES, READ_TIMEOUT, TIMEOUT, python_server, spy_tools, stateless_meta, write_policy

POLICY = """\
version: "1"
default: allow
hide: [list_customers]
tools:
  delete_customer:
    rules:
      - name: never delete
        action: deny
        on_deny: deleting customers is not allowed
  echo:
    rules:
      - name: two echoes per session
        rate_limit: {max: 2, window: 60}
        scope: session
"""

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
MODERN = "2026-07-28"


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


@pytest.fixture
def spy_log(tmp_path: Path) -> Path:
    return tmp_path / "spy.jsonl"


@pytest.fixture
async def gateway(tmp_path: Path, spy_log: Path) -> AsyncIterator[Proc]:
    policy = write_policy(tmp_path, POLICY)
    with serving(policy, "--max-message-bytes", "65536", command=python_server("spy"),
                 env={"SPY_LOG": str(spy_log)}) as proc:
        yield proc


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=READ_TIMEOUT) as client:
        yield client


def messages(response: httpx2.Response) -> list[Any]:
    """The JSON-RPC messages of an answer, whether a JSON body or an SSE stream."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("text/event-stream"):
        out: list[Any] = []
        for event in response.text.split("\n\n"):
            data = "\n".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
            if data:
                out.append(json.loads(data))
        return out
    return [json.loads(response.text)] if response.text else []


async def initialize(http: httpx2.AsyncClient, url: str, version: str = "2025-11-25") -> str:
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    r = await http.post(url, json=body, headers=JSON_HEADERS)
    assert r.status_code == 200, r.text
    session = r.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    r2 = await http.post(url, json=note, headers={**JSON_HEADERS, "mcp-session-id": session})
    assert r2.status_code == 202
    return session


def call(id_: Any, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name, "arguments": arguments or {}}}


async def post(http: httpx2.AsyncClient, url: str, body: Any, session: str | None = None,
               **headers: str) -> httpx2.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {**JSON_HEADERS, **({"mcp-session-id": session} if session else {}),
         **{k.replace("_", "-"): v for k, v in headers.items()}}
    return await http.post(url, content=data, headers=h)


# ---- real clients -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_client(gateway: Proc, spy_log: Path, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(gateway.url, mode=mode, read_timeout_seconds=READ_TIMEOUT) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "echo" in names and "list_customers" not in names
            assert text_of(await client.call_tool("echo", {"text": "one"})) == "one"
            denied = await client.call_tool("delete_customer", {"customer_id": "cus_001"})
            assert denied.is_error and "never delete" in text_of(denied)
            assert denied.meta is not None
            assert denied.meta["regoguard/decision"]["rule"] == "delete_customer/never delete"
            hidden = await client.call_tool("list_customers", {})
            assert hidden.is_error
    assert spy_tools(spy_log) == ["echo"]


async def test_legacy_sse_client(gateway: Proc, spy_log: Path) -> None:
    """The deprecated HTTP+SSE transport, with the SDK's SSE client."""
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    url = gateway.url.removesuffix("/mcp") + "/sse"
    with anyio.fail_after(TIMEOUT):
        async with sse_client(url) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            names = {t.name for t in (await session.list_tools()).tools}
            assert "echo" in names and "list_customers" not in names
            assert text_of(await session.call_tool("echo", {"text": "over sse"})) == "over sse"
            denied = await session.call_tool("delete_customer", {"customer_id": "cus_001"})
            assert denied.is_error
    assert spy_tools(spy_log) == ["echo"]


async def test_session_scope_is_the_mcp_session(gateway: Proc, http: httpx2.AsyncClient, spy_log: Path) -> None:
    a = await initialize(http, gateway.url)
    b = await initialize(http, gateway.url)
    for n in range(2):
        assert "error" not in messages(await post(http, gateway.url, call(n + 1, "echo", {"text": "a"}), a))[-1]
    limited = messages(await post(http, gateway.url, call(3, "echo", {"text": "a"}), a))[-1]
    assert limited["result"]["isError"] is True and "two echoes" in limited["result"]["content"][0]["text"]
    fresh = messages(await post(http, gateway.url, call(1, "echo", {"text": "b"}), b))[-1]
    assert fresh["result"].get("isError") is not True
    assert spy_tools(spy_log) == ["echo"] * 3


# ---- sessions -----------------------------------------------------------------------------------


async def test_sessions_are_isolated_and_end(gateway: Proc, http: httpx2.AsyncClient, spy_log: Path) -> None:
    a = await initialize(http, gateway.url)
    b = await initialize(http, gateway.url)
    assert a != b
    missing = await post(http, gateway.url, call(1, "echo", {"text": "x"}))
    assert missing.status_code == 400
    unknown = await post(http, gateway.url, call(1, "echo", {"text": "x"}), "0" * 32)
    assert unknown.status_code == 404
    # the same request id in two sessions: two requests, each answered in its own session
    ra = await post(http, gateway.url, call(7, "echo", {"text": "from a"}), a)
    rb = await post(http, gateway.url, call(7, "echo", {"text": "from b"}), b)
    assert messages(ra)[-1]["result"]["content"][0]["text"] == "from a"
    assert messages(rb)[-1]["result"]["content"][0]["text"] == "from b"
    deleted = await http.delete(gateway.url, headers={"mcp-session-id": a})
    assert deleted.status_code == 200
    after = await post(http, gateway.url, call(8, "echo", {"text": "x"}), a)
    assert after.status_code == 404
    assert (await http.delete(gateway.url, headers={"mcp-session-id": a})).status_code == 404
    still = await post(http, gateway.url, call(8, "echo", {"text": "b again"}), b)
    assert messages(still)[-1]["result"]["content"][0]["text"] == "b again"
    assert spy_tools(spy_log) == ["echo"] * 3


async def test_get_stream_and_modern_get(gateway: Proc, http: httpx2.AsyncClient) -> None:
    a = await initialize(http, gateway.url)
    async with http.stream("GET", gateway.url, headers={"accept": "text/event-stream", "mcp-session-id": a}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        second = await http.get(gateway.url, headers={"accept": "text/event-stream", "mcp-session-id": a})
        assert second.status_code == 409
    modern = await http.get(gateway.url, headers={"accept": "text/event-stream", "mcp-protocol-version": MODERN})
    assert modern.status_code == 405
    assert (await http.delete(gateway.url, headers={"mcp-protocol-version": MODERN})).status_code == 405
    assert (await http.get(gateway.url, headers={"accept": "text/event-stream"})).status_code == 400


# ---- browsers -----------------------------------------------------------------------------------


async def test_origin_and_host_are_checked(gateway: Proc, http: httpx2.AsyncClient, spy_log: Path) -> None:
    port = gateway.url.split(":")[2].split("/")[0]
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "x", "version": "1"}}}
    evil = await post(http, gateway.url, body, origin="http://evil.example")
    assert evil.status_code == 403
    rebound = await post(http, gateway.url, body, host=f"evil.example:{port}")
    assert rebound.status_code == 421
    own = await post(http, gateway.url, body, origin=f"http://localhost:{port}")
    assert own.status_code == 200 and own.headers.get("mcp-session-id")
    assert spy_tools(spy_log) == []


# ---- bodies that try to get past the check ------------------------------------------------------


async def test_modern_headers_must_match_the_body(gateway: Proc, http: httpx2.AsyncClient, spy_log: Path) -> None:
    """2026-07-28: the body decides; a header naming another tool or method is refused, never obeyed."""
    body = call(1, "delete_customer", {"customer_id": "cus_001"})
    body["params"]["_meta"] = stateless_meta()
    lying = await post(http, gateway.url, body, mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name="echo")
    assert lying.status_code == 400 and lying.json()["error"]["code"] == -32020 and lying.json()["id"] == 1
    honest = await post(http, gateway.url, body, mcp_protocol_version=MODERN, mcp_method="tools/call",
                        mcp_name="delete_customer")
    assert honest.status_code == 200
    assert honest.json()["result"]["isError"] is True and honest.json()["result"]["resultType"] == "complete"
    echo = call("abc", "echo", {"text": "modern"})
    echo["params"]["_meta"] = stateless_meta()
    wrong_method = await post(http, gateway.url, echo, mcp_protocol_version=MODERN, mcp_method="tools/list")
    assert wrong_method.status_code == 400
    ok = await post(http, gateway.url, echo, mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name="echo")
    answer = messages(ok)[-1]
    assert answer["id"] == "abc" and answer["result"]["content"][0]["text"] == "modern"
    assert spy_tools(spy_log) == ["echo"]


@pytest.fixture
async def raw_gateway(tmp_path: Path) -> AsyncIterator[tuple[Proc, Path]]:
    """serve in front of tests/servers/raw_echo.py, which answers batches and logs every line it gets."""
    policy = write_policy(tmp_path, POLICY, "raw.yaml")
    log = tmp_path / "raw.log"
    with serving(policy, command=python_server("raw_echo"), env={"RAW_ECHO_LOG": str(log)}) as proc:
        yield proc, log


def raw_lines(log: Path) -> list[Any]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


async def test_a_batch_is_decided_entry_by_entry(raw_gateway: tuple[Proc, Path], http: httpx2.AsyncClient) -> None:
    gateway, log = raw_gateway
    session = await initialize(http, gateway.url, version="2025-03-26")  # the last revision with batches
    batch = [call(1, "delete_customer", {"customer_id": "cus_001"}), call(2, "echo", {"text": "in a batch"}),
             {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}]
    r = await post(http, gateway.url, batch, session)
    assert r.status_code == 200
    answers = {m["id"]: m for m in r.json()}
    assert set(answers) == {1, 2}
    assert answers[1]["result"]["isError"] is True
    assert answers[2]["result"]["content"][0]["text"].startswith("echo ")
    forwarded = [entry for line in raw_lines(log) if isinstance(line, list) for entry in line]
    assert [e.get("params", {}).get("name") for e in forwarded if e.get("method") == "tools/call"] == ["echo"]
    assert len(forwarded) == 2  # the allowed call and the notification; the denied call never left


async def test_a_batch_in_a_session_without_batches_is_answered_not_hung(gateway: Proc, http: httpx2.AsyncClient,
                                                                         spy_log: Path) -> None:
    """2025-11-25 has no batches and the SDK's stdio server drops one unanswered: the POST waited for ever. Now
    each request in it is answered with an error at once, nothing reaches the server, and the session goes on."""
    session = await initialize(http, gateway.url)
    batch = [call(1, "echo", {"text": "in a batch"}), call(2, "delete_customer", {"customer_id": "cus_001"})]
    with anyio.fail_after(TIMEOUT):
        r = await post(http, gateway.url, batch, session)
        assert r.status_code == 200
        answers = r.json()
        assert [a["id"] for a in answers] == [1, 2]
        assert all(a["error"]["code"] == -32600 for a in answers)
        ok = await post(http, gateway.url, call(3, "echo", {"text": "alone"}), session)
    assert messages(ok)[-1]["result"]["content"][0]["text"] == "alone"
    assert spy_tools(spy_log) == ["echo"]


async def test_a_closed_stream_cancels_a_modern_call(raw_gateway: tuple[Proc, Path], http: httpx2.AsyncClient) -> None:
    """2026-07-28: the client closing its response stream is its cancellation, and it reaches the server."""
    gateway, log = raw_gateway
    body = call("slow", "hang")
    body["params"]["_meta"] = stateless_meta()
    headers = {**JSON_HEADERS, "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "hang"}
    with anyio.fail_after(TIMEOUT):
        with anyio.move_on_after(1.0):
            await http.post(gateway.url, content=json.dumps(body).encode(), headers=headers)
        while True:
            sent = raw_lines(log)
            calls = [m for m in sent if isinstance(m, dict) and m.get("method") == "tools/call"]
            cancels = [m for m in sent if isinstance(m, dict) and m.get("method") == "notifications/cancelled"]
            if calls and cancels:
                break
            await anyio.sleep(0.05)
    assert cancels[0]["params"]["requestId"] == calls[0]["id"]  # the id the server knows the call by


async def test_duplicate_keys_and_bad_json_never_pass(gateway: Proc, http: httpx2.AsyncClient, spy_log: Path) -> None:
    session = await initialize(http, gateway.url)
    twice = (b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","name":"delete_customer",'
             b'"arguments":{"customer_id":"cus_001"}}}')
    r = await post(http, gateway.url, twice, session)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700 and r.json()["id"] == 5
    for bad in (b"{not json", b"\xef\xbb\xbf" + json.dumps(call(6, "echo", {"text": "bom"})).encode(),
                json.dumps(call(7, "echo", {"text": "x"})).encode("utf-16")):
        r = await post(http, gateway.url, bad, session)
        assert r.status_code == 400, bad
    # the session goes on
    ok = await post(http, gateway.url, call(8, "echo", {"text": "still here"}), session)
    assert messages(ok)[-1]["result"]["content"][0]["text"] == "still here"
    assert spy_tools(spy_log) == ["echo"]


@pytest.mark.parametrize("headers, status", [
    ({"content-type": "text/plain"}, 415),
    ({"content-type": "application/json; charset=utf-16"}, 415),
    ({"content-encoding": "gzip"}, 415),
    ({"accept": "application/json"}, 406),
    ({"accept": "text/event-stream"}, 406),
], ids=["text-plain", "utf-16", "gzip", "json-only", "sse-only"])
async def test_content_type_and_encoding_tricks(gateway: Proc, http: httpx2.AsyncClient, spy_log: Path,
                                                headers: dict[str, str], status: int) -> None:
    session = await initialize(http, gateway.url)
    body = json.dumps(call(1, "delete_customer", {"customer_id": "cus_001"})).encode()
    r = await http.post(gateway.url, content=body, headers={**JSON_HEADERS, "mcp-session-id": session, **headers})
    assert r.status_code == status
    assert spy_tools(spy_log) == []


async def test_oversize_body(gateway: Proc, http: httpx2.AsyncClient, spy_log: Path) -> None:
    session = await initialize(http, gateway.url)
    big = call(1, "echo", {"text": "x" * 70_000})
    r = await post(http, gateway.url, big, session)
    assert r.status_code == 413
    ok = await post(http, gateway.url, call(2, "echo", {"text": "small"}), session)
    assert messages(ok)[-1]["result"]["content"][0]["text"] == "small"
    assert spy_tools(spy_log) == ["echo"]


async def test_a_request_id_in_flight_is_refused(gateway: Proc, http: httpx2.AsyncClient, spy_log: Path) -> None:
    """Two POSTs under one id at once in one session: one is answered by the server, the other refused."""
    session = await initialize(http, gateway.url)
    results: list[httpx2.Response] = []

    async def send() -> None:
        results.append(await post(http, gateway.url, call(9, "echo", {"text": "same id"}), session))

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        tg.start_soon(send)
    answers = [messages(r)[-1] for r in results]
    assert all(a["id"] == 9 for a in answers)
    assert len(spy_tools(spy_log)) == sum(1 for a in answers if "result" in a) >= 1


async def test_an_id_reused_while_its_call_waits_for_the_tool_list(tmp_path: Path, http: httpx2.AsyncClient) -> None:
    """A call parked until the proxy has the server's tool list (validate: {required_args: true}), and a second
    POST under its id meanwhile: the second is refused and the first gets the server's answer (the refusal
    went to the first POST, whose own answer was then dropped and the second POST never answered)."""
    policy = write_policy(tmp_path, 'version: "1"\ndefault: allow\ntools:\n  echo:\n    rules:\n'
                                    '      - name: args\n        validate: {required_args: true}\n')
    log = tmp_path / "raw.log"
    with serving(policy, command=python_server("raw_echo"),
                 env={"RAW_ECHO_LOG": str(log), "RAW_ECHO_SLOW_TOOLS_LIST": "1.5"}) as gw:
        session = await initialize(http, gw.url)
        answers: dict[str, Any] = {}

        async def send(text: str, after: float) -> None:
            await anyio.sleep(after)
            r = await post(http, gw.url, call(1, "echo", {"text": text}), session)
            answers[text] = messages(r)[-1]

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "first", 0)
                tg.start_soon(send, "second", 0.4)
    assert answers["first"]["result"]["content"][0]["text"] == 'echo {"text": "first"}'
    assert "already in flight" in answers["second"]["error"]["message"]
    calls = [m for m in raw_lines(log) if isinstance(m, dict) and m.get("method") == "tools/call"]
    assert [c["params"]["arguments"] for c in calls] == [{"text": "first"}]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found


async def test_an_idle_session_ends_with_its_server(tmp_path: Path, http: httpx2.AsyncClient) -> None:
    policy = write_policy(tmp_path, POLICY)
    with serving(policy, "--session-idle", "1", command=python_server("spy")) as gateway:
        session = await initialize(http, gateway.url)
        assert len(_children(gateway.proc.pid)) == 1  # this session's server process
        with anyio.fail_after(TIMEOUT):
            while _children(gateway.proc.pid):
                await anyio.sleep(0.1)
        gone = await post(http, gateway.url, call(1, "echo", {"text": "late"}), session)
        assert gone.status_code == 404
        again = await initialize(http, gateway.url)  # a new session starts a new server
        assert again != session and len(_children(gateway.proc.pid)) == 1


async def test_decisions_are_logged_with_the_session(tmp_path: Path, http: httpx2.AsyncClient) -> None:
    policy = write_policy(tmp_path, POLICY)
    log = tmp_path / "decisions.jsonl"
    with serving(policy, "--decision-log", str(log), command=python_server("spy")) as gateway:
        session = await initialize(http, gateway.url)
        await post(http, gateway.url, call(1, "delete_customer", {"customer_id": "cus_001"}), session)
        await post(http, gateway.url, call(2, "echo", {"text": "fine"}), session)
        with anyio.fail_after(TIMEOUT):
            while len(log.read_text().splitlines() if log.exists() else []) < 2:
                await anyio.sleep(0.05)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    outcomes = {e["input"]["tool"]["name"]: e for e in events}
    assert outcomes["delete_customer"]["result"]["allow"] is False
    assert outcomes["echo"]["result"]["allow"] is True
    assert outcomes["echo"]["input"]["session"]["id"] == outcomes["delete_customer"]["input"]["session"]["id"]


async def test_a_dropped_stream_resumes_with_last_event_id(raw_gateway: tuple[Proc, Path],
                                                          http: httpx2.AsyncClient) -> None:
    """2025-11-25: a client whose POST stream drops reconnects with GET and ``Last-Event-ID`` and gets
    what the server sent after that event, here the call's answer."""
    gateway, _log = raw_gateway
    session = await initialize(http, gateway.url)
    slow = call(5, "hang")
    slow["params"]["_meta"] = {"progressToken": "p5"}
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "p5", "progress": 1}}
    answer = {"jsonrpc": "2.0", "id": "$LAST_HANG_ID", "result": {"content": [{"type": "text", "text": "late"}]}}
    headers = {**JSON_HEADERS, "mcp-session-id": session}
    first = ""

    async def read_first_event() -> None:
        nonlocal first
        async with http.stream("POST", gateway.url, content=json.dumps(slow).encode(), headers=headers) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for chunk in stream.aiter_text():
                first += chunk
                if "\n\n" in first:
                    return  # and the connection drops

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_first_event)
            while not raw_lines(_log) or not any(m.get("method") == "tools/call" for m in raw_lines(_log)
                                                 if isinstance(m, dict)):
                await anyio.sleep(0.02)
            emitted = await post(http, gateway.url, {"jsonrpc": "2.0", "id": 6, "method": "emit",
                                                     "params": {"lines": [json.dumps(progress)]}}, session)
            assert emitted.status_code == 200
        event_id = next(line[3:].strip() for line in first.split("\n") if line.startswith("id:"))
        assert "notifications/progress" in first
        # the stream is gone; the server answers the call now
        late = json.dumps(answer)
        await post(http, gateway.url, {"jsonrpc": "2.0", "id": 7, "method": "emit", "params": {"lines": [late]}},
                   session)
        resumed = await http.get(gateway.url, headers={"accept": "text/event-stream", "mcp-session-id": session,
                                                       "last-event-id": event_id}, timeout=3)
    assert resumed.status_code == 200
    got = messages(resumed)
    assert [m.get("id") for m in got] == [5] and got[0]["result"]["content"][0]["text"] == "late"


async def test_a_last_event_id_of_unicode_digits_is_not_ours(gateway: Proc, http: httpx2.AsyncClient) -> None:
    """"²-¹" is digits to str.isdigit, not to int: such a Last-Event-ID names no stream of ours, so the GET
    opens the session's stream as any GET does (it was a 500)."""
    session = await initialize(http, gateway.url)
    headers = {"accept": "text/event-stream", "mcp-session-id": session, "last-event-id": "\xb2-\xb9".encode("latin-1")}
    async with http.stream("GET", gateway.url, headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")


async def test_line_breaks_in_a_body_cannot_smuggle_a_call_to_a_stdio_server(gateway: Proc, http: httpx2.AsyncClient,
                                                                              spy_log: Path) -> None:
    """A body is one message whatever its whitespace: a line break between its tokens must not let the
    stdio server read a denied tools/call hidden in it as a message of its own."""
    session = await initialize(http, gateway.url)
    smuggled = json.dumps(call(99, "delete_customer", {"customer_id": "cus_001"}))
    body = ('{"jsonrpc":"2.0","id":2,"method":"ping","params":{"x":\n' + smuggled + '\n}}').encode()
    r = await post(http, gateway.url, body, session)
    assert r.status_code == 200 and messages(r)[-1]["id"] == 2
    pretty = json.dumps(call(3, "echo", {"text": "pretty"}), indent=2).encode()
    assert messages(await post(http, gateway.url, pretty, session))[-1]["result"]["content"][0]["text"] == "pretty"
    assert spy_tools(spy_log) == ["echo"]


@pytest.mark.parametrize("headers", [{"host": "["}, {"host": "[::1:80"}, {"origin": "http://[x]"}],
                         ids=["host-bracket", "host-v6", "origin-v6"])
async def test_malformed_host_and_origin_are_refused_not_crashed(gateway: Proc, http: httpx2.AsyncClient,
                                                                 headers: dict[str, str]) -> None:
    r = await http.post(gateway.url, content=b"{}", headers={**JSON_HEADERS, **headers})
    assert r.status_code in (403, 421)


async def test_a_schema_fetch_that_never_ends_is_given_up(tmp_path: Path, http: httpx2.AsyncClient) -> None:
    """validate: {required_args: true} makes the proxy list the tools itself; a server that never answers
    that list does not wedge the session: the call is decided without the schema (denied) in bounded time."""
    policy = write_policy(tmp_path, 'version: "1"\ndefault: allow\ntools:\n  echo:\n    rules:\n'
                                    '      - name: args\n        validate: {required_args: true}\n')
    with serving(policy, command=python_server("raw_echo"),
                 env={"RAW_ECHO_LOG": str(tmp_path / "raw.log"), "RAW_ECHO_HANG_TOOLS_LIST": "1"}) as gw:
        session = await initialize(http, gw.url)
        with anyio.fail_after(TIMEOUT):
            r = await http.post(gw.url, json=call(1, "echo", {"text": "x"}),
                                headers={**JSON_HEADERS, "mcp-session-id": session}, timeout=TIMEOUT)
        answer = messages(r)[-1]
        assert answer["id"] == 1 and answer["result"]["isError"] is True
        assert "inputSchema is unknown" in answer["result"]["content"][0]["text"]
