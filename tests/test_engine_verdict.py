"""Reading the engine's verdict: a decider's vector of its rules' outcomes, combined with the rules'
reasons and charges, and anything unexpected denied; the library's verdict (team Rego) parsed strictly."""

from __future__ import annotations

from helpers_policy import call_doc, compiled_for
from regoguard import Engine, EngineLimits
from regoguard.engine_io import fixed_charges, parse_verdict
from regoguard.engine_vector import VectorReader

CAP = {"rule": "t/cap", "message": "too much", "detail": ["args.n lte 5 does not hold"]}
REGION = {"rule": "t/region", "message": "wrong region", "detail": ['args.r in ["a"] does not hold']}
FIXED = {"counter": "c", "scope": "tool", "cost": 1, "capacity": 5, "window": 60, "strict": False,
         "rule": "t/r", "message": "m"}
DERIVED = {**FIXED, "cost_from": {"path": ["amount"], "text": "args.amount"}}


def vector(*terms: str) -> str:
    return '{"expressions":[[' + ",".join(terms) + "]]}"


def reader(*spec: dict, charges: list | None = None) -> VectorReader:
    entry = {"charges": charges or []}
    return VectorReader(tuple(spec), entry, fixed_charges(entry))


def ok(at: int, reason: dict) -> dict:
    return {"kind": "ok", "at": at, "reason": reason}


def test_every_rule_holding_allows_with_the_fixed_charges():
    r = reader(ok(0, CAP), ok(2, REGION), charges=[FIXED])
    d = r.read(vector("true", "true"), "t")
    assert d.allow and [c.cost for c in d.charges] == [1]
    assert r.read(r.plain or "", "t").allow  # the exact text of that answer is known ahead


def test_failing_rules_deny_with_their_reasons_in_order():
    d = reader(ok(0, CAP), ok(2, REGION)).read(vector("false", "false"), "t")
    assert not d.allow and d.action == "deny"
    assert [(x.rule, x.message) for x in d.reasons] == [("t/cap", "too much"), ("t/region", "wrong region")]
    assert d.extra["details"]["t/region"] == ['args.r in ["a"] does not hold']


def test_a_vector_of_the_wrong_length_or_types_is_a_malformed_denial():
    r = reader(ok(0, CAP), ok(2, REGION))
    for raw in (vector("true"), vector("true", "true", "true"), vector("true", "1"), vector("true", '"true"'),
                vector("true", "null"), '{"expressions":[{"allow":true}]}', "garbage"):
        d = r.read(raw, "t")
        assert not d.allow and d.reasons[0].rule == "engine/malformed", raw


def test_a_rule_of_several_checks_names_those_that_fail():
    spec = {"kind": "checks", "at": 1, "rule": "t/path", "custom": None, "cost": False,
            "texts": [['args.p regex "^/w/" does not hold'], ['args.p not_regex "\\.\\." does not hold']]}
    r = reader(ok(0, CAP), spec)
    d = r.read(vector("true", "[1,0]"), "t")
    assert d.reasons[0].message == 'Policy rule "t/path" denied the call: args.p not_regex "\\.\\." does not hold'
    assert d.extra["details"]["t/path"] == ['args.p not_regex "\\.\\." does not hold']
    assert r.read(vector("true", "true"), "t").allow
    assert r.plain == vector("true", "true")  # known ahead whatever the kinds of its terms
    # a check whose body holds for several elements of a list counts them: it holds
    details = r.read(vector("true", "[2,0]"), "t").extra["details"]
    assert details["t/path"] == ['args.p not_regex "\\.\\." does not hold']
    # a failure with every check holding, or counts that are not one per check, is no verdict
    for term in ("[1,1]", "[0]", "[0,-1]", "[0,1.5]", "[true,false]", "false"):
        assert r.read(vector("true", term), "t").reasons[0].rule == "engine/malformed", term


def test_a_call_dependent_detail_comes_last_and_keeps_rule_order():
    detail = {"kind": "detail", "at": 0, "rule": "t/req", "custom": "schema first", "cost": False}
    r = reader(ok(1, CAP), detail)
    d = r.read(vector("false", '["missing required argument \\"x\\""]'), "t")
    assert [x.rule for x in d.reasons] == ["t/req", "t/cap"]
    assert d.reasons[0].message == "schema first"
    for term in ("[]", "[1]", "false", '"x"'):
        assert r.read(vector("true", term), "t").reasons[0].rule == "engine/malformed", term


