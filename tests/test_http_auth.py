"""``regoguard serve`` as an OAuth 2.1 resource server: bearer JWTs minted here from a test key set.

Tokens are signed with PyJWT by the test (RSA and EC keys made with ``cryptography``, published as a JWKS
file or served over HTTP on 127.0.0.1); the gateway runs as a subprocess in front of the spy server and is
reached with raw HTTP and with the SDK's client. Forged and stale tokens never get a session, a session
belongs to whoever opened it, and the principal a token names is the one the decision sees and the
``principal`` limits count.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from http_harness import Proc, json_server, serving
from proxy_harness import READ_TIMEOUT, TIMEOUT, python_server, spy_tools, write_policy

ISSUER = "https://auth.example.test"
POLICY = """\
version: "1"
default: allow
tools:
  echo:
    rules:
      - name: two echoes per user
        rate_limit: {max: 2, window: 60}
        scope: principal
"""
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


class Keys:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self, *, with_ec: bool = True) -> dict[str, Any]:
        keys = [_jwk(self.rsa.public_key(), "rsa-1", "RS256")]
        if with_ec:
            keys.append(_jwk(self.ec.public_key(), "ec-1", "ES256"))
        return {"keys": keys}

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)


def _jwk(public: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    doc = json.loads(algorithm.to_jwk(public))
    return {**doc, "kid": kid, "alg": alg, "use": "sig"}


def token(key: Any, audience: str, *, sub: str = "alice", kid: str = "rsa-1", alg: str = "RS256",
          issuer: str = ISSUER, expires_in: float = 300, scope: str = "mcp:tools", **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": sub, "iss": issuer, "aud": audience, "iat": now, "exp": now + int(expires_in),
               "scope": scope, **claims}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def _hs256_by_hand(secret: bytes, audience: str) -> str:
    """The RS/HS confusion attack: HS256 keyed with the RSA *public* key (PyJWT refuses to mint one)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps({"sub": "mallory", "iss": ISSUER, "aud": audience, "exp": int(time.time()) + 300,
                           "scope": "mcp:tools"}).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@contextlib.contextmanager
def gateway(tmp_path: Path, keys: Keys, *options: str, jwks: str | None = None, log: Path | None = None,
            policy_text: str = POLICY) -> Iterator[Proc]:
    policy = write_policy(tmp_path, policy_text, "auth.yaml")
    if jwks is None:
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps(keys.jwks()))
        jwks = str(path)
    with serving(policy, "--jwks", jwks, "--issuer", ISSUER, "--required-scope", "mcp:tools", *options,
                 command=python_server("spy"), env={"SPY_LOG": str(log or tmp_path / "spy.jsonl")}) as proc:
        yield proc


async def _init(http: httpx2.AsyncClient, url: str, bearer: str | None) -> httpx2.Response:
    headers = {**HEADERS, **({"authorization": f"Bearer {bearer}"} if bearer else {})}
    return await http.post(url, json=INIT, headers=headers)


async def test_tokens_are_verified(tmp_path: Path, keys: Keys) -> None:
    with gateway(tmp_path, keys) as gw:
        aud = gw.url
        forged = {
            "none": None,
            "expired": token(keys.rsa, aud, expires_in=-120),
            "wrong audience": token(keys.rsa, "http://127.0.0.1:1/mcp"),
            "wrong issuer": token(keys.rsa, aud, issuer="https://evil.example"),
            "unknown kid": token(keys.stranger, aud, kid="rsa-9"),
            "wrong key, known kid": token(keys.stranger, aud),
            "alg none": jwt.encode({"sub": "alice", "aud": aud, "iss": ISSUER, "exp": int(time.time()) + 300},
                                   None, algorithm="none"),
            "HS256 with the public key": _hs256_by_hand(keys.public_pem(), aud),
            "not yet valid": token(keys.rsa, aud, nbf=int(time.time()) + 600),
            "garbage": "not.a.jwt",
        }
        async with httpx2.AsyncClient(timeout=READ_TIMEOUT) as http:
            for label, bearer in forged.items():
                r = await _init(http, gw.url, bearer)
                assert r.status_code == 401, (label, r.status_code, r.text)
                assert "mcp-session-id" not in r.headers, label
                challenge = r.headers["www-authenticate"]
                assert challenge.startswith("Bearer ") and "resource_metadata=" in challenge, label
            few = await _init(http, gw.url, token(keys.rsa, aud, scope="profile"))
            assert few.status_code == 403 and 'error="insufficient_scope"' in few.headers["www-authenticate"]
            for good in (token(keys.rsa, aud), token(keys.ec, aud, kid="ec-1", alg="ES256")):
                ok = await _init(http, gw.url, good)
                assert ok.status_code == 200 and ok.headers.get("mcp-session-id"), ok.text
            metadata_url = challenge.split('resource_metadata="')[1].split('"')[0]
            meta = (await http.get(metadata_url)).json()
            assert meta["resource"] == gw.url and meta["authorization_servers"] == [ISSUER]
            assert meta["scopes_supported"] == ["mcp:tools"]


