"""The same decisions on OPA: the Rego regopy runs, loaded into real OPA (v1.20.2, in process), decides
every call as the engine does.

Two readings are checked against ``Engine.evaluate`` for each call:

- *the bundle*: ``Engine.rego_for(name)`` — the very modules, data and query the engine's bundle for that
  tool holds — evaluated by OPA, its verdict read by the engine's own parser;
- *the file*: what ``regoguard compile`` writes plus the library (``opa eval -d rego/regoguard -d
  policy.rego data.regoguard.lib.decision``), compared field by field with the documented decision.

Calls come from the shipped policies (every tool key, hidden and unlisted names, random arguments), the
property test's generated policies and calls, and team Rego. String arguments are kept ASCII: rego-cpp
matches regexes and counts lengths in bytes, OPA in characters (regex_check.py owns that difference).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import regoguard
from helpers_policy import call_doc
from opa_engine import opa_available, opa_eval
from regoguard.compiler import library_modules
from regoguard.engine_io import value_problem
from test_property import scenarios

pytestmark = pytest.mark.skipif(not opa_available(), reason="OPA bindings (opa-golib-python-bindings) not installed")

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (REPO / "policies").glob("*.yaml") if not p.name.endswith("_test.yaml"))
UNCACHED = regoguard.EngineLimits(cache_size=0)  # a cache hit carries no details: compare real evaluations
NAMED = {"hide": 'Tool "{}" is hidden by policy', "default": 'Tool "{}" is not allowed by policy (default: deny)'}


def engine_view(engine: regoguard.Engine, doc: dict[str, Any]) -> dict[str, Any]:
    d = engine.evaluate(doc)
    return {**d.to_json(), "details": d.extra.get("details", {})}


def opa_bundle_view(engine: regoguard.Engine, doc: dict[str, Any]) -> dict[str, Any]:
    """The engine's bundle for this call, evaluated by OPA and parsed as the engine parses regopy's."""
    unit = engine.rego_for(doc["tool"]["name"])
    value = opa_eval(unit.modules, unit.data, engine.bundle_input(doc), unit.query)
    raw = "undefined" if value is None else json.dumps({"expressions": [value]})
    d = engine.read(engine.compiled.unit_for(doc["tool"]["name"]), raw, doc["tool"]["name"],
                    doc["tool"].get("arguments"))
    return {**d.to_json(), "details": d.extra.get("details", {})}


def opa_file_view(compiled: regoguard.CompiledPolicy, doc: dict[str, Any],
                  team: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The committed module under OPA (alone, or with the library and ``team``'s modules), shaped like
    the engine's decision."""
    if team is None:  # the file alone: `opa eval -d policy.rego data.regoguard.policy.decision`
        modules, query = {compiled.filename: compiled.module}, "data.regoguard.policy.decision"
    else:
        modules = {**library_modules(), compiled.filename: compiled.module, **team}
        query = "data.regoguard.lib.decision"
    value = opa_eval(modules, {}, doc, query)
    if value is None:
        return None
    name = doc["tool"]["name"]
    return {
        "allow": value["allow"],
        "action": value["action"],
        # the fixed sections' messages name the tool in the engine; only those are filled in here (a
        # policy's own message may hold "{}" itself: a condition value, say)
        "reasons": [{"rule": r["rule"], "message": NAMED[r["rule"]].format(name) if r["rule"] in NAMED
                     else r["message"]} for r in value["reasons"]],
        "charges": value["charges"],
        "details": {r["rule"]: r["detail"] for r in value["reasons"]},
    }


def assert_agree(engine: regoguard.Engine, doc: dict[str, Any], team: dict[str, str] | None = None) -> None:
    want = engine_view(engine, doc)
    assert opa_bundle_view(engine, doc) == want, doc
    assert opa_file_view(engine.compiled, doc, team) == want, doc
    if team is None:  # and the file with the library (no team modules): the documented decision
        assert opa_file_view(engine.compiled, doc, {}) == want, doc


# --- the shipped policies ----------------------------------------------------------------------------


def _names(compiled: regoguard.CompiledPolicy) -> list[str]:
    names = list(compiled.settings["tools"])
    names += [g["key"].replace("*", "x") for g in compiled.settings["globs"]]
    return [*names, "no_such_tool"]


ASCII_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(-1e6, 1e6, allow_nan=False).map(
        lambda f: round(f, 3)) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
    | st.sampled_from(["main", "usd", "eur", "https://example.com", "/workspace/a.py", "../etc", "acme"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["path", "url", "amount"]), inner,
                                                                 max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module", params=SHIPPED, ids=[p.stem for p in SHIPPED])
def shipped(request: pytest.FixtureRequest):
    engine = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy(request.param)), UNCACHED)
    yield engine
    engine.close()


