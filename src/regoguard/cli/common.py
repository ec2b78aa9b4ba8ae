"""What every command shares: exit codes, how policy errors print, and options used by several commands."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from regoguard.errors import PolicyLoadError
from regoguard.policy_set import PolicySet, load_policy_set

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


def print_errors(exc: PolicyLoadError) -> None:
    for err in exc.errors:
        print(err, file=sys.stderr)
    n = len(exc.errors)
    print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)


def load_or_report(path: str, rego: list[str]) -> PolicySet | None:
    """The policy and its team Rego, or None with every error printed (file:line:column)."""
    try:
        return load_policy_set(path, rego)
    except PolicyLoadError as exc:
        print_errors(exc)
        return None


def state_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="PATH|redis://...",
                   help="where limits live: a SQLite file (default ~/.local/state/regoguard/state.db), "
                        "redis://host:port/db, or memory")
    p.add_argument("--state-prefix", default=None, metavar="P",
                   help="put P before every counter key, so teams can share one store (default: regoguard: in "
                        "Redis, none in SQLite)")


def rego_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rego", action="append", default=[], metavar="DIR",
                   help="the team's Rego modules (a directory or .rego file; repeatable), loaded beside the "
                        "policy's own `rego:` list")


def server_command(args: argparse.Namespace, example: str) -> list[str] | None:
    """The MCP server's command given after ``--`` (argparse keeps the ``--``); None, with the usage
    error printed, when there is none."""
    command = list(args.server_command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print(f"error: give the MCP server's command after --, e.g. {example}", file=sys.stderr)
        return None
    return command


def upstream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upstream", metavar="URL",
                   help="a remote MCP server to guard instead of a command: its Streamable HTTP (or SSE) URL")
    p.add_argument("--header", action="append", default=[], metavar='"NAME: VALUE"',
                   help="an HTTP header for every request to --upstream (repeatable); ${VAR} in the value is "
                        "read from the environment, so secrets stay out of client configs")
    p.add_argument("--upstream-transport", choices=("auto", "streamable-http", "sse"), default="auto",
                   help="how to speak to --upstream: Streamable HTTP, the legacy HTTP+SSE transport, or auto "
                        "(Streamable HTTP, falling back to SSE when the server refuses it; the default)")


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class HeaderError(ValueError):
    pass


def parse_headers(values: list[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """``"Name: value"`` options as a header mapping, with ``${VAR}`` read from the environment. A header
    that names an unset variable is an error, never sent empty."""
    env = os.environ if environ is None else environ
    headers: dict[str, str] = {}
    for raw in values:
        name, sep, value = raw.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _HEADER_NAME.match(name):
            raise HeaderError(f"--header {raw!r}: expected \"Name: value\"")

        def expand(match: re.Match[str], raw: str = raw) -> str:
            var = match.group(1)
            if var not in env:
                raise HeaderError(f"--header {raw.partition(':')[0]!r} names ${{{var}}}, which is not set")
            return env[var]

        value = _ENV_REF.sub(expand, value)
        if any(ch in value for ch in "\r\n\0"):
            raise HeaderError(f"--header {name!r}: the value holds a line break or NUL")
        headers[name.lower()] = value
    return headers


def upstream_target(args: argparse.Namespace, example: str) -> tuple[list[str] | None, dict[str, str]] | None:
    """The server to guard: a command after ``--`` or ``--upstream URL`` (with its headers); None, with
    the usage error printed, when it is neither or both."""
    rest = list(args.server_command)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if args.upstream:
        if rest:
            print("error: give either --upstream URL or a server command after --, not both", file=sys.stderr)
            return None
        if not re.match(r"^https?://", args.upstream):
            print(f"error: --upstream {args.upstream!r}: expected an http:// or https:// URL", file=sys.stderr)
            return None
        try:
            return None, parse_headers(args.header)
        except HeaderError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return None
    if args.header:
        print("error: --header applies to --upstream only", file=sys.stderr)
        return None
    command = server_command(args, example)
    return None if command is None else (command, {})


def json_arg(text: str, what: str) -> Any:
    """An option's JSON value, inline or ``@file``. Raises ValueError or OSError naming the option."""
    import json
    from pathlib import Path

    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from exc


def principal_claims(value: str | None) -> dict[str, Any] | None:
    """``--principal-claims``: a JSON object, inline or ``@file`` ({} when not given); None, with the error
    printed, when it is not one."""
    if value is None:
        return {}
    try:
        claims = json_arg(value, "--principal-claims")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if not isinstance(claims, dict):
        print("error: --principal-claims must be a JSON object", file=sys.stderr)
        return None
    return claims
