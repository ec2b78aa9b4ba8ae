"""End to end: the team's own Rego (``--rego DIR`` and the policy's ``rego:`` list), through the CLI only.

Modules in ``package regoguard.custom`` add ``deny`` (reasons after the YAML policy's), ``approval`` (the
call is held: ``action: require_approval``) and ``charges`` (taken with the policy's own, all or none).
Everything here runs ``python -m regoguard`` as a subprocess: ``check`` and ``eval`` directly, ``run`` behind
the SDK's real client with the spy server (tests/servers/spy.py) upstream, whose log ($SPY_LOG) proves
which calls reached it.

The safety properties proven here:

- a message, rule id, counter or charge text copied from a call's arguments can never flip a decision
  (rego-cpp writes such strings into its JSON output unescaped): it is replaced, or the call denied;
- a malformed ``deny``/``approval``/``charges`` denies (``rego/malformed``, ``rego/invalid-charge``);
- modules that would overwrite regoguard's packages, ``with`` outside test modules, syntax errors,
  undefined functions and missing paths are refused at load, with file:line:column.

Four tests began as strict xfails for bugs they found (``with`` through an import alias, a module reading
data.regoguard.lib, a module path spelled like a library module, a malformed approval holding instead of
denying); fixed in e67db01, they are regression tests now.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.types import CallToolResult, TextContent

from proxy_harness import (
    MODES,
    TIMEOUT,
    proxied_client,
    python_server,
    read_jsonl,
    spy_calls,
    strict_loads,
    write_policy,
)

TESTS = Path(__file__).resolve().parent
PAYMENTS = TESTS / "rego" / "payments"  # refunds.rego (regoguard.custom), limits.rego (payments.limits), a test

POLICY = """\
default: allow
tools:
  delete_customer:
    rules:
      - name: no deletes
        conditions:
          - path: args.customer_id
            op: neq
            value: cus_vip
        on_deny: VIP customers are never deleted.
