"""The engine's reading of a bundle's vector decides every call as the committed module does under OPA.

The engine asks each decider's bundle for a vector of its rules' outcomes and combines them in Python
(``engine_vector``); the committed module combines the same outcomes in Rego (``decision``). This test
generates policies with every kind of rule the combination treats apart — several checks per rule (and
``contains`` over lists with repeated elements, where a check holds more than once), ``deny`` rules,
``require_approval`` with and without conditions, a person's approval, ``validate`` of required
arguments and of the whole schema, argument-derived costs with their own messages, rate limits, context
conditions, ``visible_to``, globs, ``hide`` and ``default: deny`` — and compares the two decisions
field by field: allow, action, reasons in order, messages, details and charges.

Seeded, so a failure names the policy and call that reproduce it; bounded (a few hundred calls).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import yaml

import regoguard
from helpers_policy import call_doc
from opa_engine import opa_available, opa_eval
from regoguard.engine import with_schema_error
from regoguard.schema_check import CHECKER
from test_opa_agreement import NAMED

pytestmark = pytest.mark.skipif(not opa_available(), reason="OPA bindings (opa-golib-python-bindings) not installed")

POLICIES = 90
CALLS = 6
LIMITS = regoguard.EngineLimits(cache_size=0, prebuild=False)
ARG_PATHS = ["n", "s", "amt", "tags", "items.0.k"]


def condition(rnd: random.Random) -> dict[str, Any]:
    if rnd.random() < 0.15:
        return {"path": rnd.choice(["principal.id", "session.client.name"]), "op": rnd.choice(["eq", "neq"]),
                "value": rnd.choice(["p1", "pytest"])}
    op = rnd.choice(["lte", "gt", "eq", "in", "not_in", "exists", "contains", "regex", "not_regex", "starts_with",
                     "len_lte"])
    value = {"lte": 5, "gt": 0, "eq": rnd.choice(["x", 3, True]), "in": rnd.choice([["x", "y"], [1, 2]]),
             "not_in": ["x"], "exists": rnd.choice([True, False]), "contains": rnd.choice(["x", 1, [1]]),
             "regex": "^[a-z]+$", "not_regex": "z", "starts_with": "x", "len_lte": 2}[op]
    return {"path": f"args.{rnd.choice(ARG_PATHS)}", "op": op, "value": value}


def rule(rnd: random.Random, i: int, key: str) -> dict[str, Any]:
    kind = rnd.choice(["checks", "checks", "checks", "deny", "approval", "approval", "required", "schema", "cost",
                       "rate"])
    r: dict[str, Any] = {"name": f"r{i}"}
    if kind == "checks":
        r["conditions"] = [condition(rnd) for _ in range(rnd.randint(1, 3))]
    elif kind == "deny":
        r["action"] = "deny"
    elif kind == "approval":
        r["action"] = "require_approval"
        if rnd.random() < 0.7:
            r["conditions"] = [condition(rnd) for _ in range(rnd.randint(1, 2))]
    elif kind in ("required", "schema"):
        r["validate"] = {"required_args": True} if kind == "required" else {"schema": True}
        if rnd.random() < 0.5:
            r["conditions"] = [condition(rnd)]
    elif kind == "cost":
        tool = "_global" if key == "*" else key
        r["state"] = {"counter": f"c{i}", "window": "day", "increment_from": "args.amt"}
        r["conditions"] = [{"path": f"state.{tool}.c{i}", "op": "lte", "value": 100}]
        r["conditions"] += [condition(rnd)] if rnd.random() < 0.5 else []
        if rnd.random() < 0.4:
            r["validate"] = {"required_args": True}
    else:
        r["rate_limit"] = "5/minute"
        if rnd.random() < 0.5:
            r["conditions"] = [condition(rnd)]
    if rnd.random() < 0.5:
        r["on_deny"] = f"message {i}"
    return r


def policy(rnd: random.Random) -> str:
    p: dict[str, Any] = {"tools": {}}
    for key in rnd.sample(["t", "u", "g_*", "*"], rnd.randint(1, 3)):
        p["tools"][key] = {"rules": [rule(rnd, i, key) for i in range(rnd.randint(0, 3))]}
        if key != "*" and rnd.random() < 0.25:
            p["tools"][key]["visible_to"] = [{"path": "principal.id", "op": rnd.choice(["eq", "neq"]), "value": "p1"}]
    if rnd.random() < 0.3:
        p["default"] = "deny"
    if rnd.random() < 0.2:
        p["hide"] = ["h"]
    return yaml.safe_dump(p, sort_keys=False)


SCHEMAS = [None, {"type": "object", "required": ["n"]}, {"type": "object", "properties": {"n": {"type": "number"}}},
           {"type": "object", "required": ["s", "amt"]}, {"required": "n"}]


def call(rnd: random.Random) -> dict[str, Any]:
    values = [None, 0, 1, 3, 9, -1, 2.5, "x", "y", "abc", '"abc"', '"x"', True, [1], [[1]], [[1], [1]], ["x", "x"],
              {"a": 1}, 150]
    args = {a: rnd.choice(values) for a in ("n", "s", "amt", "tags") if rnd.random() < 0.6}
    if rnd.random() < 0.3:
        args["items"] = rnd.choice([[{"k": 1}], {"0": {"k": "x"}}, [], [{"k": [1]}]])
    doc = call_doc(rnd.choice(["t", "u", "g_a", "other", "h"]), args, rnd.choice(SCHEMAS))
    if rnd.random() < 0.3:
        doc["approval"] = {"granted": True}
    return doc


def engine_view(engine: regoguard.Engine, doc: dict[str, Any]) -> dict[str, Any]:
    d = engine.evaluate(doc)
    return {**d.to_json(), "details": d.extra.get("details", {})}


def module_view(compiled: regoguard.CompiledPolicy, doc: dict[str, Any]) -> dict[str, Any] | None:
    """The committed module's ``decision`` under OPA, as the engine would report it (the schema
    validator's result in the input where the rules read it, and its account in the denial)."""
    if compiled.unit_reads(compiled.unit_for(doc["tool"]["name"])).schema_check:
        doc = {**doc, "schema_check": CHECKER.check(doc.get("schema"), doc["tool"].get("arguments"))}
    value = opa_eval({compiled.filename: compiled.module}, {}, doc, "data.regoguard.policy.decision")
    if value is None:
        return None
    name = doc["tool"]["name"]
    reasons = tuple(regoguard.Reason(r["rule"], NAMED[r["rule"]].format(name) if r["rule"] in NAMED else r["message"])
                    for r in value["reasons"])
    charges = tuple(regoguard.Charge(**c) for c in value["charges"])
    extra = {} if value["allow"] else {"details": {r["rule"]: r["detail"] for r in value["reasons"]}}
    d = regoguard.Decision(value["allow"], value["action"], reasons, charges, extra=extra)
    if not d.allow and "schema_check" in doc:
        d = with_schema_error(d, doc["schema_check"].get("error"))
    return {**d.to_json(), "details": d.extra.get("details", {})}


@pytest.mark.parametrize("seed", range(3))
def test_the_vector_decides_as_the_committed_module(seed):
    rnd = random.Random(seed)
    compared = 0
    for _ in range(POLICIES // 3):
        text = policy(rnd)
        try:
            compiled = regoguard.compile_policy(regoguard.load_policy_text(text, "generated.yaml"))
        except regoguard.PolicyLoadError:
            continue  # a combination the language refuses (e.g. a cost rule's condition under "*")
        engine = regoguard.Engine(compiled, LIMITS)
        try:
            for _ in range(CALLS):
                doc = call(rnd)
                want = module_view(compiled, doc)
                assert want is not None, (text, doc)
                got = engine_view(engine, doc)
                assert got == want, f"policy:\n{text}\ncall: {json.dumps(doc)}"
                compared += 1
        finally:
            engine.close()
    assert compared >= POLICIES // 3 * CALLS // 2  # most generated policies load: the test compares something
