"""``regoguard eval -c POLICY --tool NAME [--args JSON]``: decide one call, print the decision as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, BinaryIO

from regoguard import __version__
from regoguard.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USAGE, json_arg, load_or_report, principal_claims, rego_option
from regoguard.engine import Engine


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="decide one tool call and print the decision as JSON")
    p.add_argument("-c", "--config", required=True, metavar="POLICY", help="the policy file (YAML)")
    p.add_argument("--tool", required=True, help="the tool name")
    p.add_argument("--args", default="{}", help="the arguments as a JSON object (or @file.json)")
    p.add_argument("--schema", help="the tool's inputSchema as JSON (or @file.json)")
    p.add_argument("--principal", default="cli", help="principal id in the input document")
    p.add_argument("--principal-claims", metavar="JSON|@FILE",
                   help="the principal's claims in the input document (a JSON object, or @file holding one)")
    p.add_argument("--server-name", default="cli", help="server name in the input document")
    p.add_argument("--pretty", action="store_true", help="indent the JSON")
    rego_option(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace, out: BinaryIO) -> int:
    try:
        arguments = json_arg(args.args, "--args")
        schema = json_arg(args.schema, "--schema") if args.schema else None
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(arguments, dict):
        print("error: --args must be a JSON object", file=sys.stderr)
        return EXIT_USAGE
    claims = principal_claims(args.principal_claims)
    if claims is None:
        return EXIT_USAGE
    if schema is not None and not isinstance(schema, dict):
        print("error: --schema must be a JSON object (the tool's inputSchema)", file=sys.stderr)
        return EXIT_USAGE
    loaded = load_or_report(args.config, args.rego)
    if loaded is None:
        return EXIT_USAGE
    engine = Engine(loaded.compiled, extra_modules=loaded.modules or None)
    try:
        doc: dict[str, Any] = {
            "tool": {"name": args.tool, "arguments": arguments},
            "server": {"name": args.server_name},
            "session": {"id": "cli", "client": {"name": "regoguard-eval", "version": __version__}},
            "principal": {"id": args.principal, "claims": claims},
        }
        if schema is not None:
            doc["schema"] = schema
        decision = engine.evaluate(doc)
    finally:
        engine.close()
    result = decision.to_json()
    details = decision.extra.get("details", {})
    for reason in result["reasons"]:
        reason["detail"] = details.get(reason["rule"], [])
    out.write((json.dumps(result, indent=2 if args.pretty else None) + "\n").encode())
    return EXIT_OK if decision.allow else EXIT_FAIL
