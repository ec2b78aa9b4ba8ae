"""Reading the engine's verdict: the commonest answers known by their exact text, a constant reason by
its number in the decider's table, and anything else parsed strictly or denied."""

from __future__ import annotations

from regoguard.engine_io import PLAIN_ALLOW, parse_verdict

TABLE = {0: {"rule": "t/cap", "message": "too much", "detail": ["args.n lte 5 does not hold"]},
         2: {"rule": "t/region", "message": "wrong region", "detail": ["args.r in [\"a\"] does not hold"]}}


def test_the_plain_allow_text_stands_only_for_a_decider_without_derived_costs():
    fixed = {"counter": "c", "scope": "tool", "cost": 1, "capacity": 5, "window": 60, "strict": False,
             "rule": "t/r", "message": "m"}
    d = parse_verdict(PLAIN_ALLOW, {"charges": [fixed]}, "t")
    assert d.allow and [c.cost for c in d.charges] == [1]
    # a decider whose charge takes its cost from an argument must say which: the bare text is malformed
    derived = {**fixed, "cost_from": {"path": ["amount"], "text": "args.amount"}}
    d = parse_verdict(PLAIN_ALLOW, {"charges": [derived]}, "t", args={"amount": 3})
    assert not d.allow and d.reasons[0].rule == "engine/malformed"
    # the team's verdict carries its own charges: never read from the bare text
    assert not parse_verdict(PLAIN_ALLOW, {"charges": []}, "t", team=True).allow


def test_a_compact_denial_names_its_reasons_by_number():
    d = parse_verdict('{"expressions":[{"allow":false, "reasons":[0,2]}]}', {}, "t", table=TABLE)
    assert not d.allow and d.action == "deny"
    assert [(r.rule, r.message) for r in d.reasons] == [("t/cap", "too much"), ("t/region", "wrong region")]
    assert d.extra["details"]["t/region"] == ['args.r in ["a"] does not hold']


def test_a_number_the_decider_does_not_have_is_a_malformed_verdict():
    d = parse_verdict('{"expressions":[{"allow":false, "reasons":[1]}]}', {}, "t", table=TABLE)
    assert not d.allow and d.reasons[0].rule == "engine/malformed"
    # without a table (the team's path) a number is never taken for a reason
    d = parse_verdict('{"expressions":[{"allow":false, "reasons":[0]}]}', {}, "t")
    assert not d.allow and d.reasons[0].rule == "engine/malformed"


def test_reasons_in_full_and_numbers_mix_in_order():
    raw = ('{"expressions":[{"allow":false, "reasons":[{"rule": "t/req", "message": "missing", "detail": ["x"]}, 2]}]}')
    d = parse_verdict(raw, {}, "t", table=TABLE)
    assert [r.rule for r in d.reasons] == ["t/req", "t/region"]


def test_text_beyond_the_exact_forms_is_parsed_strictly():
    # a duplicate key (what an unescaped input string could inject) is refused, not read as the last one
    raw = '{"expressions":[{"allow":false, "reasons":[0], "allow":true}]}'
    d = parse_verdict(raw, {"charges": []}, "t", table=TABLE)
    assert not d.allow and d.reasons[0].rule == "engine/malformed"


def test_the_hidden_and_unlisted_reasons_name_the_tool():
    table = {0: {"rule": "hide", "message": "The tool is hidden by policy",
                 "detail": ["the tool is listed under hide"]}}
    d = parse_verdict('{"expressions":[{"allow":false, "reasons":[0]}]}', {}, "wipe_disk", table=table)
    assert d.reasons[0].message == 'Tool "wipe_disk" is hidden by policy'