async def test_a_session_belongs_to_its_principal(tmp_path: Path, keys: Keys) -> None:
    log = tmp_path / "spy.jsonl"
    with gateway(tmp_path, keys, log=log) as gw:
        alice, bob = token(keys.rsa, gw.url, sub="alice"), token(keys.rsa, gw.url, sub="bob")
        async with httpx2.AsyncClient(timeout=READ_TIMEOUT) as http:
            session = (await _init(http, gw.url, alice)).headers["mcp-session-id"]
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo",
                                                                               "arguments": {"text": "hi"}}}
            as_bob = await http.post(gw.url, json=call, headers={**HEADERS, "authorization": f"Bearer {bob}",
                                                                 "mcp-session-id": session})
            assert as_bob.status_code == 404
            anonymous = await http.post(gw.url, json=call, headers={**HEADERS, "mcp-session-id": session})
            assert anonymous.status_code == 401
            as_alice = await http.post(gw.url, json=call, headers={**HEADERS, "authorization": f"Bearer {alice}",
                                                                   "mcp-session-id": session})
            assert as_alice.status_code == 200
    assert spy_tools(log) == ["echo"]


async def _calls(url: str, bearer: str, n: int) -> list[bool]:
    """``n`` echo calls in one SDK session; True for each one allowed."""
    allowed = []
    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {bearer}"}, timeout=READ_TIMEOUT) as http, \
            streamable_http_client(url, http_client=http) as streams, ClientSession(streams[0], streams[1]) as s:
        await s.initialize()
        for i in range(n):
            result = await s.call_tool("echo", {"text": f"call {i}"})
            allowed.append(not result.is_error)
    return allowed


async def test_principal_limits_and_the_decision_log(tmp_path: Path, keys: Keys) -> None:
    decisions = tmp_path / "decisions.jsonl"
    with gateway(tmp_path, keys, "--decision-log", str(decisions)) as gw, anyio.fail_after(TIMEOUT):
        alice = token(keys.rsa, gw.url, sub="alice", groups=["admins"])
        bob = token(keys.rsa, gw.url, sub="bob")
        assert await _calls(gw.url, alice, 1) == [True]
        assert await _calls(gw.url, alice, 2) == [True, False]  # a new session, the same user: one left
        assert await _calls(gw.url, bob, 2) == [True, True]
        while len(decisions.read_text().splitlines() if decisions.exists() else []) < 5:
            await anyio.sleep(0.05)
    events = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert [e["input"]["principal"]["id"] for e in events] == ["alice"] * 3 + ["bob"] * 2
    assert events[0]["input"]["principal"]["claims"]["groups"] == ["admins"]
    assert [e["result"]["allow"] for e in events] == [True, True, False, True, True]


async def test_a_remote_jwks_is_fetched_again_for_a_new_key(tmp_path: Path, keys: Keys) -> None:
    jwks_doc = keys.jwks(with_ec=False)
    with json_server(jwks_doc) as jwks, gateway(tmp_path, keys, jwks=jwks.base + "/jwks.json") as gw:
        async with httpx2.AsyncClient(timeout=READ_TIMEOUT) as http:
            assert (await _init(http, gw.url, token(keys.rsa, gw.url))).status_code == 200
            assert len(jwks.hits) == 1  # at start, then cached
            rotated = token(keys.ec, gw.url, kid="ec-1", alg="ES256")
            jwks.document = keys.jwks(with_ec=True)  # the issuer publishes a new key
            # The unknown kid starts a fetch off the request's path; that request is refused, and a
            # retry once the keys are in is accepted.
            assert (await _init(http, gw.url, rotated)).status_code == 401
            with anyio.fail_after(TIMEOUT):
                while True:
                    if (await _init(http, gw.url, rotated)).status_code == 200:
                        break
                    await anyio.sleep(0.1)
            assert len(jwks.hits) == 2
            for _ in range(3):  # unknown kids do not make the gateway fetch on every request
                assert (await _init(http, gw.url, token(keys.stranger, gw.url, kid="nope"))).status_code == 401
            await anyio.sleep(0.3)
            assert len(jwks.hits) == 2


