"""One MCP session's relay logic, free of any transport: message in → messages out.

A transport feeds :class:`RelayCore` each line it reads (``client_line``, ``server_line``) and sends what
comes back in the :class:`Outbox`; it calls ``tick`` now and then and ``server_closed`` when the server is
gone. The core never does I/O, never awaits and never raises, so stdio and HTTP share it unchanged, and
tests can drive it step by step.

What it guarantees, whatever either side sends:

- every ``tools/call`` is decided by the guard before anything of it goes upstream, and a denied one never
  does (batches entry by entry; a call without an id, with params that do not parse or under an id already
  in flight is answered by the proxy, never forwarded);
- every request goes upstream under an id the proxy assigned (:mod:`regoguard.proxy.inflight`), and only
  that id is rewritten; the answer goes back under the client's id exactly as written;
- each client request gets one answer; an answer for an id never sent, or a second one, is dropped;
- refunds, the decision log and ``tools/list`` filtering follow the exact request the answer is for;
- nothing but JSON-RPC objects (or batches of them) reaches the client;
- a message that cannot be parsed, bounded or handled gets a JSON-RPC error and the next one is read.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import structlog

from regoguard.approvals import ApprovalRecord
from regoguard.approvals.book import new_id
from regoguard.decision import Decision, Reason
from regoguard.guard import Guard, Verdict
from regoguard.pinning import Pinning
from regoguard.proxy import elicit, ids, jsonrpc
from regoguard.proxy.inflight import InFlight, Kind, Pending
from regoguard.proxy.jsonrpc import BATCHLESS_PROTOCOL
from regoguard.proxy.replies import (
    call_doc,
    denial_reply,
    error_reply,
    may_have_run,
    params_problem,
    reply,
    upstream_error,
)
from regoguard.proxy.session import Session

log = structlog.get_logger("regoguard.proxy")

SCHEMA_FETCH_TIMEOUT = 10.0
SCHEMA_FETCH_MAX_PAGES = 100
DEFAULT_MAX_IN_FLIGHT = 10_000


@dataclass(frozen=True)
class CoreOptions:
    refund_on_tool_error: bool = False
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    schema_fetch_timeout: float = SCHEMA_FETCH_TIMEOUT
    schema_fetch_max_pages: int = SCHEMA_FETCH_MAX_PAGES
    pinning: Pinning | None = None


@dataclass(frozen=True)
class ToClient:
    """One message (or batch) for the client, unframed; ``answers`` names the client requests it answers
    (their id keys), so a transport with one stream per request knows where it goes."""

    data: bytes
    answers: tuple[Hashable, ...] = ()
    related: Hashable | None = None  # the client request a server notification belongs to, when it says
    duplicate: bool = False  # the refusal of a request that reused the id of one still in flight


@dataclass
class Outbox:
    to_server: list[bytes] = field(default_factory=list)
    to_client: list[ToClient] = field(default_factory=list)


@dataclass
class _Fetch:
    upstream: int
    pages: int
    deadline: float
    meta: dict[str, Any] | None


@dataclass
class _Routed:
    """What becomes of one client message: text for the server, or for the client, or nothing."""

    upstream: str | None = None
    client: str | None = None
    answers: tuple[Hashable, ...] = ()
    duplicate: bool = False  # ``client`` refuses a request under the id of one still in flight


_PARK = _Routed()  # sentinel: the line waits for the proxy's own tools/list


@dataclass
class _Held:
    """A call waiting for the user's answer to the proxy's elicitation request."""

    msg: dict[str, Any]
    text: str
    raw_id: str
    key: Hashable
    verdict: Verdict
    record: ApprovalRecord
    deadline: float


class RelayCore:
    """One client session relayed to one server session.

    Args:
        guard: decides every ``tools/call``.
        session: what is known of the client (names, schemas) for the input document.
        options: bounds and refund rules.
        clock: monotonic seconds (tests drive it).
    """

    def __init__(self, guard: Guard, session: Session, options: CoreOptions | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.guard = guard
        self.session = session
        self.options = options or CoreOptions()
        self._clock = clock
        self.inflight = InFlight(self.options.max_in_flight)
        self._parked: deque[tuple[bytes, bool]] = deque()  # (line, whether its client can be asked)
        self._can_ask = True  # the line being handled may get a question back (not in a batch, a JSON answer)
        self._fetch: _Fetch | None = None
        self._closed: str | None = None  # why the server is gone, once it is
        self._out = Outbox()
        self._held: dict[str, _Held] = {}  # elicitation request id -> the call it asks about

    @property
    def waiting_for_tools(self) -> bool:
        """Client lines wait for the proxy's own tools/list (given up after ``schema_fetch_timeout`` by
        :meth:`tick`, and answered if the server goes): a transport closing the server's stdin at the
        client's EOF waits for them first, or they would never be sent."""
        return bool(self._parked) or self._fetch is not None

    def _busy(self, key: Hashable) -> bool:
        """A client request under ``key`` is still waiting: upstream, or held for the user's approval."""
        return self.inflight.client_busy(key) or any(h.key == key for h in self._held.values())

    # -- entry points ------------------------------------------------------------------------------------

    def client_line(self, line: bytes, can_ask: bool = True) -> Outbox:
        """One message (or batch) from the client. ``can_ask``: the transport can carry a request of the
        proxy's own back to the client before the answer (false for an HTTP exchange answered as JSON)."""
        if self._parked or self._fetch is not None:
            self._parked.append((line, can_ask))  # order is kept: nothing overtakes a call waiting for schemas
            return self._flush()
        try:
            self._can_ask = can_ask
            self._client_line(line, may_park=True)
        except Exception as exc:  # never the end of the session, never a forward
            log.exception("internal error while handling a client line; answered with an error")
            self._out.to_server.clear()
            self._to_client(error_reply(ids.salvage_id(line.rstrip(b"\r\n")), jsonrpc.INTERNAL_ERROR,
                                        f"regoguard could not handle this message: {exc}"))
        return self._flush()

    def client_oversize(self, size: int, limit: int, head: bytes = b"") -> Outbox:
        """The transport skipped a client message larger than it accepts; ``head`` is its start, where the
        id of a request usually is: the error is under that id when it can be read, so the client's request
        is answered rather than left waiting (else under ``null``)."""
        log.warning("oversize message from client", size=size, limit=limit)
        # only a request's id, and none while lines are parked (their ids are not known yet)
        raw = ids.salvage_id(head, head=True) if head and not self._parked and _names_method(head) else None
        key = _key_of(raw)
        if key is not None and self._busy(key):
            raw = key = None  # the id of a request in flight: its error must not look like that request's answer
        self._to_client(error_reply(raw, jsonrpc.INVALID_REQUEST,
                                    f"message of {size} bytes exceeds the proxy's limit of {limit}"), key)
        return self._flush()

    def server_line(self, line: bytes) -> Outbox:
        """One message (or batch) from the server."""
        try:
            self._server_line(line)
        except Exception:
            log.exception("internal error while relaying a server message; it was dropped")
        return self._flush()

    def tick(self) -> Outbox:
        """Let time pass: a schema fetch that took too long is given up (the calls waiting for it are then
        decided without the schema, so a validating rule denies them); a call whose user did not answer
        the approval request in time is denied."""
        now = self._clock()
        for eid in [eid for eid, h in self._held.items() if now >= h.deadline]:
            held = self._held.pop(eid)
            self._out.to_client.append(ToClient(_cancelled(eid, "no answer in time"), related=held.key))
            self._end_hold(held, "approval/timeout", f"nobody answered the approval request within "
                           f"{held.record.timeout} s, so the call was not run", "expired")
        if self._fetch is not None and self._clock() >= self._fetch.deadline:
            log.warning("the server did not list its tools in time to validate arguments",
                        timeout=self.options.schema_fetch_timeout)
            self.inflight.retire(self._fetch.upstream)
            self._fetch = None
            try:
                self._unpark()
            except Exception:
                log.exception("internal error while handling the calls that waited for the tool list")
        return self._flush()

    def server_closed(self, reason: str = "the MCP server exited before answering") -> Outbox:
        """The server is gone: every request still waiting is answered with an error. No refund: a server
        that died mid-call may have done the work, so its tokens stay taken."""
        self._closed = reason
        self._fetch = None
        self._unpark()  # what waited is answered below or, being new, refused by _route
        self._out.to_server.clear()
        for eid, held in self._held.items():
            self._out.to_client.append(ToClient(_cancelled(eid, reason), related=held.key))
            self._to_client(error_reply(held.raw_id, jsonrpc.INTERNAL_ERROR, reason), held.key)
            self.guard.approval_event("cancelled", held.record.but(status="cancelled", reason=reason),
                                      reason=reason, session=self.session.id)
            held.verdict.decision = Decision.deny("approval/server-gone", reason)
            self.guard.finish(held.verdict)
        self._held.clear()
        for _, pending in self.inflight.drain():
            if pending.kind == "internal":
                continue
            self._to_client(error_reply(pending.client_id, jsonrpc.INTERNAL_ERROR, reason), pending.key)
            if pending.verdict is not None:
                self.guard.finish(pending.verdict, {"message": reason}, refund=False)
        return self._flush()

    def _flush(self) -> Outbox:
        out, self._out = self._out, Outbox()
        return out

    def _to_client(self, text: str, *answers: Hashable | None, related: Hashable | None = None,
                   duplicate: bool = False) -> None:
        self._out.to_client.append(ToClient(text.encode("utf-8"), tuple(a for a in answers if a is not None),
                                            related, duplicate))

    # -- client → server ---------------------------------------------------------------------------------

    def _client_line(self, line: bytes, may_park: bool) -> None:
        body = line.rstrip(b"\n").removesuffix(b"\r")
        if not body.strip():
            return
        try:
            msg = jsonrpc.loads(body, exact_floats=True)  # the rules decide on the numbers the server reads
            text = body.decode("utf-8")
        except jsonrpc.ParseError as exc:
            self._to_client(error_reply(ids.salvage_id(body), jsonrpc.PARSE_ERROR, f"Parse error: {exc}"))
            return
        if isinstance(msg, list):
            self._client_batch(line, msg, text, may_park)
            return
        routed = self._route_safely(msg, text, len(body), may_park)
        if routed is _PARK:
            self._park(line, msg)
            return
        if routed.upstream is not None:
            self._out.to_server.append(routed.upstream.encode("utf-8"))
        if routed.client is not None:
            self._to_client(routed.client, *routed.answers, duplicate=routed.duplicate)

    def _client_batch(self, line: bytes, batch: list[Any], text: str, may_park: bool) -> None:
        if not batch:
            self._to_client(error_reply(None, jsonrpc.INVALID_REQUEST, "empty batch"))
            return
        spans = ids.element_spans(text)
        version = self.session.protocol_version
        if version is not None and version >= BATCHLESS_PROTOCOL:
            self._refuse_batch(batch, text, spans, version)
            return
        if may_park:
            for entry in batch:
                if self._needs_fetch(entry):
                    self._park(line, entry)
                    return
        forwarded: list[str | None] = []
        answers: list[str] = []
        answered: list[Hashable] = []
        self._can_ask = False  # a batch is answered as one: a question in between would never be seen
        for entry, (begin, end) in zip(batch, spans, strict=True):
            piece = text[begin:end]
            routed = self._route_safely(entry, piece, len(piece.encode("utf-8", "surrogatepass")), may_park=False)
            forwarded.append(routed.upstream)
            if routed.client is not None:
                answers.append(routed.client)
                answered.extend(routed.answers)
        if any(part is not None for part in forwarded):
            self._out.to_server.append(ids.splice(text, spans, forwarded).encode("utf-8"))
        if answers:
            self._to_client("[" + ",".join(answers) + "]", *answered)

    def _refuse_batch(self, batch: list[Any], text: str, spans: list[tuple[int, int]], version: str) -> None:
        """A batch in a session whose protocol has none: nothing of it is forwarded (servers of such versions
        drop a batch unanswered, and its client would wait for ever); each request in it gets an error."""
        why = f"JSON-RPC batches are not part of MCP {BATCHLESS_PROTOCOL} and later; this session uses {version}"
        answers: list[str] = []
        answered: list[Hashable] = []
        for entry, (begin, end) in zip(batch, spans, strict=True):
            if not (isinstance(entry, dict) and "method" in entry and "id" in entry):
                continue
            if entry["method"] == "tools/call":
                self.guard.finish(self.guard.reject("proxy/batch", why, call_doc(entry)))
            answers.append(error_reply(_raw_id_or_none(text[begin:end]), jsonrpc.INVALID_REQUEST, why))
            answered.append(ids.id_key(entry["id"]))
        log.warning("refused a JSON-RPC batch", protocol=version, entries=len(batch))
        if answers:
            self._to_client("[" + ",".join(answers) + "]", *answered)

    def _route_safely(self, msg: Any, text: str, size: int, may_park: bool) -> _Routed:
        """Route one message; whatever goes wrong, answer it with an error and forward nothing of it."""
        try:
            return self._route(msg, text, size, may_park)
        except Exception as exc:
            log.exception("internal error while handling a client message; answered with an error")
            raw = _raw_id_or_none(text) if isinstance(msg, dict) and "method" in msg else None
            if raw is None:
                return _Routed()
            return _Routed(client=error_reply(raw, jsonrpc.INTERNAL_ERROR,
                                              f"regoguard could not handle this message: {exc}"),
                           answers=(ids.id_key(msg["id"]),))

    def _route(self, msg: Any, text: str, size: int, may_park: bool) -> _Routed:
        if not isinstance(msg, dict):
            return _Routed(client=error_reply(None, jsonrpc.INVALID_REQUEST, "a message must be a JSON object"))
        if "method" not in msg:
            if "id" in msg and ("result" in msg or "error" in msg):
                if isinstance(msg["id"], str) and msg["id"].startswith(elicit.ID_PREFIX):
                    held = self._held.pop(msg["id"], None)
                    if held is None:  # a late or second answer to the proxy's own question: never the server's
                        log.debug("dropped an answer to an approval request no longer open")
                        return _Routed()
                    return self._elicited(held, msg)
                return _Routed(upstream=text)  # the client's answer to a server request: the server's ids
            return _Routed(client=error_reply(_raw_id_or_none(text), jsonrpc.INVALID_REQUEST,
                                              "not a JSON-RPC request, notification or response"))
        method = msg["method"]
        if "id" not in msg:
            return self._notification(msg, text, method)
        raw_id = ids.raw_id(text)
        assert raw_id is not None
        key = ids.id_key(msg["id"])
        if not isinstance(method, str):
            return _Routed(client=error_reply(raw_id, jsonrpc.INVALID_REQUEST, "method must be a string"),
                           answers=(key,))
        if self._busy(key):
            if method == "tools/call":
                self.guard.finish(self.guard.reject("proxy/duplicate-id", "a request under an id already in "
                                                    "flight is never forwarded", call_doc(msg)))
            return _Routed(client=error_reply(raw_id, jsonrpc.INVALID_REQUEST,
                                              f"request id {raw_id[:100]} is already in flight; ids must be "
                                              "unique within a session"), answers=(key,), duplicate=True)
        if self._closed is not None:
            return _Routed(client=error_reply(raw_id, jsonrpc.INTERNAL_ERROR, self._closed), answers=(key,))
        if self.inflight.full or len(self.inflight) + len(self._held) >= self.inflight.max_pending:
            return _Routed(client=error_reply(raw_id, jsonrpc.INTERNAL_ERROR,
                                              f"more than {self.inflight.max_pending} requests in flight"),
                           answers=(key,))
        self.session.note_meta(msg)
        if method == "tools/call":
            return self._tools_call(msg, text, raw_id, key, size, may_park)
        if method == "initialize":
            self.session.note_initialize(msg)
        kind: Kind = "list" if method == "tools/list" else "initialize" if method == "initialize" else "request"
        upstream = self.inflight.add(Pending(kind, raw_id, key))
        return _Routed(upstream=ids.with_id(text, str(upstream)))

    def _notification(self, msg: dict[str, Any], text: str, method: Any) -> _Routed:
        if method == "tools/call":
            log.warning("dropped a tools/call notification (no id): it cannot be answered, so it is never forwarded")
            self.guard.finish(self.guard.reject("proxy/no-id", "a tools/call without an id is never forwarded",
                                                call_doc(msg)))
            return _Routed()
        if method == "notifications/cancelled":
            return self._cancel(msg, text)
        return _Routed(upstream=text)

    def _cancel(self, msg: dict[str, Any], text: str) -> _Routed:
        """A cancellation names the client's id; the server knows the request by ours."""
        params = msg.get("params")
        if not isinstance(params, dict) or "requestId" not in params:
            return _Routed(upstream=text)  # names no request: harmless as it is
        upstream = self.inflight.upstream_for(ids.id_key(params["requestId"]))
        if upstream is None:
            key = ids.id_key(params["requestId"])
            eid = next((eid for eid, h in self._held.items() if h.key == key), None)
            if eid is not None:  # the client gave up on a call waiting for approval: so does the proxy
                held = self._held.pop(eid)
                self._out.to_client.append(ToClient(_cancelled(eid, "the call was cancelled"), related=key))
                self._end_hold(held, "approval/cancelled", "the client cancelled the call while it waited for "
                               "approval", "cancelled", answer=False)
                return _Routed()
            log.debug("dropped a cancellation for a request not in flight")
            return _Routed()
        pending = self.inflight.retire(upstream)
        if pending is not None and pending.verdict is not None:
            # The server may already have acted: a cancelled call keeps its tokens, whatever it answers.
            self.guard.finish(pending.verdict, {"message": "cancelled by the client"}, refund=False)
        p_span = ids.member_span(text, "params")
        assert p_span is not None
        span = ids.member_span(text, "requestId", p_span[0])
        assert span is not None
        return _Routed(upstream=text[:span[0]] + str(upstream) + text[span[1]:])

    def _tools_call(self, msg: dict[str, Any], text: str, raw_id: str, key: Hashable, size: int,
                    may_park: bool) -> _Routed:
        params = msg.get("params")
        problem = params_problem(params)
        if problem is not None:
            verdict = self.guard.reject("proxy/invalid-params", problem, call_doc(msg))
            self.guard.finish(verdict)
            log.debug("denied", tool=None, rule=verdict.decision.rule, reason=problem)
            return _Routed(client=error_reply(raw_id, jsonrpc.INVALID_PARAMS, f"Invalid params: {problem}",
                                              {"regoguard/decision": verdict.meta()}), answers=(key,))
        assert isinstance(params, dict)
        name: str = params["name"]
        if may_park and self._needs_fetch(msg):
            return _PARK
        pinned = self._pin_problem(name)
        if pinned is not None:
            verdict = self.guard.reject("pin/changed", pinned, call_doc(msg))
            self.guard.finish(verdict)
            log.debug("denied", tool=name, rule="pin/changed", reason=pinned)
            return _Routed(client=denial_reply(raw_id, msg, name, verdict), answers=(key,))
        arguments = params.get("arguments") or {}
        schema = self.session.schemas.get(name) if self.guard.needs_schema(name) else None
        # a 2026-07-28 request cannot be answered with a question to the client: approvals go out of band
        can_ask = self._can_ask and self.session.elicit_form and not jsonrpc.is_stateless(msg)
        verdict = self.guard.decide(self.session.input_document(name, arguments, schema), size, elicit=can_ask,
                                    arguments_text=lambda: _arguments_text(text))
        verdict.trace = jsonrpc.trace_context(msg)
        if verdict.hold is not None and verdict.approval is None and verdict.decision.action == "require_approval" \
                and can_ask and verdict.hold.approver == "user":
            return self._ask(msg, text, raw_id, key, verdict)
        if not verdict.allow:
            if verdict.decision.action == "require_approval":  # a person may be waiting to hear of it
                log.info("held for approval", tool=name, rule=verdict.decision.rule,
                         approval_id=verdict.approval.id if verdict.approval else None, decision_id=verdict.decision_id)
            else:
                log.debug("denied", tool=name, rule=verdict.decision.rule, reason=verdict.decision.message,
                          decision_id=verdict.decision_id)
            self.guard.finish(verdict)
            return _Routed(client=denial_reply(raw_id, msg, name, verdict), answers=(key,))
        if verdict.would_deny:
            log.debug("would deny (dry run)", tool=name, rule=verdict.decision.rule,
                     reason=verdict.decision.message, decision_id=verdict.decision_id)
        upstream = self.inflight.add(Pending("call", raw_id, key, verdict))
        return _Routed(upstream=ids.with_id(text, str(upstream)))

    # -- approval by the agent's user (elicitation) ------------------------------------------------------

    def _ask(self, msg: dict[str, Any], text: str, raw_id: str, key: Hashable, verdict: Verdict) -> _Routed:
        """Hold the call and ask the user: an ``elicitation/create`` request on the call's own stream."""
        assert verdict.hold is not None
        eid = elicit.new_request_id()
        record = self.guard.new_record(verdict, new_id(), time.time())
        record = record.but(approver="user (elicitation)")
        verdict.approval = record
        self._held[eid] = _Held(msg, text, raw_id, key, verdict, record, self._clock() + verdict.hold.timeout)
        self.guard.approval_event("requested", record, session=self.session.id)
        ask = elicit.request(eid, record.tool, record.server, record.arguments, record.rule, record.message,
                             record.timeout)
        self._out.to_client.append(ToClient(jsonrpc.encode(ask), related=key))
        log.debug("held for the user's approval", tool=record.tool, rule=record.rule, request=eid)
        return _Routed()

    def _elicited(self, held: _Held, msg: dict[str, Any]) -> _Routed:
        """The user answered: run the call as approved (its limits taken now), or deny it."""
        approved, what = elicit.answer(msg)
        who = self.session.principal or self.session.client_name or "the agent's user"
        if not approved:
            routed = self._end_hold(held, "approval/declined", f"the call needed approval and {what}", "denied",
                                    by=who)
            return routed
        record = held.record.but(status="approved", decided_by=who, reason=what, decided_at=time.time())
        self.guard.approval_event("approved", record, approver=who, reason=what, session=self.session.id)
        pinned = self._pin_problem(record.tool)  # the server may have changed the tool while the user looked
        if pinned is not None:
            held.verdict.decision = Decision(False, "deny", (Reason("pin/changed", pinned),), (),
                                             extra={"approval_id": record.id})
            self.guard.finish(held.verdict)
            return _Routed(client=denial_reply(held.raw_id, held.msg, record.tool, held.verdict), answers=(held.key,))
        verdict = self.guard.granted(held.verdict)
        verdict.approval = record.but(status="consumed")  # in no store: its decision event names it
        if not verdict.allow:
            self.guard.finish(verdict)
            return _Routed(client=denial_reply(held.raw_id, held.msg, record.tool, verdict),
                           answers=(held.key,))
        self.guard.approval_event("consumed", verdict.approval, session=self.session.id)
        if self._closed is not None:
            self.guard.finish(verdict, {"message": self._closed})
            return _Routed(client=error_reply(held.raw_id, jsonrpc.INTERNAL_ERROR, self._closed), answers=(held.key,))
        upstream = self.inflight.add(Pending("call", held.raw_id, held.key, verdict))
        return _Routed(upstream=ids.with_id(held.text, str(upstream)))

    def _end_hold(self, held: _Held, rule: str, message: str, event: str | None, answer: bool = True,
                  by: str | None = None) -> _Routed:
        """The held call is not run: denied (and answered, unless the client cancelled it)."""
        if event is not None:
            self.guard.approval_event(event, held.record.but(status=event, decided_by=by, reason=message),
                                      approver=by, reason=message, session=self.session.id)
        held.verdict.decision = Decision(False, "deny", (Reason(rule, message),), (),
                                         extra={"approval_id": held.record.id})
        self.guard.finish(held.verdict)
        if not answer:
            return _Routed()
        reply_text = denial_reply(held.raw_id, held.msg, held.record.tool, held.verdict)
        if event == "expired":  # from tick: no line to answer, so it goes out directly
            self._to_client(reply_text, held.key)
            return _Routed()
        return _Routed(client=reply_text, answers=(held.key,))

    # -- the proxy's own tools/list, for validate: {required_args: true} ----------------------------------

    def _needs_fetch(self, msg: Any) -> bool:
        """A ``tools/call`` whose decision reads a schema the proxy has not seen (the client never listed)."""
        if not (isinstance(msg, dict) and msg.get("method") == "tools/call" and "id" in msg):
            return False
        params = msg.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        if not isinstance(name, str) or name in self.session.schemas or self.session.schemas_complete:
            return False
        return self.options.pinning is not None or self.guard.needs_schema(name)

    def _park(self, line: bytes, trigger: dict[str, Any]) -> None:
        self._parked.append((line, self._can_ask))
        meta = jsonrpc.request_meta(trigger) if jsonrpc.is_stateless(trigger) else None
        self._request_tools(None, 1, meta)

    def _request_tools(self, cursor: Any, page: int, meta: dict[str, Any] | None) -> None:
        params: dict[str, Any] = {}
        if cursor is not None:
            params["cursor"] = cursor
        if meta:
            params["_meta"] = meta
        upstream = self.inflight.add(Pending("internal"))
        self._fetch = _Fetch(upstream, page, self._clock() + self.options.schema_fetch_timeout, meta)
        self._out.to_server.append(jsonrpc.encode({"jsonrpc": "2.0", "id": upstream, "method": "tools/list",
                                                   "params": params}))

    def _fetched(self, upstream: int, msg: dict[str, Any]) -> None:
        fetch = self._fetch
        if fetch is None or fetch.upstream != upstream:
            return
        self._fetch = None
        result = msg.get("result")
        if not isinstance(result, dict):
            log.warning("could not list the server's tools to validate arguments", error=msg.get("error"))
        else:
            try:
                self.session.note_tools(result.get("tools"))
                self._check_pins(result.get("tools"))
            except Exception:  # never leave the parked calls waiting: they are decided without this page
                log.exception("could not read the server's tool list")
            cursor = result.get("nextCursor")
            if not cursor:
                self.session.schemas_complete = True
            elif fetch.pages < self.options.schema_fetch_max_pages:
                self._request_tools(cursor, fetch.pages + 1, fetch.meta)
                return
        self._unpark()

    def _unpark(self) -> None:
        """Handle the lines that waited, in order; none of them waits again for this fetch."""
        while self._parked and self._fetch is None:
            line, self._can_ask = self._parked.popleft()
            self._client_line(line, may_park=False)

    # -- server → client ---------------------------------------------------------------------------------

    def _server_line(self, line: bytes) -> None:
        body = line.rstrip(b"\n").removesuffix(b"\r")
        if not body.strip():
            return
        try:
            msg = jsonrpc.loads(body)
            text = body.decode("utf-8")
        except jsonrpc.ParseError as exc:
            self._unreadable_answer(body, str(exc))
            return
        if isinstance(msg, list):
            spans = ids.element_spans(text)
            kept: list[str | None] = []
            answered: list[Hashable] = []
            for entry, (begin, end) in zip(msg, spans, strict=True):
                out = self._server_message(entry, text[begin:end])
                kept.append(out[0] if out is not None else None)
                answered.extend(out[1] if out is not None else ())
            if any(part is not None for part in kept):
                self._to_client(ids.splice(text, spans, kept), *answered)
            return
        if isinstance(msg, dict) and "method" in msg and "id" not in msg:
            related = self._subscription(msg, text)
            if related is not None:
                self._to_client(related[0], related=related[1])
                return
        out = self._server_message(msg, text)
        if out is not None:
            self._to_client(out[0], *out[1])

    def _subscription(self, msg: dict[str, Any], text: str) -> tuple[str, Hashable] | None:
        """A notification of a 2026-07-28 ``subscriptions/listen`` stream names its request by the id the
        server saw (``_meta`` subscriptionId): the proxy's; the client gets its own id back, and the
        transport learns which request's stream it belongs to."""
        params = msg.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        upstream = meta.get(jsonrpc.META_SUBSCRIPTION_ID) if isinstance(meta, dict) else None
        pending = self.inflight.peek(upstream) if type(upstream) is int else None
        if pending is None or pending.client_id is None:
            return None
        p_span = ids.member_span(text, "params")
        m_span = ids.member_span(text, "_meta", p_span[0]) if p_span is not None else None
        span = ids.member_span(text, jsonrpc.META_SUBSCRIPTION_ID, m_span[0]) if m_span is not None else None
        if span is None:
            return None
        return text[:span[0]] + pending.client_id + text[span[1]:], pending.key

    def _unreadable_answer(self, body: bytes, problem: str) -> None:
        """A server line that does not parse: kept off the client's stream. If it names a request of ours,
        that request is answered with an error rather than left waiting."""
        log.warning("dropped a line from the server that is not JSON-RPC", error=problem,
                    line=body[:200].decode("utf-8", "replace"))
        raw = ids.salvage_id(body)
        upstream = _upstream_id(raw)
        pending = self.inflight.pop(upstream) if upstream is not None else None
        if pending is None:
            return
        if pending.kind == "internal":
            self._fetched(upstream or 0, {"error": {"message": problem}})
            return
        message = f"the MCP server sent an answer regoguard cannot read: {problem}"
        self._to_client(error_reply(pending.client_id, jsonrpc.INTERNAL_ERROR, message), pending.key)
        if pending.verdict is not None:
            self.guard.finish(pending.verdict, {"message": message}, refund=False)

    def _server_message(self, msg: Any, text: str) -> tuple[str, tuple[Hashable, ...]] | None:
        """The text to relay for one server message (with the client's id restored), or None to drop it."""
        if not isinstance(msg, dict):
            log.warning("dropped a server message that is not a JSON-RPC object", line=text[:200])
            return None
        if "method" in msg:
            if not isinstance(msg["method"], str):
                log.warning("dropped a server message whose method is not a string", line=text[:200])
                return None
            if msg["method"] == "notifications/tools/list_changed":
                self.session.forget_tools()
            return text, ()  # a server request or notification: the server's own ids, passed through
        if "id" not in msg or ("result" not in msg and "error" not in msg):
            # not an answer: the request it names stays in flight, for the server's real answer
            log.warning("dropped a server message that is not JSON-RPC", line=text[:200])
            return None
        upstream = msg["id"]
        pending = self.inflight.pop(upstream) if type(upstream) is int else None
        if pending is None:
            if type(upstream) is int and self.inflight.is_late(upstream):
                log.debug("dropped a late answer to a request that was cancelled or given up")
            else:
                log.warning("dropped an answer for an id regoguard never sent or that was already answered",
                            id=text[:100] if not isinstance(upstream, int | str) else upstream)
            return None
        if pending.kind == "internal":
            self._fetched(upstream, msg)
            return None
        assert pending.client_id is not None
        if pending.verdict is not None:
            error = upstream_error(msg)
            if may_have_run(msg):  # the proxy's own error for an answer it could not read: as if the server died
                self.guard.finish(pending.verdict, error, refund=False, answered=False)
            else:
                refund = "error" in msg or (error is not None and self.options.refund_on_tool_error)
                self.guard.finish(pending.verdict, error, refund, answered=True)
        if pending.kind == "initialize":
            self.session.note_negotiated(msg)
        if pending.kind == "list":
            filtered = self._filter_tools_list(msg)
            if filtered is not None:
                return reply(pending.client_id, filtered), (pending.key,)
        return ids.with_id(text, pending.client_id), (pending.key,)

    def _filter_tools_list(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """The answer without hidden tools (None: nothing to remove). Every page is filtered; ``nextCursor``
        and every other field stay."""
        result = msg.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return None
        tools = result["tools"]
        self.session.note_tools(tools)
        self._check_pins(tools)
        if self.guard.dry_run:  # nothing is blocked in a dry run, hidden tools included
            return None
        kept = [t for t in tools if not (isinstance(t, dict) and isinstance(t.get("name"), str)
                                         and (self.guard.is_hidden(t["name"]) or not self._visible(t["name"])
                                              or self._pin_denies(t["name"])))]
        if len(kept) == len(tools):
            return None
        body = {k: v for k, v in msg.items() if k not in ("jsonrpc", "id")}
        body["result"] = {**result, "tools": kept}
        return body

    # -- tool pinning ------------------------------------------------------------------------------------

    def _check_pins(self, tools: Any) -> None:
        """Compare a listing with the pins; a tool that is new or changed is remembered (and logged once
        per session and reason)."""
        pinning = self.options.pinning
        if pinning is None or not isinstance(tools, list):
            return
        for name, why, fields in pinning.check(tools):
            if why is None:
                self.session.unpinned.pop(name, None)
                continue
            if self.session.unpinned.get(name) != why:
                action = "warn" if self.guard.dry_run else pinning.on_change  # a dry run blocks nothing
                log.warning("a tool is not its pinned definition", tool=name, reason=why, on_change=action)
                self.guard.tool_changed(name, why, fields, action, self.session.id, self.session.server_name)
            self.session.unpinned[name] = why

    def _pin_denies(self, name: str) -> bool:
        pinning = self.options.pinning
        return pinning is not None and pinning.on_change == "deny" and name in self.session.unpinned

    def _pin_problem(self, name: str) -> str | None:
        """Why a call to ``name`` is denied under the lock file (``on_change: deny``), or None."""
        pinning = self.options.pinning
        if pinning is None or pinning.on_change != "deny" or self.guard.dry_run:
            return None
        if name in self.session.unpinned:
            return self.session.unpinned[name]
        if name not in self.session.schemas:
            if not pinning.knows(name):
                return f"tool {name!r} is not in the lock file (a new tool)"
            return f"the server did not list tool {name!r}, so it cannot be checked against the lock file"
        return None

    def _visible(self, name: str) -> bool:
        """``visible_to``: whether ``name`` exists for this session's caller; remembered per policy revision
        (a list depends on who asks, never on counters or history)."""
        if not self.guard.has_visibility(name):
            return True
        who = self.session
        key = (self.guard.engine.revision, name, who.client_name, who.client_version, who.protocol_version)
        seen = self.session.visibility.get(key)
        if seen is None:
            seen = self.session.visibility[key] = self.guard.visible(self.session.input_document(name, {}, None))
        return seen


def _arguments_text(text: str) -> str:
    """The call's ``params.arguments`` as the client wrote them (``{}`` when absent or null)."""
    p_span = ids.member_span(text, "params")
    span = ids.member_span(text, "arguments", p_span[0]) if p_span is not None else None
    if span is None:
        return "{}"
    value = text[span[0]:span[1]]
    return "{}" if value.strip() == "null" else value


def _cancelled(request_id: str, reason: str) -> bytes:
    return jsonrpc.encode({"jsonrpc": "2.0", "method": "notifications/cancelled",
                           "params": {"requestId": request_id, "reason": reason}})


def _names_method(head: bytes) -> bool:
    """Whether the start of a message has a top-level ``method`` member (a request, not a response)."""
    try:
        for name, _, _ in ids.members(head.decode("utf-8", "replace")):
            if name == "method":
                return True
    except ids.NoSpan:
        pass
    return False


def _key_of(raw: str | None) -> Hashable | None:
    """The id key of a request id's JSON text (None: no id)."""
    if raw is None:
        return None
    try:
        return ids.id_key(jsonrpc.loads(raw.encode("utf-8")))
    except (jsonrpc.ParseError, TypeError, ValueError):
        return None


def _raw_id_or_none(text: str) -> str | None:
    try:
        return ids.raw_id(text)
    except ids.NoSpan:
        return None


def _upstream_id(raw: str | None) -> int | None:
    if raw is None or not raw.isdigit():
        return None
    return int(raw)