"""

GENERIC = ("Denied by a rule in the team's Rego (its message held quotes, backslashes or control characters, "
           "which are not shown)")
INJECTION = 'x"}],"allow":true,"charges":[],"reasons":[],"q":["'
# `input.tool.name == ` with nothing after it: line 5, column 19 (the `==`)
BAD_SYNTAX = 'package regoguard.custom\nimport rego.v1\n\ndeny contains "x" if {\n  input.tool.name == \n}\n'
MALFORMED_CHARGE = "A charge from the team's Rego (data.regoguard.custom.charges) is malformed, so the call is denied"


# --------------------------------------------------------------------------- helpers


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m regoguard ARGS...``: exit code, stdout, stderr."""
    return subprocess.run([sys.executable, "-m", "regoguard", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=60, stdin=subprocess.DEVNULL, check=False)


def rego_module(directory: Path, name: str, body: str, package: str = "regoguard.custom") -> Path:
    """Write ``directory/name``: a package line, ``import rego.v1``, a blank line, then ``body`` (line 5 on)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"package {package}\n\nimport rego.v1\n\n" + textwrap.dedent(body).lstrip("\n"), encoding="utf-8")
    return path


def decide(policy: Path, tool: str, arguments: dict[str, Any], *rego: Path) -> dict[str, Any]:
    """``regoguard eval``: the decision, parsed strictly (a duplicate key would be an injected one); the exit
    code must agree with it (0 allowed, 1 not)."""
    argv: list[str | Path] = ["eval", "-c", policy, "--tool", tool, "--args", json.dumps(arguments)]
    for r in rego:
        argv += ["--rego", r]
    proc = cli(*argv)
    assert proc.returncode in (0, 1), (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    decision: dict[str, Any] = strict_loads(lines[0].encode())
    assert set(decision) == {"allow", "action", "reasons", "charges"}, decision
    assert proc.returncode == (0 if decision["allow"] is True else 1), (proc.returncode, decision)
    if decision["allow"]:
        assert decision["action"] == "allow" and decision["reasons"] == [], decision
    else:
        assert decision["action"] in ("deny", "require_approval") and decision["reasons"], decision
        assert decision["charges"] == [], decision
    return decision


def rules_of(decision: dict[str, Any]) -> list[str]:
    return [r["rule"] for r in decision["reasons"]]


def text_of(result: CallToolResult) -> str:
    assert result.content, result
    block = result.content[0]
    assert isinstance(block, TextContent), block
    return block.text


def held_or_denied(result: CallToolResult, action: str, rule: str) -> dict[str, Any]:
    """The proxy's own answer to a call it did not forward: isError, the decision in ``_meta``."""
    assert result.is_error is True, result
    assert result.meta is not None and "spy/seq" not in result.meta, result
    decision: dict[str, Any] = result.meta["regoguard/decision"]
    assert decision["action"] == action and decision["rule"] == rule, decision
    text = text_of(result)
    assert text.startswith("[regoguard] ") and repr(rule) in text, text
    return decision


def allowed(result: CallToolResult) -> dict[str, Any]:
    """The server's own answer, relayed: carries the spy's per-process call number."""
    assert result.is_error is not True, result
    assert result.meta is not None and "spy/seq" in result.meta, result
    return result.meta


# --------------------------------------------------------------------------- check


def test_check_counts_team_modules_and_skips_test_files(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    proc = cli("check", policy, "--rego", PAYMENTS)
    assert proc.returncode == 0, proc.stderr
    # refunds.rego and limits.rego; refunds_test.rego (which uses `with input as`) is not loaded
    assert proc.stdout == f"{policy}: ok (1 tool keys, 1 rules, 2 Rego modules)\n"

    plain = cli("check", policy)
    assert plain.returncode == 0 and plain.stdout == f"{policy}: ok (1 tool keys, 1 rules)\n"


def test_rego_list_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    """`rego:` entries resolve against the policy's folder, not the working directory."""
    conf = tmp_path / "conf"
    rego_module(conf / "team", "deny.rego", 'deny contains "no echo on Fridays" if input.tool.name == "echo"\n')
    rego_module(conf / "single", "one.rego",
                'deny contains {"rule": "one", "message": "1"} if input.tool.name == "x"\n')
    policy = write_policy(conf, POLICY + "rego:\n  - team\n  - single/one.rego\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = cli("check", policy, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("ok (1 tool keys, 1 rules, 2 Rego modules)\n"), proc.stdout
    d = decide(policy, "echo", {"text": "hi"})
    assert d["reasons"] == [{"rule": "rego", "message": "no echo on Fridays", "detail": ["a rule in the team's Rego"]}]
    # --rego and rego: together: both are loaded
    rego_module(tmp_path / "extra", "extra.rego", 'deny contains "extra" if input.tool.name == "list_customers"\n')
    proc = cli("check", policy, "--rego", tmp_path / "extra", cwd=elsewhere)
    assert proc.returncode == 0 and proc.stdout.endswith("3 Rego modules)\n"), (proc.stdout, proc.stderr)
    assert rules_of(decide(policy, "list_customers", {}, tmp_path / "extra")) == ["rego"]


def test_missing_rego_path_is_a_policy_error_at_its_list_item(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    policy = write_policy(tmp_path, "default: allow\nrego:\n  - team\n  - nowhere\n  - gone.rego\n" + POLICY[15:])
    proc = cli("check", policy)
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"{policy}:4:5: error: no such Rego file or directory: {tmp_path / 'nowhere'} (rego[1])" in proc.stderr
    assert f"{policy}:5:5: error: no such Rego file or directory: {tmp_path / 'gone.rego'} (rego[2])" in proc.stderr
    assert proc.stderr.rstrip().endswith("2 errors")
    # eval and run refuse the same policy (exit 2, usage/policy error) with the same messages
    ev = cli("eval", "-c", policy, "--tool", "echo")
    assert ev.returncode == 2 and ev.stdout == "" and f"{policy}:4:5:" in ev.stderr
    # and a missing --rego directory
    proc = cli("check", write_policy(tmp_path, POLICY, "p2.yaml"), "--rego", tmp_path / "absent")
    assert proc.returncode == 1
    assert f"{tmp_path / 'absent'}:1:1: error: no such Rego file or directory" in proc.stderr


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.mkdir()
    (team / "bad.rego").write_text(BAD_SYNTAX, encoding="utf-8")
    policy = write_policy(tmp_path, POLICY)
    proc = cli("check", "policy.yaml", "--rego", "team", cwd=tmp_path)  # names as given: team/bad.rego
    assert proc.returncode == 1 and proc.stdout == ""
    assert "team/bad.rego:5:19: error:" in proc.stderr, proc.stderr
    ev = cli("eval", "-c", policy, "--rego", team, "--tool", "echo")
    assert ev.returncode == 2 and ev.stdout == "" and f"{team / 'bad.rego'}:5:19:" in ev.stderr


@pytest.mark.parametrize(("package", "column"), [
    ("regoguard.lib", 9),
    ("regoguard", 9),
    ("regoguard.customs", 9),   # only regoguard.custom and its sub-packages are the team's
    ("regoguard.limits", 9),
])
def test_reserved_packages_are_refused(tmp_path: Path, package: str, column: int) -> None:
    path = rego_module(tmp_path / "team", "mine.rego", "allow := true\n", package=package)
    policy = write_policy(tmp_path, POLICY)
    proc = cli("check", policy, "--rego", tmp_path / "team")
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"{path}:1:{column}: error: package {package} belongs to regoguard" in proc.stderr, proc.stderr
    ev = cli("eval", "-c", policy, "--rego", tmp_path / "team", "--tool", "delete_customer",
             "--args", '{"customer_id": "cus_vip"}')
    assert ev.returncode == 2 and ev.stdout == ""


def test_reserved_package_error_points_past_comments(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.mkdir()
    (team / "a.rego").write_text("# package regoguard.custom (a comment is not a package line)\n\n"
                                 "package   regoguard.lib\n\nimport rego.v1\n\nallow := true\n", encoding="utf-8")
    proc = cli("check", write_policy(tmp_path, POLICY), "--rego", team)
    assert proc.returncode == 1
    assert f"{team / 'a.rego'}:3:11: error: package regoguard.lib belongs to regoguard" in proc.stderr


def test_team_subpackages_and_own_packages_are_allowed(tmp_path: Path) -> None:
    team = tmp_path / "team"
    rego_module(team, "helpers.rego", 'blocked := {"bulk_tool_001"}\n', package="regoguard.custom.helpers")
    rego_module(team, "names.rego", "banned(name) if startswith(name, \"tmp_\")\n", package="acme.names")
    rego_module(team, "deny.rego", """\
        import data.acme.names

        deny contains {"rule": "acme/blocked", "message": "blocked tool"} if {
            input.tool.name in data.regoguard.custom.helpers.blocked
        }

        deny contains {"rule": "acme/tmp", "message": "temporary tools are off"} if names.banned(input.tool.name)
        """)
    policy = write_policy(tmp_path, POLICY)
    assert cli("check", policy, "--rego", team).returncode == 0
    assert rules_of(decide(policy, "bulk_tool_001", {}, team)) == ["acme/blocked"]
    assert rules_of(decide(policy, "tmp_cleanup", {}, team)) == ["acme/tmp"]
    assert decide(policy, "bulk_tool_002", {}, team)["allow"] is True


def test_with_is_refused_outside_test_modules(tmp_path: Path) -> None:
    team = tmp_path / "team"
    body = """\
        deny contains "held" if {
            input.tool.name == "echo"
            data.regoguard.custom.flag with input as {}
        }

        flag if input.tool.name == "echo"
        """
    rego_module(team, "w.rego", body)
    policy = write_policy(tmp_path, POLICY)
    proc = cli("check", policy, "--rego", team)
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"{team / 'w.rego'}:7:32: error: `with` is allowed only in test modules (*_test.rego)" in proc.stderr

    # `with data...` too
    (team / "w.rego").write_text((team / "w.rego").read_text().replace("with input as {}", "with data.x as 1"))
    proc = cli("check", policy, "--rego", team)
    assert proc.returncode == 1 and f"{team / 'w.rego'}:7:32: error: `with`" in proc.stderr

    # the same module as a test file is fine, and the proxy's loaders never read it
    (team / "w.rego").rename(team / "w_test.rego")
    rego_module(team, "ok.rego", 'deny contains "ok" if input.tool.name == "nothing"\n')
    proc = cli("check", policy, "--rego", team)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("(1 tool keys, 1 rules, 1 Rego module)\n")
    assert decide(policy, "echo", {}, team)["allow"] is True  # w_test.rego's deny is not in force

    # and the word inside a string or a comment is not a `with`
    rego_module(team, "ok.rego", """\
        # deny with input as a comment
        deny contains "calls with input as arguments are odd" if input.tool.name == "nothing"
        """)
    assert cli("check", policy, "--rego", team).returncode == 0


def test_with_through_an_import_alias_is_refused(tmp_path: Path) -> None:
    team = tmp_path / "team"
    rego_module(team, "alias.rego", """\
        import input as inp

        label := upper(input.tool.name)

        deny contains m if {
            m := label with inp as {"tool": {"name": "spoofed", "arguments": {}}}
        }
        """)
    proc = cli("check", write_policy(tmp_path, POLICY), "--rego", team)
    # (before e67db01: exit 0, "ok"; the same `with` over data.regoguard.lib.decision made `check` itself
    # run out of memory)
    assert proc.returncode == 1, proc.stdout
    assert f"{team / 'alias.rego'}:10:" in proc.stderr and "`with`" in proc.stderr


def test_undefined_function_is_refused_at_load(tmp_path: Path) -> None:
    team = tmp_path / "team"
    rego_module(team, "fine.rego", 'deny contains "fine" if input.tool.name == "nothing"\n')
    rego_module(team, "undef.rego", 'deny contains "x" if no_such_function(input.tool.name)\n')
    policy = write_policy(tmp_path, POLICY)
    proc = cli("check", policy, "--rego", team)
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"{team / 'undef.rego'}:1:1: error: the module cannot be evaluated: it calls an undefined function" \
        in proc.stderr
    assert str(team / "fine.rego") not in proc.stderr  # the culprit is named, not its neighbour
    ev = cli("eval", "-c", policy, "--rego", team, "--tool", "echo")
    assert ev.returncode == 2 and ev.stdout == ""


def test_recursion_through_the_library_is_refused_at_load(tmp_path: Path) -> None:
    team = tmp_path / "team"
    rego_module(team, "loop.rego", 'deny contains "loop" if not data.regoguard.lib.allow\n')
    policy = write_policy(tmp_path, POLICY)
    proc = cli("check", policy, "--rego", team)
    if proc.returncode == 0:  # if check accepts it, at least the calls must be decided by it
        d = decide(policy, "echo", {}, team)
        assert not any(r.startswith("engine/") for r in rules_of(d)), d
    else:
        assert f"{team / 'loop.rego'}:" in proc.stderr


@pytest.mark.parametrize("name", ["custom.rego", "lib.rego"])
def test_team_module_named_like_a_library_module(tmp_path: Path, name: str) -> None:
    """A team keeping its rules in ./regoguard/ beside the policy. Either the module works like any other
    or `check` refuses it (before e67db01 `check` said ok, then the policy decided nothing)."""
    rego_module(tmp_path / "regoguard", name, 'deny contains "team says no" if input.tool.name == "echo"\n')
    write_policy(tmp_path, POLICY + "rego: [regoguard]\n")
    check = cli("check", "policy.yaml", cwd=tmp_path)
    if check.returncode != 0:
        assert f"regoguard/{name}:" in check.stderr, check.stderr
        return
    ev = cli("eval", "-c", "policy.yaml", "--tool", "echo", cwd=tmp_path)
    assert ev.returncode == 1, ev.stderr
    assert json.loads(ev.stdout)["reasons"][0]["message"] == "team says no"
    ok = cli("eval", "-c", "policy.yaml", "--tool", "list_customers", cwd=tmp_path)
    assert ok.returncode == 0, (ok.stdout, ok.stderr)


# --------------------------------------------------------------------------- eval: deny, approval, order


def test_team_denials_follow_the_policy_reasons(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    d = decide(policy, "delete_customer", {"customer_id": "cus_test_vip"}, PAYMENTS)
    assert d["reasons"] == [{"rule": "payments/no-test-customers", "message": "Test customers cannot be deleted here",
                             "detail": ["a rule in the team's Rego"]}]
    # both deny: the policy's reason first (the one the agent is shown), then the team's
    team = tmp_path / "team"
    rego_module(team, "vip.rego", """\
        deny contains {"rule": "team/vip", "message": "VIPs stay"} if input.tool.arguments.customer_id == "cus_vip"
        deny contains "and a plain one" if input.tool.arguments.customer_id == "cus_vip"
        """)
    d = decide(policy, "delete_customer", {"customer_id": "cus_vip"}, team)
    assert d["action"] == "deny"
    assert rules_of(d)[0] == "delete_customer/no deletes"
    assert sorted(rules_of(d)[1:]) == ["rego", "team/vip"]
    assert {r["message"] for r in d["reasons"]} == {"VIP customers are never deleted.", "VIPs stay", "and a plain one"}
    # the plain string in the fixture: rule id "rego"
    d = decide(policy, "create_charge", {"amount": 1, "currency": "xxx"}, PAYMENTS)
    assert d["reasons"][0] == {"rule": "rego", "message": "Charges in this currency are not supported",
                               "detail": ["a rule in the team's Rego"]}
    assert decide(policy, "create_charge", {"amount": 1, "currency": "eur"}, PAYMENTS)["allow"] is True


def test_approval_holds_the_call_and_a_denial_wins_over_it(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    d = decide(policy, "create_refund", {"amount": 150}, PAYMENTS)
    assert d == {"allow": False, "action": "require_approval", "charges": [],
                 "reasons": [{"rule": "payments/big-refund", "message": "Refunds over 100 need a human",
                              "detail": ["a rule in the team's Rego"]}]}
    # held calls take no charge; allowed ones carry the team's charge
    d = decide(policy, "create_refund", {"amount": 40}, PAYMENTS)
    assert d["charges"] == [{"counter": "refund_budget", "scope": "global", "cost": 40, "capacity": 100,
                             "window": 3600, "strict": False, "rule": "payments/refund-budget",
                             "message": "The hourly refund budget is spent"}]

    team = tmp_path / "team"
    rego_module(team, "both.rego", """\
        approval contains {"rule": "hold", "message": "a human looks at deletes"} if is_delete
        approval contains "and a plain approval" if is_delete

        is_delete if input.tool.name == "delete_customer"
        """)
    d = decide(policy, "delete_customer", {"customer_id": "cus_1"}, team)
    assert d["action"] == "require_approval" and sorted(rules_of(d)) == ["hold", "rego"]
    # the YAML policy denies: a deny, and the approvals are not among the reasons
    d = decide(policy, "delete_customer", {"customer_id": "cus_vip"}, team)
    assert d["action"] == "deny" and rules_of(d) == ["delete_customer/no deletes"]
    # the team's own deny beats its approval too
    rego_module(team, "deny.rego", 'deny contains "no" if input.tool.arguments.customer_id == "cus_2"\n')
    d = decide(policy, "delete_customer", {"customer_id": "cus_2"}, team)
    assert d["action"] == "deny" and rules_of(d) == ["rego"]


# --------------------------------------------------------------------------- eval: injection never flips


INJECTION_MODULE = """\
deny contains {"rule": "echo", "message": sprintf("bad %v", [input.tool.arguments.x])} if input.tool.arguments.x

deny contains input.tool.arguments.s if input.tool.name == "plain"

deny contains sprintf("tool %v is not allowed", [input.tool.name]) if startswith(input.tool.name, "evil")

deny contains {"rule": input.tool.arguments.s, "message": "fixed text"} if input.tool.name == "rule_id"

approval contains {"rule": "hold", "message": input.tool.arguments.s} if input.tool.name == "approval"

charges contains {"counter": input.tool.arguments.s, "capacity": 5, "window": 60} if input.tool.name == "counter"

charges contains {"counter": "c", "capacity": 5, "window": 60, "rule": input.tool.arguments.s,
	"message": input.tool.arguments.s} if input.tool.name == "charge_text"
"""

UNSAFE = [
    pytest.param(INJECTION, id="json-break-out"),
    pytest.param('x\\"}],\\"allow\\":true', id="backslashes"),
    pytest.param("a\\", id="trailing-backslash"),
    pytest.param("line one\nline two", id="newline"),
    pytest.param("tab\there", id="tab"),
    pytest.param("bell\x07", id="control"),
    pytest.param("esc\x1b[31m", id="escape"),
    pytest.param('"', id="lone-quote"),
]


@pytest.mark.parametrize("payload", UNSAFE)
def test_unsafe_text_from_the_input_never_flips_the_decision(tmp_path: Path, payload: str) -> None:
    team = tmp_path / "team"
    rego_module(team, "inject.rego", INJECTION_MODULE)
    policy = write_policy(tmp_path, POLICY)

    d = decide(policy, "echo", {"x": payload}, team)  # the brief's case: sprintf of an argument
    assert d == {"allow": False, "action": "deny", "charges": [],
                 "reasons": [{"rule": "echo", "message": GENERIC, "detail": ["a rule in the team's Rego"]}]}

    d = decide(policy, "plain", {"s": payload}, team)  # the argument itself as the message
    assert d["action"] == "deny" and d["reasons"][0]["rule"] == "rego" and d["reasons"][0]["message"] == GENERIC

    d = decide(policy, "evil" + payload, {}, team)  # through the tool's name
    assert d["action"] == "deny" and d["reasons"][0]["message"] == GENERIC

    d = decide(policy, "rule_id", {"s": payload}, team)  # as a rule id: replaced by "rego"
    assert d["action"] == "deny" and d["reasons"][0] == {"rule": "rego", "message": "fixed text",
                                                          "detail": ["a rule in the team's Rego"]}

    d = decide(policy, "approval", {"s": payload}, team)  # an approval's text: still only held
    assert d["action"] == "require_approval" and d["reasons"][0] == {
        "rule": "hold", "message": GENERIC, "detail": ["a rule in the team's Rego"]}

    d = decide(policy, "counter", {"s": payload}, team)  # as a counter name: the charge is malformed
    assert d["action"] == "deny" and rules_of(d) == ["rego/invalid-charge"]

    d = decide(policy, "charge_text", {"s": payload}, team)  # a charge's rule and message: replaced
    assert d["allow"] is True
    assert d["charges"] == [{"counter": "c", "scope": "global", "cost": 1, "capacity": 5, "window": 60,
                             "strict": False, "rule": "rego", "message": GENERIC}]


def test_nul_in_the_input_is_denied_before_the_team_rego(tmp_path: Path) -> None:
    team = tmp_path / "team"
    rego_module(team, "inject.rego", INJECTION_MODULE)
    policy = write_policy(tmp_path, POLICY)
    for tool in ("echo", "charge_text", "approval"):
        d = decide(policy, tool, {"x": "nul\x00byte", "s": "nul\x00byte"}, team)
        assert d["action"] == "deny" and rules_of(d) == ["engine/input"], d


@pytest.mark.parametrize(("payload", "message"), [
    ("hello", "bad hello"),
    ("café ☕ 日本", "bad café ☕ 日本"),
    ("it's fine: {a} [b] <c> $d", "bad it's fine: {a} [b] <c> $d"),
    ("a" * 1500, "bad " + "a" * 996),  # messages are cut at 1,000 characters
])
def test_safe_text_from_the_input_is_shown(tmp_path: Path, payload: str, message: str) -> None:
    team = tmp_path / "team"
    rego_module(team, "inject.rego", INJECTION_MODULE)
    d = decide(write_policy(tmp_path, POLICY), "echo", {"x": payload}, team)
    assert d["reasons"] == [{"rule": "echo", "message": message, "detail": ["a rule in the team's Rego"]}]


# --------------------------------------------------------------------------- eval: malformed shapes


@pytest.mark.parametrize(("charge", "why"), [
    ('{"counter": "has spaces", "capacity": 5, "window": 60}', "counter with spaces"),
    ('{"counter": "", "capacity": 5, "window": 60}', "empty counter"),
    ('{"counter": "c", "capacity": 5, "window": 60, "scope": 5}', "scope not a string"),
    ('{"counter": "c", "capacity": 0, "window": 60}', "capacity 0"),
    ('{"counter": "c", "capacity": -3, "window": 60}', "negative capacity"),
    ('{"counter": "c", "capacity": "5", "window": 60}', "capacity a string"),
    ('{"counter": "c", "window": 60}', "no capacity"),
    ('{"counter": "c", "capacity": 5, "window": 0}', "window 0"),
    ('{"counter": "c", "capacity": 5}', "no window"),
    ('{"counter": "c", "capacity": 5, "window": 60, "cost": -1}', "negative cost"),
    ('{"counter": "c", "capacity": 5, "window": 60, "cost": "1"}', "cost a string"),
    ('{"counter": "c", "capacity": 5, "window": 60, "scope": "everyone"}', "unknown scope"),
    ('{"counter": "c", "capacity": 5, "window": 60, "rule": 7}', "rule not a string"),
    ('{"counter": "c", "capacity": 5, "window": 60, "message": ["x"]}', "message not a string"),
    ('{"counter": 5, "capacity": 5, "window": 60}', "counter a number"),
    ('"c"', "a string, not an object"),
])
def test_malformed_charge_denies(tmp_path: Path, charge: str, why: str) -> None:
    team = tmp_path / "team"
    rego_module(team, "charge.rego", f'charges contains {charge} if input.tool.name == "echo"\n\n'
                                     'charges contains {"counter": "fine", "capacity": 5, "window": 60} if true\n')
    policy = write_policy(tmp_path, POLICY)
    assert cli("check", policy, "--rego", team).returncode == 0  # shape is a call-time matter: it may read input
    d = decide(policy, "echo", {"text": "hi"}, team)
    assert d["action"] == "deny", why
    assert d["reasons"][0]["rule"] == "rego/invalid-charge" and d["reasons"][0]["message"] == MALFORMED_CHARGE
    # the good charge alone is fine for other tools
    d = decide(policy, "list_customers", {}, team)
    assert d["allow"] is True and [c["counter"] for c in d["charges"]] == ["fine"]


def test_cost_from_an_argument_is_checked_per_call(tmp_path: Path) -> None:
    """refunds.rego charges `cost: input.tool.arguments.amount` when amount <= 100. Whatever the agent sends,
    a refund is never allowed without its charge."""
    policy = write_policy(tmp_path, POLICY)
    # a negative amount would refill the bucket; a string would be no number at all: the charge is malformed
    for amount in (-5, "12"):
        assert rules_of(decide(policy, "create_refund", {"amount": amount}, PAYMENTS)) == ["rego/invalid-charge"]
    # (rego-cpp orders null, booleans and arrays above numbers: `amount > 100` holds, so they are held)
    for amount in (None, True, [1], {"a": 1}):
        d = decide(policy, "create_refund", {"amount": amount}, PAYMENTS)
        assert d["allow"] is False, (amount, d)
    d = decide(policy, "create_refund", {"amount": 0.5}, PAYMENTS)
    assert d["allow"] is True and d["charges"][0]["cost"] == 0.5
    d = decide(policy, "create_refund", {}, PAYMENTS)  # no amount: the rules do not apply, as Rego has it
    assert d["allow"] is True and d["charges"] == []


@pytest.mark.parametrize(("scope", "cost"), [(None, None), ("global", 2), ("principal", 0), ("session", 7.5)])
def test_valid_charges_are_normalised(tmp_path: Path, scope: str | None, cost: float | None) -> None:
    extra = (f', "scope": "{scope}"' if scope else "") + (f', "cost": {cost}' if cost is not None else "")
    team = tmp_path / "team"
    rego_module(team, "charge.rego",
                f'charges contains {{"counter": "team.calls", "capacity": 10, "window": 60{extra}}} if true\n')
    d = decide(write_policy(tmp_path, POLICY), "echo", {}, team)
    assert d["charges"] == [{"counter": "team.calls", "scope": scope or "global", "cost": 1 if cost is None else cost,
                             "capacity": 10, "window": 60, "strict": False, "rule": "rego",
                             "message": 'Limit "team.calls" reached'}]


@pytest.mark.parametrize(("body", "expected"), [
    ("deny := true\n", ["rego/malformed"]),
    ('deny := "no"\n', ["rego/malformed"]),
    ("approval := true\n", ["rego/malformed"]),
    ("charges := 5\n", ["rego/malformed"]),
    ('deny := {"a": 1}\n', ["rego/malformed", "rego/malformed"]),  # an object, and its value is no reason either
    ('deny contains 42 if input.tool.name == "echo"\n', ["rego/malformed"]),
    ('deny contains ["a", "list"] if input.tool.name == "echo"\n', ["rego/malformed"]),
    ('deny contains {"rule": "r"} if input.tool.name == "echo"\n', ["rego/malformed"]),
    ('deny contains {"message": "m"} if input.tool.name == "echo"\n', ["rego/malformed"]),
    ('deny contains {"rule": 5, "message": "m"} if input.tool.name == "echo"\n', ["rego/malformed"]),
    ('deny contains {"rule": "r", "message": false} if input.tool.name == "echo"\n', ["rego/malformed"]),
])
def test_malformed_shapes_deny(tmp_path: Path, body: str, expected: list[str]) -> None:
    team = tmp_path / "team"
    rego_module(team, "shape.rego", body)
    policy = write_policy(tmp_path, POLICY)
    assert cli("check", policy, "--rego", team).returncode == 0, body
    d = decide(policy, "echo", {"text": "hi"}, team)
    assert d["action"] == "deny", (body, d)
    assert rules_of(d) == expected, (body, d)
    assert all(r["message"].endswith("so the call is denied") for r in d["reasons"]), d


def test_arrays_are_accepted_as_well_as_sets(tmp_path: Path) -> None:
    team = tmp_path / "team"
    rego_module(team, "arr.rego", """\
        deny := ["array deny"] if input.tool.name == "echo"
        charges := [{"counter": "arr", "capacity": 3, "window": 60}] if input.tool.name == "list_customers"
        """)
    policy = write_policy(tmp_path, POLICY)
    assert decide(policy, "echo", {}, team)["reasons"][0]["message"] == "array deny"
    assert decide(policy, "list_customers", {}, team)["charges"][0]["counter"] == "arr"


def test_malformed_approval_denies(tmp_path: Path) -> None:
    team = tmp_path / "team"
    rego_module(team, "shape.rego", 'approval contains 42 if input.tool.name == "echo"\n')
    d = decide(write_policy(tmp_path, POLICY), "echo", {}, team)
    assert rules_of(d) == ["rego/malformed"]
    assert d["reasons"][0]["message"] == "A `approval` from the team's Rego is malformed, so the call is denied"
    assert d["action"] == "deny", d


# --------------------------------------------------------------------------- run: end to end


@pytest.mark.parametrize("mode", MODES)
async def test_run_denies_holds_and_allows(mode: str, tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    team = tmp_path / "team"
    rego_module(team, "inject.rego", INJECTION_MODULE)
    policy = write_policy(tmp_path, POLICY + f"rego: [{PAYMENTS}]\n")  # rego: list and --rego together
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), mode, env={"SPY_LOG": str(spy)},
                                  options=["--state", "memory", "--rego", str(team)]) as client:
            allowed(await client.call_tool("echo", {"text": "hello"}))

            r = await client.call_tool("create_refund", {"amount": 150})
            held_or_denied(r, "require_approval", "payments/big-refund")
            text = text_of(r)
            # the team's `approval` goes through the proxy's approval flow: an id a person can approve
            assert "is held for approval" in text and "Refunds over 100 need a human" in text, text
            assert r.meta["regoguard/decision"]["approval_id"] in text, text

            r = await client.call_tool("delete_customer", {"customer_id": "cus_test_1"})
            d = held_or_denied(r, "deny", "payments/no-test-customers")
            assert d["reason"] == "Test customers cannot be deleted here"
            assert "denied by policy rule 'payments/no-test-customers'" in text_of(r)

            # both deny: the agent is shown the YAML policy's reason
            r = await client.call_tool("delete_customer", {"customer_id": "cus_vip"})
            held_or_denied(r, "deny", "delete_customer/no deletes")

            # the brief's injection: denied with the generic text, never forwarded
            r = await client.call_tool("echo", {"x": INJECTION, "text": "smuggled"})
            d = held_or_denied(r, "deny", "echo")
            assert d["reason"] == GENERIC and INJECTION not in text_of(r)
            held_or_denied(await client.call_tool("counter", {"s": INJECTION}), "deny", "rego/invalid-charge")

            allowed(await client.call_tool("create_refund", {"amount": 40}))
            allowed(await client.call_tool("delete_customer", {"customer_id": "cus_1"}))

    assert spy_calls(spy) == [("echo", {"text": "hello"}), ("create_refund", {"amount": 40}),
                              ("delete_customer", {"customer_id": "cus_1"})]


async def test_run_custom_rate_limit(tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    team = tmp_path / "team"
    rego_module(team, "rate.rego", """\
        charges contains {"counter": "team.echo", "capacity": 2, "window": 60, "rule": "team/echo-rate",
            "message": "Two echoes a minute"} if input.tool.name == "echo"
        """)
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), "legacy", env={"SPY_LOG": str(spy)},
                                  options=["--state", "memory", "--rego", str(team)]) as client:
            for i in (1, 2):
                assert allowed(await client.call_tool("echo", {"text": str(i)}))["spy/seq"] == i
            r = await client.call_tool("echo", {"text": "3"})
            d = held_or_denied(r, "deny", "team/echo-rate")
            assert d["reason"].startswith("Two echoes a minute (team.echo: retry after "), d
            allowed(await client.call_tool("list_customers", {}))  # other tools are not charged
            held_or_denied(await client.call_tool("echo", {"text": "4"}), "deny", "team/echo-rate")
    assert spy_calls(spy) == [("echo", {"text": "1"}), ("echo", {"text": "2"}), ("list_customers", {})]


def state_tokens(state: Path) -> dict[str, float]:
    proc = cli("state", "show", "--state", state, "--json")
    assert proc.returncode == 0, proc.stderr
    return {k: v["tokens"] for k, v in json.loads(proc.stdout).items()}


async def test_run_spend_limit_from_an_argument(tmp_path: Path) -> None:
    """refund_budget: 100 an hour, each refund costs its amount (tests/rego/payments/refunds.rego)."""
    spy = tmp_path / "spy.jsonl"
    state = tmp_path / "state.db"
    policy = write_policy(tmp_path, POLICY)
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), "legacy", env={"SPY_LOG": str(spy)},
                                  options=["--state", str(state), "--rego", str(PAYMENTS)]) as client:
            allowed(await client.call_tool("create_refund", {"amount": 40}))
            allowed(await client.call_tool("create_refund", {"amount": 50}))
            r = await client.call_tool("create_refund", {"amount": 20})  # 110 > 100
            d = held_or_denied(r, "deny", "payments/refund-budget")
            assert d["reason"].startswith("The hourly refund budget is spent (refund_budget: retry after"), d
            # a negative amount would refill the bucket: the charge is malformed, the call denied
            r = await client.call_tool("create_refund", {"amount": -1000})
            held_or_denied(r, "deny", "rego/invalid-charge")
            held_or_denied(await client.call_tool("create_refund", {"amount": 20}), "deny", "payments/refund-budget")
            allowed(await client.call_tool("create_refund", {"amount": 10}))  # exactly what is left
            held_or_denied(await client.call_tool("create_refund", {"amount": 1}), "deny", "payments/refund-budget")
            # above the threshold: held for approval, so no charge is even tried
            held_or_denied(await client.call_tool("create_refund", {"amount": 500}), "require_approval",
                           "payments/big-refund")
    assert spy_calls(spy) == [("create_refund", {"amount": 40}), ("create_refund", {"amount": 50}),
                              ("create_refund", {"amount": 10})]
    tokens = state_tokens(state)
    assert list(tokens) == ["global//spy/refund_budget"]
    assert tokens["global//spy/refund_budget"] < 1  # refills at 100/hour: a few seconds give back well under 1


ALL_OR_NONE_POLICY = """\
default: allow
tools:
  echo:
    rules:
      - name: three a minute
        rate_limit: 3/minute
"""


async def test_run_team_charge_fails_so_the_policy_limit_is_not_taken(tmp_path: Path) -> None:
    """A tagged echo also charges the team's "tagged" counter (capacity 1). Once it is spent, tagged echoes
    are denied by the team's rule; if those denials had taken the policy's 3/minute, the untagged echoes
    after them would be denied early."""
    spy = tmp_path / "spy.jsonl"
    state = tmp_path / "state.db"
    team = tmp_path / "team"
    rego_module(team, "tag.rego", """\
        charges contains {"counter": "tagged", "capacity": 1, "window": 3600, "rule": "team/tagged"} if {
            input.tool.arguments.tag
        }
        """)
    policy = write_policy(tmp_path, ALL_OR_NONE_POLICY)
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), "legacy", env={"SPY_LOG": str(spy)},
                                  options=["--state", str(state), "--rego", str(team)]) as client:
            allowed(await client.call_tool("echo", {"text": "t1", "tag": True}))  # 3/minute: 2 left; tagged: 0
            for i in range(4):
                held_or_denied(await client.call_tool("echo", {"text": f"t{i + 2}", "tag": True}), "deny",
                               "team/tagged")
            tokens = state_tokens(state)
            assert 2 <= tokens["global//spy/echo._rate_minute"] < 2.5, tokens  # untouched by the denials
            allowed(await client.call_tool("echo", {"text": "u1"}))
            allowed(await client.call_tool("echo", {"text": "u2"}))
            r = await client.call_tool("echo", {"text": "u3"})
            held_or_denied(r, "deny", "echo/three a minute")
    assert [a["text"] for _, a in spy_calls(spy)] == ["t1", "u1", "u2"]


async def test_run_policy_limit_fails_so_the_team_charge_is_not_taken(tmp_path: Path) -> None:
    """The reverse: the policy allows 1 echo a minute; every echo and every list also charge the team's
    "shared" counter (capacity 3). Echoes denied by the policy's limit must leave "shared" alone: after one
    allowed echo and three denied ones, two lists still fit and the third does not."""
    spy = tmp_path / "spy.jsonl"
    state = tmp_path / "state.db"
    team = tmp_path / "team"
    rego_module(team, "shared.rego", """\
        charges contains {"counter": "shared", "capacity": 3, "window": 3600, "rule": "team/shared"} if {
            input.tool.name in {"echo", "list_customers"}
        }
        """)
    policy = write_policy(tmp_path, ALL_OR_NONE_POLICY.replace("3/minute", "1/minute").replace("three", "one"))
    with anyio.fail_after(TIMEOUT):
        async with proxied_client(policy, python_server("spy"), "legacy", env={"SPY_LOG": str(spy)},
                                  options=["--state", str(state), "--rego", str(team)]) as client:
            allowed(await client.call_tool("echo", {"text": "e1"}))  # one a minute: 0 left; shared: 2 left
            for i in range(3):
                held_or_denied(await client.call_tool("echo", {"text": f"e{i + 2}"}), "deny", "echo/one a minute")
            allowed(await client.call_tool("list_customers", {"limit": 1}))
            allowed(await client.call_tool("list_customers", {"limit": 2}))
            held_or_denied(await client.call_tool("list_customers", {"limit": 3}), "deny", "team/shared")
    assert spy_calls(spy) == [("echo", {"text": "e1"}), ("list_customers", {"limit": 1}),
                              ("list_customers", {"limit": 2})]


async def test_run_scopes_across_two_sessions(tmp_path: Path) -> None:
    """Two proxy processes sharing one SQLite store: a global budget carries over, a session one does not,
    a principal one follows --principal."""
    spy = tmp_path / "spy.jsonl"
    state = tmp_path / "state.db"
    team = tmp_path / "team"
    rego_module(team, "scopes.rego", """\
        charges contains {"counter": "g", "capacity": 3, "window": 3600, "rule": "team/global"} if {
            input.tool.name == "echo"
        }

        charges contains {"counter": "s", "capacity": 1, "window": 3600, "scope": "session",
            "rule": "team/session"} if input.tool.name == "list_customers"

        charges contains {"counter": "p", "capacity": 1, "window": 3600, "scope": "principal",
            "rule": "team/principal"} if input.tool.name == "create_refund"
        """)
    policy = write_policy(tmp_path, POLICY)

    async def session(principal: str) -> list[str]:
        outcomes: list[str] = []
        async with proxied_client(policy, python_server("spy"), "legacy", env={"SPY_LOG": str(spy)},
                                  options=["--state", str(state), "--rego", str(team), "--principal", principal]) as c:
            for tool, args in [("echo", {"text": principal}), ("echo", {"text": principal}),
                               ("list_customers", {}), ("list_customers", {}),
                               ("create_refund", {"amount": 1})]:
                r = await c.call_tool(tool, args)
                outcomes.append("ok" if r.is_error is not True else r.meta["regoguard/decision"]["rule"])  # type: ignore[index]
        return outcomes

    with anyio.fail_after(TIMEOUT):
        assert await session("alice") == ["ok", "ok", "ok", "team/session", "ok"]
        # global "g" has 1 left; the new session has a fresh "s"; alice's "p" is spent, bob's is not
        assert await session("bob") == ["ok", "team/global", "ok", "team/session", "ok"]
    tokens = state_tokens(state)
    assert set(tokens) == {"global//spy/g", "principal/alice/spy/p", "principal/bob/spy/p"}, tokens


def revisions(log: Path) -> list[str]:
    """The revision of each call's decision event (a held call's approval events carry it too)."""
    return [event["revision"] for event in read_jsonl(log) if event["path"] == "regoguard/lib/decision"]


async def test_decision_log_revision_follows_the_rego_modules(tmp_path: Path) -> None:
    """Same YAML, three runs: no team Rego, module v1, module v2 (one word changed), then v1 again. The
    revision in the log differs exactly when the policy-with-modules differs."""
    spy = tmp_path / "spy.jsonl"
    team = tmp_path / "team"
    policy = write_policy(tmp_path, POLICY)

    async def run(rego: bool, log: Path) -> None:
        options = ["--state", "memory", "--decision-log", str(log)] + (["--rego", str(team)] if rego else [])
        async with proxied_client(policy, python_server("spy"), "legacy", env={"SPY_LOG": str(spy)},
                                  options=options) as client:
            allowed(await client.call_tool("echo", {"text": "a"}))
            r = await client.call_tool("list_customers", {})
            if rego:
                held_or_denied(r, "require_approval", "team/lists")
            else:
                allowed(r)

    module = 'approval contains {"rule": "team/lists", "message": "WORD"} if input.tool.name == "list_customers"\n'
    with anyio.fail_after(TIMEOUT + 10):
        await run(False, tmp_path / "none.jsonl")
        rego_module(team, "t.rego", module.replace("WORD", "lists need a human"))
        await run(True, tmp_path / "v1.jsonl")
        rego_module(team, "t.rego", module.replace("WORD", "lists need a person"))
        await run(True, tmp_path / "v2.jsonl")
        rego_module(team, "t.rego", module.replace("WORD", "lists need a human"))
        await run(True, tmp_path / "v1-again.jsonl")

    logs = {name: revisions(tmp_path / f"{name}.jsonl") for name in ("none", "v1", "v2", "v1-again")}
    for name, revs in logs.items():
        assert len(revs) == 2 and revs[0] == revs[1], (name, revs)
    none, v1, v2, v1_again = (logs[n][0] for n in ("none", "v1", "v2", "v1-again"))
    assert len({none, v1, v2}) == 3, logs
    assert v1_again == v1, logs
    events = read_jsonl(tmp_path / "v1.jsonl")
    held = [e for e in events if e["path"] == "regoguard/lib/decision"][1]
    assert held["outcome"] == "held" and held["result"]["action"] == "require_approval", held
    asked = [e for e in events if e["path"] == "regoguard/approval"]
    assert [e["outcome"] for e in asked] == ["approval_requested"], asked
    assert held["result"]["reasons"][0]["rule"] == "team/lists"


def test_run_refuses_a_bad_module_before_starting_the_server(tmp_path: Path) -> None:
    spy = tmp_path / "spy.jsonl"
    team = tmp_path / "team"
    team.mkdir()
    (team / "bad.rego").write_text(BAD_SYNTAX, encoding="utf-8")
    policy = write_policy(tmp_path, POLICY)
    proc = subprocess.run([sys.executable, "-m", "regoguard", "run", "-c", str(policy), "--rego", str(team),
                           "--", *python_server("spy")], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, "SPY_LOG": str(spy)}, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""  # stdout is the client's JSON-RPC stream: nothing else ever goes there
    assert f"{team / 'bad.rego'}:5:19: error:" in proc.stderr
    assert not spy.exists()