def test_an_approval_rule_holds_a_call_unless_a_rule_denies_or_a_person_approved():
    ask = {"rule": "t/ask", "message": "needs a person", "detail": ["its conditions do not all hold"]}
    r = reader(ok(0, CAP), {"kind": "held", "at": 1, "reason": ask}, {"kind": "granted"})
    held = r.read(vector("true", "false", "false"), "t")
    assert held.action == "require_approval" and held.reasons[0].rule == "t/ask"
    assert r.read(vector("true", "false", "true"), "t").allow
    assert r.read(vector("false", "false", "true"), "t").action == "deny"
    assert r.read(vector("true", "true", "false"), "t").allow


def test_argument_derived_costs_come_with_the_vector():
    r = reader(ok(0, CAP), {"kind": "costs", "n": 1}, charges=[DERIVED])
    assert r.plain is None  # a cost comes from the call: no answer is known ahead
    d = r.read(vector("true", "[3]"), "t", {"amount": 3})
    assert d.allow and [c.cost for c in d.charges] == [3]
    for term in ("[]", "[-1]", '["3"]'):
        assert not r.read(vector("true", term), "t", {"amount": 3}).allow, term


def test_the_hidden_and_unlisted_reasons_name_the_tool():
    hide = {"rule": "hide", "message": "The tool is hidden by policy", "detail": ["the tool is listed under hide"]}
    d = reader(ok(0, hide)).read(vector("false"), "wipe_disk")
    assert d.reasons[0].message == 'Tool "wipe_disk" is hidden by policy'


def test_engine_failures_are_denials_of_their_own_kind():
    r = reader(ok(0, CAP))
    assert r.read("\x00timeout:took too long", "t").reasons[0].rule == "engine/timeout"
    assert r.read("\x00error:boom", "t").reasons[0].rule == "engine/error"
    assert r.read("undefined", "t").reasons[0].rule == "engine/undefined"


def test_the_vector_of_a_real_bundle_decides_as_its_rules_say():
    compiled = compiled_for("""
tools:
  pay:
    rules:
      - name: cap
        conditions: [{path: args.amount, op: lte, value: 100}]
      - name: path
        conditions:
          - {path: args.path, op: starts_with, value: /w/}
          - {path: args.path, op: len_lte, value: 8}
""")
    engine = Engine(compiled, EngineLimits(cache_size=0))
    try:
        assert engine.evaluate(call_doc("pay", {"amount": 5, "path": "/w/a"})).allow
        d = engine.evaluate(call_doc("pay", {"amount": 500, "path": "/w/too/long"}))
        assert [r.rule for r in d.reasons] == ["pay/cap", "pay/path"]
        assert d.extra["details"]["pay/path"] == ["args.path len_lte 8 does not hold"]
    finally:
        engine.close()


def test_a_check_holding_for_several_elements_still_holds():
    # `contains` with a list value holds once per matching element: a count of 2 is a check that holds
    compiled = compiled_for("""
tools:
  t:
    rules:
      - name: a
        conditions:
          - {path: args.tags, op: contains, value: [1]}
          - {path: args.n, op: lte, value: 5}
""")
    engine = Engine(compiled, EngineLimits(cache_size=0))
    try:
        d = engine.evaluate(call_doc("t", {"tags": [[1], [1]], "n": 9}))
        assert [r.rule for r in d.reasons] == ["t/a"]
        assert d.extra["details"]["t/a"] == ["args.n lte 5 does not hold"]
        assert engine.evaluate(call_doc("t", {"tags": [[1], [1]], "n": 1})).allow
    finally:
        engine.close()


def test_a_rules_term_holds_only_when_its_rule_does_not_by_default():
    compiled = compiled_for("""
tools:
  t:
    rules:
      - name: a
        validate: {required_args: true}
        conditions: [{path: args.n, op: lte, value: 5}]
""")
    (unit,) = [u for u in compiled.units if u.startswith("t")]
    text = compiled.unit_module(unit)
    assert "t0_e0 := true if t0_ok0\n" in text and "default t0_e0" not in text


def test_the_librarys_verdict_is_parsed_strictly():
    # a duplicate key (what an unescaped input string could inject) is refused, not read as the last one
    raw = '{"expressions":[{"allow":false, "reasons":[], "allow":true}]}'
    d = parse_verdict(raw, {"charges": []}, "t", team=True)
    assert not d.allow and d.reasons[0].rule == "engine/malformed"
    # a verdict of the engine's own bundle (a vector) is no library verdict
    assert not parse_verdict(vector("true"), {"charges": []}, "t", team=True).allow
