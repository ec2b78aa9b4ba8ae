"""Asking the agent's user to approve a held call: the ``elicitation/create`` request, and its answer.

The form shows what is called, with which arguments and under which rule, and asks one yes/no question.
Only ``accept`` with ``approve: true`` approves; decline, cancel, an error, a malformed answer or no
answer in time all deny.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from regoguard.guard_holds import MAX_ASKED_ARGUMENTS

ID_PREFIX = "regoguard-approval-"
"""The ids of the proxy's own requests to the client: strings no server's integer ids can equal."""
MAX_SHOWN = MAX_ASKED_ARGUMENTS  # the guard sends larger calls out of band: the form shows them whole


def new_request_id() -> str:
    return ID_PREFIX + secrets.token_hex(8)


def request(request_id: str, tool: str, server: str, arguments_text: str, rule: str, message: str,
            timeout: int) -> dict[str, Any]:
    shown = arguments_text if len(arguments_text) <= MAX_SHOWN else arguments_text[:MAX_SHOWN] + " …"
    # names the agent or server chose are quoted, so a name holding a newline cannot fake a line of the form
    text = (f"regoguard holds a tool call for your approval.\n\n"
            f"Tool: {json.dumps(tool)} (server {json.dumps(server)})\nArguments: {shown}\n"
            f"Rule: {json.dumps(rule)}: {json.dumps(message, ensure_ascii=False)}\n\n"
            f"Approve to run this call once; decline, or no answer within {timeout} s, and it is not run.")
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": text,
            "requestedSchema": {
                "type": "object",
                "properties": {
                    "approve": {"type": "boolean", "title": "Run this call",
                                "description": f"Run {tool} with the arguments shown, once", "default": False},
                },
                "required": ["approve"],
            },
        },
    }


def answer(msg: dict[str, Any]) -> tuple[bool, str]:
    """(approved, what the user did) from the client's response."""
    if "error" in msg:
        error = msg["error"]
        text = error.get("message") if isinstance(error, dict) else None
        return False, f"the client could not ask the user ({str(text)[:200]})"
    result = msg.get("result")
    action = result.get("action") if isinstance(result, dict) else None
    if action == "accept":
        content = result.get("content") if isinstance(result, dict) else None
        if isinstance(content, dict) and content.get("approve") is True:
            return True, "approved by the user"
        return False, "the user answered without approving"
    if action in ("decline", "cancel"):
        return False, f"the user chose {action}"
    return False, f"the client's answer is not an elicitation result ({json.dumps(result)[:200]})"