def test_shipped_policy_decides_the_same_on_opa_for_every_tool(shipped):
    for name in _names(shipped.compiled):
        for args, schema in (({}, None), ({}, {"required": ["url"]}), ({"url": "https://x"}, {"required": ["url"]})):
            assert_agree(shipped, call_doc(name, args, schema))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_shipped_policy_decides_the_same_on_opa_for_random_calls(shipped, data):
    name = data.draw(st.sampled_from(_names(shipped.compiled)))
    args = data.draw(st.dictionaries(st.sampled_from(["amount", "currency", "url", "path", "owner", "branch",
                                                      "repo", "message", "script", "session_id"]),
                                     ASCII_VALUES, max_size=4))
    schema = data.draw(st.none() | st.fixed_dictionaries({"required": st.lists(st.sampled_from(["url", "path"]),
                                                                                  max_size=2, unique=True)}))
    doc = call_doc(name, args, schema)
    if data.draw(st.booleans()):
        doc["approval"] = {"granted": True}  # a person approved it: the approved retry decides the same too
    assert_agree(shipped, doc)


@pytest.mark.parametrize("granted", [False, True], ids=["asked", "approved"])
@pytest.mark.parametrize("amount", [0, 4000, 5000, 5001, 12000, 20000, 20001, "12000", None])
def test_approval_rules_decide_the_same_on_opa(amount, granted):
    """payments.yaml's require_approval rule: below its line allowed, above it held, and as a person's
    approved retry allowed; the cap's denial wins over the hold either way. regopy and OPA agree on all."""
    engine = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy(REPO / "policies" / "payments.yaml")),
                              UNCACHED)
    try:
        doc = call_doc("create_refund", {} if amount is None else {"amount": amount})
        if granted:
            doc["approval"] = {"granted": True}
        assert_agree(engine, doc)
        got = engine.evaluate(doc)
        held = isinstance(amount, int) and 5000 < amount <= 20000 and not granted
        assert (got.action == "require_approval") == held, got
        if isinstance(amount, int) and 0 < amount <= 20000 and (granted or amount <= 5000):
            assert got.allow and got.charges, got
    finally:
        engine.close()


# --- the property test's corpus ------------------------------------------------------------------------


def _ascii(value: Any) -> bool:
    return json.dumps(value, ensure_ascii=False).isascii()


def _engine(text: str) -> regoguard.Engine:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "generated.yaml")
        Path(path).write_text(text, encoding="utf-8")
        policy = regoguard.load_policy(path)
    return regoguard.Engine(regoguard.compile_policy(policy), regoguard.EngineLimits(cache_size=0, prebuild=False))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario=scenarios())
def test_generated_policies_decide_the_same_on_opa(scenario):
    policy, calls = scenario
    text = yaml.safe_dump(policy, sort_keys=False, allow_unicode=True)
    if not _ascii(policy):
        return  # byte- and character-matching engines may differ on non-ASCII text (regex_check.py)
    engine = _engine(text)
    try:
        for tool, args, schema in calls:
            if not _ascii(args) or value_problem(args):
                continue  # non-ASCII text (see above); values regopy cannot carry are denied before Rego
            doc: dict[str, Any] = {"tool": {"name": tool, "arguments": args}}
            if schema is not None:
                doc["schema"] = schema
            assert_agree(engine, doc)
    finally:
        engine.close()


# --- what used to fail open on OPA -------------------------------------------------------------------

VALIDATE = "tools:\n  session_start:\n    rules:\n      - action: allow\n        validate: {required_args: true}\n"


@pytest.mark.parametrize("schema", [None, [], "x", {"required": "url"}, {"required": [1]}, {"required": ["url"]}])
def test_required_args_without_a_usable_schema_is_denied_on_opa_too(schema):
    engine = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy_text(VALIDATE)), UNCACHED)
    try:
        doc = call_doc("session_start", {"viewport": {}})
        if schema is not None:
            doc["schema"] = schema
        if schema is None:
            assert "schema" not in doc
        d = engine.evaluate(doc)
        assert not d.allow
        view = opa_file_view(engine.compiled, doc)
        assert view is not None and view["allow"] is False and view["reasons"], view
        assert_agree(engine, doc)
        # a schema that requires nothing: allowed, on both
        doc["schema"] = {"type": "object"}
        assert engine.evaluate(doc).allow
        assert_agree(engine, doc)
    finally:
        engine.close()


# --- team Rego ---------------------------------------------------------------------------------------

