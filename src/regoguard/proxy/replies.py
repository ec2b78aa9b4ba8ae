"""The messages the proxy writes itself: errors under a client's id, denials, and what it reads of calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from regoguard.proxy import jsonrpc

if TYPE_CHECKING:
    from regoguard.guard import Verdict


def reply(raw_id: str | None, body: dict[str, Any]) -> str:
    """A response under the client's id exactly as the client wrote it (``raw_id``, JSON text; None:
    ``null``). ``body`` holds ``result`` or ``error``."""
    rest = jsonrpc.encode(body).decode("utf-8")
    return '{"jsonrpc":"2.0","id":' + (raw_id if raw_id is not None else "null") + "," + rest[1:]


def error_reply(raw_id: str | None, code: int, message: str, data: Any = None) -> str:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return reply(raw_id, {"error": err})


def denial_reply(raw_id: str, msg: dict[str, Any], name: str, verdict: Verdict) -> str:
    """The tool result a denied call gets: an error the agent reads, and a machine-readable ``_meta``."""
    decision = verdict.decision
    if decision.action == "require_approval" and verdict.approval is not None:
        meta = verdict.meta()
        text = (f"[regoguard] Tool call {name!r} is held for approval (rule {decision.rule!r}): {decision.message}. "
                f"It was not run. Approval {meta['approval_id']} is pending until {meta['expires_at']}: a person "
                f"approves it with `regoguard approvals approve {meta['approval_id']}`; then make the identical "
                "call again (same tool, same arguments) and it runs once.")
        if verdict.approval_local:
            text += (" (This proxy keeps its state in memory, where no `regoguard approvals` command can reach it: "
                     "run it with --state FILE or redis://... for approvals out of band.)")
    elif decision.action == "require_approval":
        text = (f"[regoguard] Tool call {name!r} needs a human's approval (rule {decision.rule!r}): "
                f"{decision.message}. No approver is configured for this proxy, so the call was not forwarded.")
    else:
        # a generated message names the rule already: say it once
        message = (decision.message or "").removeprefix(f'Policy rule "{decision.rule}" denied the call: ')
        text = f"[regoguard] Tool call {name!r} denied by policy rule {decision.rule!r}: {message}"
    result: dict[str, Any] = {
        "content": [{"type": "text", "text": text}],
        "isError": True,
        "_meta": {"regoguard/decision": verdict.meta()},
    }
    if jsonrpc.is_stateless(msg):
        result["resultType"] = "complete"
    return reply(raw_id, {"result": result})


def upstream_error(msg: dict[str, Any]) -> Any:
    """The server's JSON-RPC error, or its tool result's ``isError``; None when the call succeeded."""
    if "error" in msg:
        return msg["error"]
    result = msg.get("result")
    if isinstance(result, dict) and result.get("isError") is True:
        return {"isError": True}
    return None


def may_have_run(msg: dict[str, Any]) -> bool:
    """An error the proxy's HTTP upstream made for a request the server received but whose answer could
    not be read (``data["regoguard/upstream"] == "may-have-run"``): the server may have done the work."""
    error = msg.get("error")
    data = error.get("data") if isinstance(error, dict) else None
    return isinstance(data, dict) and data.get("regoguard/upstream") == "may-have-run"


def call_doc(msg: dict[str, Any]) -> dict[str, Any]:
    """What can be logged of a call that never reached the policy."""
    params = msg.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    return {"tool": {"name": name if isinstance(name, str) else None, "arguments": {}}}


def params_problem(params: Any) -> str | None:
    """Why ``tools/call`` params cannot be decided, or None."""
    if not isinstance(params, dict):
        return "tools/call params must be an object"
    if not isinstance(params.get("name"), str):
        return "tools/call params.name must be a string"
    if "arguments" in params and not isinstance(params["arguments"], dict | None):
        return "tools/call params.arguments must be an object"
    return None