async def test_replicas_share_principal_limits_through_redis(tmp_path: Path, keys: Keys, redis_url: str,
                                                             redis_prefix: str) -> None:
    """Three gateways on one Redis: a user's calls spread across them, and the limit holds to the call."""
    policy = POLICY.replace("max: 2", "max: 5")
    state = ("--state", redis_url, "--state-prefix", redis_prefix)
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(gateway(tmp_path / f"r{i}", keys, *state, "--audience", "regoguard-fleet",
                                                policy_text=policy))
                    for i in range(3) if (tmp_path / f"r{i}").mkdir() is None]
        alice = token(keys.rsa, "regoguard-fleet", sub="alice")
        with anyio.fail_after(TIMEOUT):
            results = [allowed for gw in replicas for allowed in await _calls(gw.url, alice, 3)]
    assert results.count(True) == 5 and results[:5] == [True] * 5


async def test_the_team_gateway_example(tmp_path: Path, keys: Keys) -> None:
    """policies/team-gateway.yaml: admins may delete (a condition on the token's claims), everyone is
    rate-limited per user, through the SDK client."""
    root = Path(__file__).resolve().parents[1]
    log = tmp_path / "spy.jsonl"
    example = (root / "policies" / "team-gateway.yaml").read_text()
    with gateway(tmp_path, keys, log=log, policy_text=example) as gw, anyio.fail_after(TIMEOUT):
        ada = token(keys.rsa, gw.url, sub="ada", groups=["admins", "eng"])
        bo = token(keys.rsa, gw.url, sub="bo", groups=["eng"])
        results: dict[str, list[str]] = {}
        for who, bearer in (("ada", ada), ("bo", bo)):
            async with httpx2.AsyncClient(headers={"authorization": f"Bearer {bearer}"}, timeout=READ_TIMEOUT) as h, \
                    streamable_http_client(gw.url, http_client=h) as streams, \
                    ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                deleted = await s.call_tool("delete_customer", {"customer_id": f"cus_{who}"})
                echoes = [await s.call_tool("echo", {"text": str(i)}) for i in range(4)]
                results[who] = ["denied" if deleted.is_error else "deleted"] + \
                               ["denied" if r.is_error else "ok" for r in echoes]
    assert results["ada"] == ["deleted", "ok", "ok", "ok", "denied"]
    assert results["bo"] == ["denied", "ok", "ok", "ok", "denied"]
    assert spy_tools(log) == ["delete_customer"] + ["echo"] * 6


VISIBLE_POLICY = """\
version: "1"
default: allow
tools:
  delete_customer:
    visible_to:
      - {path: principal.claims.groups, op: contains, value: admins}
    rules: []
  create_refund:
    visible_to:
      - {path: principal.id, op: in, value: [ada, bo]}
      - {path: session.client.name, op: regex, value: "^mcp"}
    rules: []
"""


async def test_visible_to_depends_on_who_asks(tmp_path: Path, keys: Keys) -> None:
    """A tool with ``visible_to`` exists only for callers it holds for: gone from the others' tools/list,
    and their calls to it denied (never forwarded)."""
    log = tmp_path / "spy.jsonl"
    with gateway(tmp_path, keys, log=log, policy_text=VISIBLE_POLICY) as gw, anyio.fail_after(TIMEOUT):
        seen: dict[str, tuple[set[str], bool, bool]] = {}
        for who, groups in (("ada", ["admins"]), ("bo", ["eng"]), ("cy", ["admins"])):
            bearer = token(keys.rsa, gw.url, sub=who, groups=groups)
            async with httpx2.AsyncClient(headers={"authorization": f"Bearer {bearer}"}, timeout=READ_TIMEOUT) as h, \
                    streamable_http_client(gw.url, http_client=h) as streams, \
                    ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                names = {t.name for t in (await s.list_tools()).tools}
                deleted = await s.call_tool("delete_customer", {"customer_id": f"cus_{who}"})
                refunded = await s.call_tool("create_refund", {"amount": 1})
                seen[who] = (names & {"delete_customer", "create_refund", "echo"}, not deleted.is_error,
                             not refunded.is_error)
    assert seen["ada"] == ({"delete_customer", "create_refund", "echo"}, True, True)
    assert seen["bo"] == ({"create_refund", "echo"}, False, True)
    assert seen["cy"] == ({"delete_customer", "echo"}, True, False)
    assert spy_tools(log) == ["delete_customer", "create_refund", "create_refund", "delete_customer"]


async def test_the_callers_token_never_goes_upstream(tmp_path: Path, keys: Keys) -> None:
    """Upstream sees the gateway's own credentials (``--header`` with ``${VAR}``), never the client's token."""
    from http_harness import spy_http

    headers_log = tmp_path / "headers.jsonl"
    policy = write_policy(tmp_path, POLICY, "up.yaml")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(keys.jwks()))
    with spy_http(tmp_path / "spy.jsonl", headers_log=headers_log) as upstream, \
            serving(policy, "--jwks", str(jwks), "--issuer", ISSUER, "--header", "Authorization: Bearer ${UP_TOKEN}",
                    upstream=upstream, env={"UP_TOKEN": "gateway-secret"}) as gw, anyio.fail_after(TIMEOUT):
        bearer = token(keys.rsa, gw.url, sub="ada")
        assert await _calls(gw.url, bearer, 1) == [True]
    seen = [json.loads(line)["authorization"] for line in headers_log.read_text().splitlines()]
    assert seen and set(seen) == {"Bearer gateway-secret"}
    assert not any(bearer in (s or "") for s in seen)