TEAM = {"team/deny.rego": """package regoguard.custom

import rego.v1

deny contains {"rule": "no-main", "message": "Pushes to main need a release ticket"} if {
	input.tool.name == "push_files"
	input.tool.arguments.branch == "main"
}

approval contains {"rule": "big-refund", "message": "Refunds over $100 need a human"} if {
	input.tool.name == "create_refund"
	is_number(input.tool.arguments.amount)
	input.tool.arguments.amount > 10000
}

charges contains {"counter": "refund_spend", "capacity": 50000, "window": 86400, "scope": "principal",
	"cost": input.tool.arguments.amount, "rule": "refund-budget"} if input.tool.name == "create_refund"
"""}

TEAM_POLICY = """\
tools:
  push_files:
    rules:
      - name: owner
        conditions:
          - {path: args.owner, op: eq, value: acme}
  create_refund:
    rules:
      - name: cap
        conditions:
          - {path: args.amount, op: lte, value: 50000}
"""


@pytest.mark.parametrize(("tool", "args"), [
    ("push_files", {"owner": "acme", "branch": "main"}),
    ("push_files", {"owner": "acme", "branch": "dev"}),
    ("push_files", {"owner": "evil", "branch": "main"}),
    ("create_refund", {"amount": 500}),
    ("create_refund", {"amount": 20000}),
    ("create_refund", {"amount": 90000}),
    ("other", {}),
])
def test_team_rego_decides_the_same_on_opa(tool, args):
    compiled = regoguard.compile_policy(regoguard.load_policy_text(TEAM_POLICY))
    engine = regoguard.Engine(compiled, UNCACHED, extra_modules=TEAM)
    try:
        assert_agree(engine, call_doc(tool, args), TEAM)
    finally:
        engine.close()


# --- conditions on who is calling (principal, session, server) ----------------------------------------

CONTEXT_POLICY = """\
version: "1"
default: allow
tools:
  delete_customer:
    rules:
      - name: admins only
        conditions:
          - {path: principal.claims.groups, op: contains, value: admins}
          - {path: principal.claims.level, op: gte, value: 3}
  echo:
    rules:
      - name: known clients on the crm server
        conditions:
          - {path: session.client.name, op: regex, value: "^(claude|cursor)"}
          - {path: server.name, op: in, value: [crm, crm-staging]}
          - {path: principal.id, op: not_in, value: [mallory]}
          - {path: args.text, op: len_lte, value: 8}
  create_refund:
    visible_to:
      - {path: principal.claims.groups, op: contains, value: ops}
      - {path: session.client.name, op: starts_with, value: claude}
    rules: []
  "*":
    rules:
      - name: no anonymous callers
        conditions:
          - {path: principal.claims.email, op: exists, value: true}
"""

CLAIMS = st.fixed_dictionaries({}, optional={
    "groups": st.lists(st.sampled_from(["admins", "eng", "ops", 3]), max_size=3) | st.sampled_from(["admins", 7]),
    "level": st.integers(0, 5) | st.sampled_from(["3", 3.5, None]),
    "email": st.sampled_from(["a@example.com", "", None]),
})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tool=st.sampled_from(["delete_customer", "echo", "create_refund", "other"]), claims=CLAIMS,
       principal=st.sampled_from(["ada", "mallory"]), client=st.sampled_from(["claude-code", "cursor", "x", None]),
       server=st.sampled_from(["crm", "crm-staging", "billing"]), text=st.sampled_from(["hi", "far too long"]))
def test_context_conditions_decide_the_same_on_opa(tool, claims, principal, client, server, text):
    policy = Path(tempfile.mkdtemp()) / "context.yaml"
    policy.write_text(CONTEXT_POLICY)
    engine = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy(policy)), UNCACHED)
    try:
        doc = call_doc(tool, {"text": text})
        doc["principal"] = {"id": principal, "claims": claims}
        doc["session"]["client"]["name"] = client
        doc["server"]["name"] = server
        assert_agree(engine, doc)
    finally:
        engine.close()


def test_calendar_window_charges_decide_the_same_on_opa(tmp_path: Path) -> None:
    """`windows: calendar` marks each charge; the engine's charges and OPA's agree on the mark."""
    path = tmp_path / "p.yaml"
    path.write_text("""\
version: "1"
windows: calendar
tools:
  search:
    rules:
      - rate_limit: 2/minute
      - name: budget
        conditions: [{path: state.search.spent, op: lte, value: 50}]
        state: {counter: spent, window: hour, increment_from: args.n}
""", encoding="utf-8")
    engine = regoguard.Engine(regoguard.compile_policy(regoguard.load_policy(path)), UNCACHED)
    try:
        for args in ({"n": 3}, {"n": 9}, {}):
            assert_agree(engine, call_doc("search", args))
        charges = engine.evaluate(call_doc("search", {"n": 3})).charges
        assert [c.calendar for c in charges] == [True, True]
    finally:
        engine.close()
