"""SEP-2243 custom parameter headers (``Mcp-Param-*``) on a 2026-07-28 ``tools/call``, checked against its body.

A tool whose ``inputSchema`` marks a property with ``"x-mcp-header": "Region"`` makes a conforming client
mirror that argument into an ``Mcp-Param-Region`` header, so intermediaries can route on it without reading
the body. The server MUST refuse a request whose headers and body disagree (HTTP 400, ``HEADER_MISMATCH``):
otherwise whatever routed on the header acted on a value the call never carried. regoguard decides on the
body, so it checks, as the MCP SDK's own server does, before anything is relayed.

The rules are the SDK's (``mcp.shared.inbound``), not restated here: with the tool's schema known this
module does exactly what ``mcp/server/_streamable_http_modern.py`` (``_mcp_param_rejection``) does.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, Mapping
from typing import Any

from mcp.shared.inbound import (
    MCP_PARAM_HEADER_PREFIX,
    X_MCP_HEADER_KEY,
    decode_header_value,
    encode_header_value,
    find_invalid_x_mcp_header,
    validate_mcp_param_headers,
)
from mcp_types.jsonrpc import HEADER_MISMATCH

__all__ = ["param_header_rejection"]

_PREFIX = MCP_PARAM_HEADER_PREFIX.lower()
_OWS = " \t"  # RFC 9110 §5.5: optional whitespace around a field value is not part of it
# A sentinel the SDK reads as malformed (not base64): what a sentinel it cannot even read stands for.
_MALFORMED_SENTINEL = "=?base64?!?="


def _readable(name: str, value: str) -> str:
    """``value``, unless it is an ``Mcp-Param-*`` sentinel whose payload is not ASCII.

    ``decode_header_value`` means to answer None for every malformed sentinel, but raises ValueError for
    a non-ASCII payload (``base64.b64decode`` on such a str); an HTTP server hands over such bytes
    (obs-text) decoded as Latin-1. Standing in a sentinel it does read as malformed keeps its verdicts
    (refused when declared, ignored when not) without the exception.
    """
    if not name.startswith(_PREFIX):
        return value
    try:
        decode_header_value(value)
    except ValueError:
        return _MALFORMED_SENTINEL
    return value


class _HeaderLines(Mapping[str, str]):
    """Raw header lines as the read-only mapping the SDK validator takes, duplicates kept.

    ``validate_mcp_param_headers`` finds a repeated header through ``headers.items()`` (Starlette's
    ``Headers`` yields every line there); a plain dict would fold the copies and hide them. Names are
    lowercased and values lose their surrounding OWS, as an ASGI server hands them over; see
    :func:`_readable` for the one value replaced.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.lines = [(key, _readable(key, value.strip(_OWS))) for key, value in
                      ((name.lower(), value) for name, value in pairs)]
        self._last = dict(self.lines)

    def __getitem__(self, key: str) -> str:
        return self._last[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def items(self) -> ItemsView[str, str]:
        return _LineItems(self)


class _LineItems(ItemsView[str, str]):
    """Every header line, repeated names included, in the order received."""

    def __init__(self, headers: _HeaderLines) -> None:
        super().__init__(headers)
        self._lines = headers.lines

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


def param_header_rejection(
    msg: Mapping[str, Any],
    headers: Iterable[tuple[str, str]],
    schema: Mapping[str, Any] | None,
) -> tuple[int, str, Any] | None:
    """Why a 2026-07-28 request's ``Mcp-Param-*`` headers refuse it, as ``(code, message, data)``; else None.

    Args:
        msg: the decoded JSON-RPC request, after ``classify_inbound_request`` accepted its envelope and
            routing headers. Anything but a ``tools/call`` passes (only tool arguments are mirrored).
        headers: the raw header lines, e.g. Starlette's ``request.headers.items()``; any case, repeats kept
            (a repeated ``Mcp-Param-*`` header is refused, so do not fold them into a dict first).
        schema: the called tool's ``inputSchema`` as the server advertised it in ``tools/list``, or None
            when the proxy has not seen that tool.

    With a schema, this is the SDK server's check exactly (``validate_mcp_param_headers``): every property
    the schema annotates must have its header present and equal to the argument (after ``=?base64?…?=``
    decoding; an integer compares numerically), or both absent; a repeated or undecodable header is
    refused; headers the schema does not declare are ignored; and a schema whose annotations are invalid
    checks nothing (conforming clients drop such a tool and send no headers).

    Without a schema nothing can be compared with the body, and refusing every header would refuse
    conforming clients whenever this proxy has not listed the tool itself (a 2026-07-28 client may call a
    tool from a cached listing; the SDK server likewise skips the check when it cannot resolve the
    schema). So only a header that no conforming client sends, whatever the tool declared, is refused:

    - a repeated ``Mcp-Param-*`` header (the SDK refuses a repeated declared header whatever the body);
    - a name whose suffix is no valid ``x-mcp-header`` token (it cannot be a declared header);
    - a value carrying the ``=?base64?…?=`` sentinel that does not decode (bad alphabet or padding,
      non-canonical, not UTF-8): the SDK refuses it whatever the body, as it can match no argument;
    - a plain value with characters a client MUST base64-wrap (control characters, non-ASCII): the SDK's
      encoder would never have sent it so. This one is stricter than the schema-known check, which
      compares such a value with the argument as it stands.

    The error code is always ``HEADER_MISMATCH`` (-32020, HTTP 400); ``data`` is None.
    """
    if msg.get("method") != "tools/call":
        return None
    params = msg.get("params")
    if not isinstance(params, Mapping) or not isinstance(params.get("name"), str):
        return None  # not a well-formed call: dispatch answers it
    raw_arguments = params.get("arguments")
    if raw_arguments is not None and not isinstance(raw_arguments, Mapping):
        return None  # likewise: the server's invalid-params answer, not a header verdict
    arguments: Mapping[str, Any] = raw_arguments if raw_arguments is not None else {}
    lines = _HeaderLines(headers)
    if not arguments and not any(name.startswith(_PREFIX) for name in lines):
        return None  # no argument and no header: no declaration can be violated either way
    if schema is None:
        return _malformed_param_header(lines)
    verdict = validate_mcp_param_headers(schema, arguments, lines)
    return None if verdict is None else (verdict.code, verdict.message, verdict.data)


def _malformed_param_header(headers: _HeaderLines) -> tuple[int, str, Any] | None:
    """The first ``Mcp-Param-*`` header that is wrong on its own, whatever the tool's schema declares."""
    seen: set[str] = set()
    for name, raw in headers.items():
        if not name.startswith(_PREFIX):
            continue
        token = name[len(_PREFIX):]
        header = f"{MCP_PARAM_HEADER_PREFIX}{token}"
        if name in seen:
            return HEADER_MISMATCH, f"{header} header appears more than once", None
        seen.add(name)
        # The SDK's rule for an annotation's token, applied to a one-property schema declaring this one.
        probe = {"type": "object", "properties": {"p": {"type": "string", X_MCP_HEADER_KEY: token}}}
        if find_invalid_x_mcp_header(probe) is not None:
            return HEADER_MISMATCH, f"{header} header does not name a valid {X_MCP_HEADER_KEY} token", None
        decoded = decode_header_value(raw)
        if decoded is None:
            return HEADER_MISMATCH, f"{header} header carries a malformed base64 sentinel value", None
        if decoded == raw and encode_header_value(raw) != raw:
            return (HEADER_MISMATCH, f"{header} header carries characters that must be sent base64-encoded",
                    None)
    return None
