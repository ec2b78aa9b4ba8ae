"""``regoguard state show|reset [PREFIX]``: see or clear limit counters in a state store."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, BinaryIO

from regoguard.cli.common import EXIT_FAIL, EXIT_OK, state_options
from regoguard.limits import Spec, StoreError, open_store
from regoguard.limits.token_bucket import available


def add_parser(sub: Any) -> None:
    p = sub.add_parser("state", help="show or reset rate-limit counters")
    p.add_argument("action", choices=("show", "reset"))
    p.add_argument("counter", nargs="?", help="a key prefix, e.g. global//payments/create_charge.daily_spend")
    p.add_argument("--json", action="store_true", help="print JSON (show)")
    p.add_argument("-c", "--config", metavar="POLICY",
                   help="show: the policy whose limits these are, so tokens are shown refilled to now (a store "
                        "keeps tokens as of the last call, not a bucket's capacity or window)")
    state_options(p)
    p.set_defaults(func=cmd_state)


def _specs(policy_path: str) -> dict[str, Spec] | None:
    """Each counter of the policy's limits, as a bucket spec (None, with the problem printed, if it fails to load)."""
    from regoguard.cli.common import load_or_report

    loaded = load_or_report(policy_path, [])
    if loaded is None:
        return None
    settings = loaded.compiled.settings
    entries = [*settings["tools"].values(), *(g["entry"] for g in settings["globs"]), settings["unlisted"]]
    return {c["counter"]: Spec(c["capacity"], c["window"], 0, c["strict"], c.get("calendar") is True)
            for e in entries for c in e.get("charges", ())}


def _spec_of(key: str, specs: dict[str, Spec]) -> Spec | None:
    """The spec of bucket ``key`` (``<scope>/<id>/<server>/<counter>``; ids and counters may hold ``/``)."""
    found = [c for c in specs if key.endswith("/" + c)]
    return specs[max(found, key=len)] if found else None


def cmd_state(args: argparse.Namespace, out: BinaryIO) -> int:
    import time

    specs = _specs(args.config) if args.config and args.action == "show" else {}
    if specs is None:
        return EXIT_FAIL
    try:
        store = open_store(args.state, args.state_prefix, create=False)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    try:
        prefix = args.counter or ""
        if args.action == "reset":
            n = store.reset(prefix)
            out.write(f"reset {n} counter{'s' if n != 1 else ''}\n".encode())
            return EXIT_OK
        rows = store.snapshot(prefix)
        now = time.time()
        if args.json:
            shown: dict[str, Any] = {}
            for k, v in rows.items():
                shown[k] = {"tokens": v.tokens, "updated": v.updated}
                spec = _spec_of(k, specs)
                if spec is not None:
                    shown[k].update(tokens_now=available(v, spec, now), capacity=spec.capacity, window=spec.window)
            out.write((json.dumps(shown) + "\n").encode())
            return EXIT_OK
        if not rows:
            out.write(b"no counters\n")
        for key, state in rows.items():
            age = max(0.0, now - state.updated)
            spec = _spec_of(key, specs)
            if spec is not None:
                out.write(f"{key}  tokens={available(state, spec, now):g} of {spec.capacity:g} now  "
                          f"({state.tokens:g} when last used, {age:.0f}s ago)\n".encode())
            else:
                out.write(f"{key}  tokens={state.tokens:g}  updated {age:.0f}s ago\n".encode())
        if rows and not args.config:
            out.write(b"(tokens as of each counter's last use; add -c POLICY to see them refilled to now)\n")
        return EXIT_OK
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        store.close()