ADMINS_ONLY = """\
version: "1"
default: allow
tools:
  delete_customer:
    rules:
      - name: admins only
        conditions:
          - {path: principal.claims.groups, op: contains, value: admins}
"""


async def test_a_session_reads_the_claims_of_the_latest_token(tmp_path: Path, keys: Keys) -> None:
    """A user who lost the admins group loses what it allowed on the next request, in the session opened
    while they had it and in the relay their 2026-07-28 requests share."""
    log = tmp_path / "spy.jsonl"
    with gateway(tmp_path, keys, log=log, policy_text=ADMINS_ONLY) as gw, anyio.fail_after(TIMEOUT):
        admin = token(keys.rsa, gw.url, sub="bob", groups=["admins"])
        demoted = token(keys.rsa, gw.url, sub="bob", groups=["eng"])
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "delete_customer", "arguments": {"customer_id": "c1"}}}
        async with httpx2.AsyncClient(timeout=READ_TIMEOUT) as http:
            session = (await _init(http, gw.url, admin)).headers["mcp-session-id"]

            async def post(bearer: str, body: dict[str, Any], **extra: str) -> dict[str, Any]:
                r = await http.post(gw.url, json=body, headers={**HEADERS, "authorization": f"Bearer {bearer}",
                                                                **extra})
                assert r.status_code == 200, r.text
                text = r.text
                if r.headers["content-type"].startswith("text/event-stream"):
                    text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
                return json.loads(text)  # type: ignore[no-any-return]

            assert (await post(admin, call, **{"mcp-session-id": session}))["result"].get("isError") is not True
            assert (await post(demoted, call, **{"mcp-session-id": session}))["result"]["isError"] is True
            modern = {**call, "params": {**call["params"], "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}}
            routing = {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call",
                       "mcp-name": "delete_customer"}
            assert (await post(admin, modern, **routing))["result"].get("isError") is not True
            assert (await post(demoted, modern, **routing))["result"]["isError"] is True
    assert spy_tools(log) == ["delete_customer", "delete_customer"]


async def test_a_legacy_sse_session_reads_the_claims_of_each_posts_token(tmp_path: Path, keys: Keys) -> None:
    """The legacy transport too: each POST /messages is decided with its own token's claims, not those of
    the token that opened GET /sse (the stream can outlive a group membership and that token's expiry)."""
    log = tmp_path / "spy.jsonl"
    with gateway(tmp_path, keys, log=log, policy_text=ADMINS_ONLY) as gw, anyio.fail_after(TIMEOUT):
        admin = token(keys.rsa, gw.url, sub="bob", groups=["admins"])
        demoted = token(keys.rsa, gw.url, sub="bob", groups=["eng"])
        events: list[dict[str, Any]] = []
        async with httpx2.AsyncClient(timeout=READ_TIMEOUT) as http, \
                http.stream("GET", gw.url.removesuffix("/mcp") + "/sse",
                            headers={"accept": "text/event-stream", "authorization": f"Bearer {admin}"}) as stream:
            lines = stream.aiter_lines()

            async def next_data() -> str:
                async for line in lines:
                    if line.startswith("data:"):
                        return line[5:].strip()
                raise AssertionError("the SSE stream ended")

            endpoint = gw.url.removesuffix("/mcp") + await next_data()

            async def send(bearer: str, body: dict[str, Any]) -> None:
                r = await http.post(endpoint, json=body, headers={"content-type": "application/json",
                                                                  "authorization": f"Bearer {bearer}"})
                assert r.status_code == 202, r.text

            await send(admin, {**INIT, "params": {**INIT["params"], "protocolVersion": "2024-11-05"}})
            await next_data()
            await send(admin, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            for n, bearer in enumerate((admin, demoted, admin), start=1):
                await send(bearer, {"jsonrpc": "2.0", "id": n, "method": "tools/call",
                                    "params": {"name": "delete_customer", "arguments": {"customer_id": f"c{n}"}}})
                events.append(json.loads(await next_data()))
    assert [e["id"] for e in events] == [1, 2, 3]
    assert [e["result"].get("isError") is True for e in events] == [False, True, False]
    assert spy_tools(log) == ["delete_customer", "delete_customer"]
