"""Intercept's command line, accepted as it is: ``regoguard -c POLICY [flags] -- COMMAND…`` (or
``--upstream URL``) runs the proxy, with Intercept's flag names as aliases of regoguard's own. A client
config written for Intercept then needs only the program name changed.

| Intercept | regoguard |
|---|---|
| ``-c POLICY … -- COMMAND`` | ``run -c POLICY … -- COMMAND`` |
| ``--transport http`` / ``sse``, ``--bind H --port P`` | ``serve --listen H:P`` (HTTP, and SSE at ``/sse``) |
| ``--state-dir DIR`` | ``--state DIR/state.db`` |
| ``--state-dsn DSN`` | ``--state DSN`` |
| ``--state-fail-mode open`` / ``closed`` | ``--fail-open`` / the default |
| ``--header``, ``--upstream``, ``--state-prefix`` | the same |
"""

from __future__ import annotations

import os
from collections.abc import Sequence

_VALUED = {"--state-dir", "--state-dsn", "--state-fail-mode", "--transport", "--bind", "--port"}


class InterceptUsage(ValueError):
    pass


def is_intercept_style(argv: Sequence[str]) -> bool:
    """Intercept's root command: the policy given before any subcommand."""
    return bool(argv) and (argv[0] in ("-c", "--config") or argv[0].startswith("--config="))


def translate(argv: Sequence[str]) -> list[str]:
    """The regoguard command line for an Intercept-style one."""
    rest: list[str] = []
    taken: dict[str, str] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name, eq, value = arg.partition("=")
        if name in _VALUED:
            if not eq:
                if i + 1 >= len(args):
                    raise InterceptUsage(f"{name} needs a value")
                value = args[i + 1]
                i += 1
            taken[name] = value
        else:
            rest.append(arg)
        i += 1
    out: list[str] = []
    if "--state-dir" in taken and "--state-dsn" in taken:
        raise InterceptUsage("give --state-dir or --state-dsn, not both")
    if "--state-dir" in taken:
        out += ["--state", os.path.join(taken["--state-dir"], "state.db")]
    if "--state-dsn" in taken:
        out += ["--state", taken["--state-dsn"]]
    mode = taken.get("--state-fail-mode")
    if mode not in (None, "open", "closed"):
        raise InterceptUsage(f"--state-fail-mode must be open or closed, not {mode!r}")
    if mode == "open":
        out.append("--fail-open")
    transport = taken.get("--transport", "stdio")
    if transport not in ("stdio", "http", "sse"):
        raise InterceptUsage(f"--transport must be stdio, http or sse, not {transport!r}")
    if transport == "stdio":
        if "--bind" in taken or "--port" in taken:
            raise InterceptUsage("--bind and --port apply to --transport http or sse")
        command = "run"
    else:
        command = "serve"
        out += ["--listen", f"{taken.get('--bind', '127.0.0.1')}:{taken.get('--port', '0')}"]
    dash = rest.index("--") if "--" in rest else len(rest)
    return [command, *rest[:dash], *out, *rest[dash:]]
