"""What an HTTP request to the front must satisfy before any of its body is read as MCP: the Host and
Origin it comes with (DNS rebinding), what it sends and accepts, and how large and slow its body may be."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class Refusal(Exception):
    """An HTTP request refused before MCP sees it: status, and a message for the JSON-RPC error body."""

    def __init__(self, status: int, message: str, code: int = -32600) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass(frozen=True)
class HostRules:
    """Which Host and Origin values the front answers. By default only its own loopback names, so a web
    page on another origin (or a DNS name rebound to 127.0.0.1) cannot drive it from a browser."""

    port: int
    bind_host: str
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allowed_origins: frozenset[str] = field(default_factory=frozenset)

    def host_ok(self, host_header: str | None) -> bool:
        if host_header is None:
            return False
        if host_header.lower() in self.allowed_hosts or "*" in self.allowed_hosts:
            return True
        try:
            parsed = urlsplit("//" + host_header)
            port = parsed.port
            name = (parsed.hostname or "").lower()
        except ValueError:  # `[`, `[::1:port`: not a host
            return False
        if port not in (None, self.port):
            return False
        if name in LOOPBACK_HOSTS:
            return True
        return name == self.bind_host.lower() and self.bind_host not in ("0.0.0.0", "::")

    def origin_ok(self, origin: str | None) -> bool:
        if origin is None:
            return True  # not a browser: non-browser clients send no Origin
        if origin.lower() in self.allowed_origins or "*" in self.allowed_origins:
            return True
        try:
            parsed = urlsplit(origin)
            port = parsed.port
            hostname = parsed.hostname
        except ValueError:  # `http://[x]`: not an origin
            return False
        if parsed.scheme not in ("http", "https") or not hostname:
            return False
        default = 443 if parsed.scheme == "https" else 80
        if (port or default) != self.port:
            return False
        name = hostname.lower()
        return name in LOOPBACK_HOSTS or (name == self.bind_host.lower() and self.bind_host not in ("0.0.0.0", "::"))


def check_host_and_origin(request: Request, rules: HostRules) -> None:
    if not rules.host_ok(request.headers.get("host")):
        raise Refusal(421, "Misdirected Request: this proxy does not answer for that Host")
    origins = request.headers.getlist("origin")
    if len(origins) > 1 or not rules.origin_ok(origins[0] if origins else None):
        raise Refusal(403, "Forbidden: Origin not allowed")


def accepts(request: Request) -> tuple[bool, bool]:
    """(accepts JSON, accepts SSE) from the Accept header; ``*/*`` counts as both."""
    json_ok = sse_ok = False
    for part in ",".join(request.headers.getlist("accept")).split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in ("application/json", "application/*", "*/*"):
            json_ok = True
        if kind in ("text/event-stream", "text/*", "*/*"):
            sse_ok = True
    return json_ok, sse_ok


def check_post_headers(request: Request) -> None:
    kinds = request.headers.getlist("content-type")
    if len(kinds) != 1:
        raise Refusal(415, "Unsupported Media Type: Content-Type must be application/json")
    kind, _, params = kinds[0].partition(";")
    if kind.strip().lower() != "application/json":
        raise Refusal(415, "Unsupported Media Type: Content-Type must be application/json")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise Refusal(415, "Unsupported Media Type: the body must be UTF-8")
    encodings = [e.strip().lower() for e in ",".join(request.headers.getlist("content-encoding")).split(",")]
    if any(e not in ("", "identity") for e in encodings):
        raise Refusal(415, "Unsupported Media Type: Content-Encoding is not accepted; send the body as it is")
    json_ok, sse_ok = accepts(request)
    if not (json_ok and sse_ok):
        raise Refusal(406, "Not Acceptable: Client must accept both application/json and text/event-stream")


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, or a refusal once it passes ``limit`` bytes or takes longer than ``timeout``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refusal(413, f"Request body too large: the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refusal(413, f"Request body too large: the limit is {limit} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise Refusal(408, f"Request Timeout: the body took longer than {timeout:g}s") from None
    return b"".join(chunks)
