"""What the relay remembers about one client connection, and the input document it builds from it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from regoguard.proxy.jsonrpc import META_CLIENT_INFO, request_meta


@dataclass
class Session:
    server_name: str
    principal: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    claims: dict[str, Any] = field(default_factory=dict)
    client_name: str | None = None
    client_version: str | None = None
    protocol_version: str | None = None
    schemas: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    schemas_complete: bool = False
    visibility: dict[tuple[Any, ...], bool] = field(default_factory=dict)  # (revision, tool, client...) -> visible
    unpinned: dict[str, str] = field(default_factory=dict)  # tool -> why it is not its pinned definition
    elicit_form: bool = False  # the client declared form elicitation: it can be asked to approve a call

    def note_initialize(self, msg: dict[str, Any]) -> None:
        params = msg.get("params")
        if not isinstance(params, dict):
            return
        self._note_client(params.get("clientInfo"))
        version = params.get("protocolVersion")
        if isinstance(version, str):
            self.protocol_version = version
        caps = params.get("capabilities")
        elicitation = caps.get("elicitation") if isinstance(caps, dict) else None
        # `elicitation: {}` (before modes existed) means form; with modes, form must be named
        self.elicit_form = isinstance(elicitation, dict) and (not elicitation or isinstance(elicitation.get("form"),
                                                                                              dict))

    def note_negotiated(self, msg: dict[str, Any]) -> None:
        """The server's answer to ``initialize``: the version it chose is the session's from now on."""
        result = msg.get("result")
        version = result.get("protocolVersion") if isinstance(result, dict) else None
        if isinstance(version, str):
            self.protocol_version = version

    def note_meta(self, msg: dict[str, Any]) -> None:
        """2026-07-28 requests carry the client's identity in ``_meta`` instead of ``initialize``."""
        self._note_client(request_meta(msg).get(META_CLIENT_INFO))

    def _note_client(self, info: Any) -> None:
        if isinstance(info, dict):
            if isinstance(info.get("name"), str):
                self.client_name = info["name"]
            if isinstance(info.get("version"), str):
                self.client_version = info["version"]

    def note_tools(self, tools: Any) -> None:
        """Remember each tool's ``inputSchema`` from a ``tools/list`` page."""
        if not isinstance(tools, list):
            return
        for tool in tools:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                schema = tool.get("inputSchema")
                # not an object: unknown (validation fails closed), but the tool counts as listed
                self.schemas[tool["name"]] = schema if isinstance(schema, dict) else None

    def forget_tools(self) -> None:
        """The server said its tools changed: schemas seen so far may be stale."""
        self.schemas.clear()
        self.schemas_complete = False

    def input_document(self, name: str, arguments: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
        """The documented Rego input for one call (README, "The Rego contract")."""
        doc: dict[str, Any] = {
            "tool": {"name": name, "arguments": arguments},
            "server": {"name": self.server_name},
            "session": {
                "id": self.id,
                "client": {"name": self.client_name, "version": self.client_version},
                "protocol_version": self.protocol_version,
            },
            "principal": {"id": self.principal, "claims": self.claims},
        }
        if schema is not None:
            doc["schema"] = schema
        return doc
