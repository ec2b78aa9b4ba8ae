"""Both policy dialects end to end: Intercept (Stripe, GitHub) and the MCP policy catalogue (Looking Glass).

Covers which rules apply to a tool (exact key, glob, ``"*"``, ``default: deny``, ``hide``), the order and
messages of denials, and the charges an allowed call would take.
"""

from __future__ import annotations

import pytest

import regoguard
from helpers_policy import compiled_for, decide, dedent, load_errors
from regoguard import Charge

# --- Intercept: Stripe --------------------------------------------------------------------------------

STRIPE = dedent(
    """
    version: "1"
    description: Stripe MCP server - payment guardrails
    default: allow
    hide: [delete_customer]
    tools:
      create_charge:
        rules:
          - name: max_amount
            conditions:
              - {path: args.amount, op: lte, value: 50000}
            on_deny: "Charges over $500.00 need a human"
          - name: allowed_currency
            conditions:
              - {path: args.currency, op: in, value: [usd, eur]}
            on_deny: "Only USD and EUR charges are allowed"
          - name: daily_spend
            conditions:
              - {path: state.create_charge.daily_spend, op: lte, value: 1000000}
            state:
              counter: daily_spend
              window: day
              increment_from: args.amount
            on_deny: "Daily spend limit of $10,000 reached"
          - name: charge_rate
            rate_limit: 10/minute
      create_refund:
        rules:
          - name: needs_reason
            conditions:
              - {path: args.reason, op: exists, value: true}
          - rate_limit: 5/hour
      list_customers:
        rules: []
      "*":
        rules:
          - name: global_rate
            rate_limit: 100/minute
    """
)

GLOBAL_RATE = Charge("_global._rate_minute", "global", 1, 100, 60, False, "*/global_rate",
                     "Rate limit of 100 calls per minute reached. Try again later.")


def test_stripe_charge_within_limits_is_allowed_with_every_charge_in_order():
    d = decide(STRIPE, "create_charge", {"amount": 1200, "currency": "usd"})
    assert d.allow
    assert d.action == "allow"
    assert d.charges == (
        Charge("create_charge.daily_spend", "global", 1200, 1000000, 86400, False, "create_charge/daily_spend",
               "Daily spend limit of $10,000 reached"),
        Charge("create_charge._rate_minute", "global", 1, 10, 60, False, "create_charge/charge_rate",
               "Rate limit of 10 calls per minute reached. Try again later."),
        GLOBAL_RATE,
    )


def test_stripe_over_the_maximum_shows_its_own_message():
    d = decide(STRIPE, "create_charge", {"amount": 50001, "currency": "usd"})
    assert not d.allow
    assert d.action == "deny"
    assert d.rule == "create_charge/max_amount"
    assert d.message == "Charges over $500.00 need a human"
    assert d.charges == ()


def test_stripe_first_failing_rule_message_is_shown_and_all_are_listed():
    d = decide(STRIPE, "create_charge", {"amount": 99999, "currency": "gbp"})
    assert [r.rule for r in d.reasons] == ["create_charge/max_amount", "create_charge/allowed_currency"]
    assert d.message == "Charges over $500.00 need a human"
    d = decide(STRIPE, "create_charge", {"amount": 100, "currency": "gbp"})
    assert [r.rule for r in d.reasons] == ["create_charge/allowed_currency"]
    assert d.message == "Only USD and EUR charges are allowed"


@pytest.mark.parametrize(
    ("amount", "rules"),
    [
        (-5, ["create_charge/daily_spend"]),  # passes lte 50000, but a negative cost is refused
        (None, ["create_charge/max_amount", "create_charge/daily_spend"]),
        ("100", ["create_charge/max_amount", "create_charge/daily_spend"]),  # a string is not a number
        ("missing", ["create_charge/max_amount", "create_charge/daily_spend"]),
        (True, ["create_charge/max_amount", "create_charge/daily_spend"]),
    ],
)
def test_stripe_bad_amount_fails_the_increment_from_rule(amount, rules):
    args = {"currency": "usd"} if amount == "missing" else {"amount": amount, "currency": "usd"}
    d = decide(STRIPE, "create_charge", args)
    assert not d.allow
    assert [r.rule for r in d.reasons] == rules
    assert d.charges == ()


def test_stripe_zero_and_fractional_amounts_cost_what_they_say():
    d = decide(STRIPE, "create_charge", {"amount": 0, "currency": "eur"})
    assert d.allow
    assert d.charges[0].cost == 0
    d = decide(STRIPE, "create_charge", {"amount": 12.5, "currency": "eur"})
    assert d.allow
    assert d.charges[0].cost == 12.5


def test_stripe_hidden_tool_is_denied():
    d = decide(STRIPE, "delete_customer", {"id": "cus_1"})
    assert not d.allow
    assert d.rule == "hide"
    assert d.message == 'Tool "delete_customer" is hidden by policy'


def test_stripe_unnamed_rule_id_and_default_messages():
    d = decide(STRIPE, "create_refund", {"charge": "ch_1"})
    assert d.rule == "create_refund/needs_reason"
    assert d.message == (
        'Policy rule "create_refund/needs_reason" denied the call: args.reason exists true does not hold'
    )
    d = decide(STRIPE, "create_refund", {"charge": "ch_1", "reason": "duplicate"})
    assert d.allow
    assert [c.rule for c in d.charges] == ["create_refund/rules[1]", "*/global_rate"]
    assert d.charges[0].counter == "create_refund._rate_hour"
    assert d.charges[0].window == 3600
    assert d.charges[0].capacity == 5


def test_stripe_empty_rules_and_unlisted_tools_get_only_the_star_rules():
    for tool in ("list_customers", "retrieve_balance"):
        d = decide(STRIPE, tool, {})
        assert d.allow
        assert d.charges == (GLOBAL_RATE,)


# --- Intercept: GitHub --------------------------------------------------------------------------------

GITHUB = dedent(
    """
    version: "1"
    description: GitHub MCP server - read widely, write carefully
    default: deny
    hide: [delete_repository]
    tools:
      get_file_contents:
        rules: []
      "search_*":
        rules: []
      "list_*":
        rules:
          - action: deny
            on_deny: "listing is not allowed"
      list_commits:
        rules: []
      push_files:
        rules:
          - name: protected_branch
            conditions:
              - {path: args.branch, op: not_in, value: [main, master]}
            on_deny: "Pushes to main need a pull request"
          - name: no_workflows
            conditions:
              - {path: args.files.0.path, op: not_regex, value: "^\\\\.github/workflows/"}
            on_deny: "Workflow files are off limits"
      create_issue:
        rules:
          - name: title_length
            conditions:
              - {path: args.title, op: len_lte, value: 80}
          - rate_limit: 5/hour
      "*":
        rules:
          - name: acme_only
            conditions:
              - {path: args.owner, op: eq, value: acme}
            on_deny: "Only acme repositories"
    """
)


def test_github_listed_tool_with_no_rules_runs_the_star_rules():
    assert decide(GITHUB, "get_file_contents", {"owner": "acme", "repo": "x", "path": "README.md"}).allow
    d = decide(GITHUB, "get_file_contents", {"owner": "evil", "repo": "x"})
    assert not d.allow
    assert d.rule == "*/acme_only"
    assert d.message == "Only acme repositories"


def test_github_default_deny_and_star_rules_do_not_rescue_an_unlisted_tool():
    d = decide(GITHUB, "merge_pull_request", {"owner": "acme"})
    assert not d.allow
    assert [r.rule for r in d.reasons] == ["default"]
    assert d.message == 'Tool "merge_pull_request" is not allowed by policy (default: deny)'


def test_github_hidden_tool():
    d = decide(GITHUB, "delete_repository", {"owner": "acme"})
    assert [r.rule for r in d.reasons] == ["hide"]


def test_github_glob_key_counts_as_listed_under_default_deny():
    assert decide(GITHUB, "search_code", {"owner": "acme", "q": "x"}).allow
    assert decide(GITHUB, "search_issues", {"owner": "acme"}).allow
    assert decide(GITHUB, "search_", {"owner": "acme"}).allow  # * matches the empty run
    d = decide(GITHUB, "search_code", {"owner": "other"})
    assert d.rule == "*/acme_only"
    # a glob matches the whole name
    assert decide(GITHUB, "xsearch_code", {"owner": "acme"}).rule == "default"


def test_github_exact_key_wins_over_a_glob():
    d = decide(GITHUB, "list_branches", {"owner": "acme"})
    assert not d.allow
    assert d.rule == "list_*/rules[0]"
    assert d.message == "listing is not allowed"
    assert decide(GITHUB, "list_commits", {"owner": "acme"}).allow


def test_github_tool_rules_run_before_star_rules():
    d = decide(GITHUB, "push_files", {"owner": "evil", "branch": "main", "files": [{"path": "a.txt"}]})
    assert [r.rule for r in d.reasons] == ["push_files/protected_branch", "*/acme_only"]
    assert d.message == "Pushes to main need a pull request"


@pytest.mark.parametrize(
    ("args", "rule"),
    [
        ({"owner": "acme", "branch": "feature", "files": [{"path": "src/a.py"}]}, None),
        ({"owner": "acme", "branch": "master", "files": [{"path": "src/a.py"}]}, "push_files/protected_branch"),
        ({"owner": "acme", "files": [{"path": "src/a.py"}]}, "push_files/protected_branch"),  # not_in on missing
        ({"owner": "acme", "branch": "f", "files": [{"path": ".github/workflows/ci.yml"}]}, "push_files/no_workflows"),
        ({"owner": "acme", "branch": "f", "files": [{"path": "x/.github/workflows/ci.yml"}]}, None),
        ({"owner": "acme", "branch": "f", "files": {"0": {"path": ".github/workflows/ci.yml"}}},
         "push_files/no_workflows"),
    ],
)
def test_github_push_files(args, rule):
    d = decide(GITHUB, "push_files", args)
    assert d.allow is (rule is None)
    assert d.rule == rule


def test_github_rate_limited_tool_with_two_rules():
    d = decide(GITHUB, "create_issue", {"owner": "acme", "title": "x" * 80})
    assert d.allow
    assert [(c.counter, c.capacity, c.window, c.scope) for c in d.charges] == [
        ("create_issue._rate_hour", 5, 3600, "global")
    ]
    d = decide(GITHUB, "create_issue", {"owner": "acme", "title": "x" * 81})
    assert d.rule == "create_issue/title_length"
    assert d.charges == ()


# --- keys: globs, hide, default -----------------------------------------------------------------------

GLOBS = dedent(
    """
    tools:
      "browser_*":
        rules:
          - {action: deny, on_deny: first glob}
      "browser_o*":
        rules:
          - {action: deny, on_deny: second glob}
      "browser_close":
        rules: []
      "*_admin":
        rules:
          - {action: deny, on_deny: suffix}
    """
)


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ("browser_open", "first glob"),  # both match: the first in file order wins
        ("browser_close", None),  # the exact key wins
        ("browser_", "first glob"),
        ("Browser_open", None),  # case matters; unlisted under default allow
        ("user_admin", "suffix"),
        ("_admin", "suffix"),  # * matches the empty string
        ("user_admin2", None),  # a glob matches the whole name
        ("café_admin", "suffix"),  # * spans non-ASCII text in both engines
    ],
)
def test_glob_keys(tool, message):
    d = decide(GLOBS, tool, {})
    assert d.message == message
    assert d.allow is (message is None)


def test_hide_star_hides_every_tool_even_listed_ones():
    yaml_text = "hide: ['*']\ntools:\n  read_file:\n    rules: []\n"
    for tool in ("read_file", "anything"):
        d = decide(yaml_text, tool, {})
        assert [r.rule for r in d.reasons] == ["hide"]


def test_hide_beats_a_tools_entry_and_needs_no_tools_key():
    yaml_text = "hide: [a]\ntools:\n  a:\n    rules: []\n"
    assert decide(yaml_text, "a", {}).rule == "hide"
    assert decide("hide: [a]\n", "a", {}).rule == "hide"
    assert decide("hide: [a]\n", "b", {}).allow


def test_hidden_tool_is_denied_even_under_star_rules_that_pass():
    yaml_text = "hide: [a]\ntools:\n  '*':\n    rules:\n      - {rate_limit: 5/minute}\n"
    d = decide(yaml_text, "a", {})
    assert [r.rule for r in d.reasons] == ["hide"]
    assert d.charges == ()


@pytest.mark.parametrize("rules_text", ["rules: []", "rules:"])
def test_empty_rules_allow(rules_text):
    yaml_text = f"default: deny\ntools:\n  t:\n    {rules_text}\n"
    d = decide(yaml_text, "t", {"anything": 1})
    assert d.allow
    assert d.charges == ()
    assert decide(yaml_text, "u", {}).rule == "default"


def test_default_deny_with_star_deny_rule_lists_only_default():
    yaml_text = "default: deny\ntools:\n  ok:\n    rules: []\n  '*':\n    rules:\n      - {action: deny}\n"
    assert [r.rule for r in decide(yaml_text, "nope", {}).reasons] == ["default"]
    d = decide(yaml_text, "ok", {})
    assert [r.rule for r in d.reasons] == ["*/rules[0]"]
    assert d.message == 'Denied by policy rule "*/rules[0]"'


def test_non_ascii_tool_names_are_matched():
    yaml_text = dedent(
        """
        hide: [supprimer_café]
        tools:
          café:
            rules:
              - action: deny
                on_deny: pas de café
        """
    )
    assert decide(yaml_text, "supprimer_café", {}).rule == "hide"
    d = decide(yaml_text, "café", {})
    assert d.rule == "café/rules[0]"
    assert d.message == "pas de café"


def test_tool_keys_take_only_star_globs():
    # `?` and `[...]` would match one byte in the embedded engine but one character in OPA, so a key like
    # `file_?` would not cover `file_é` here: such keys are refused rather than silently weaker.
    for key in ("file_?", "[ab]x"):
        errors = load_errors(f"tools:\n  '{key}':\n    rules:\n      - {{action: deny}}\n")
        assert [e.message for e in errors] == [f"tool key {key!r}: only `*` globs are supported in tool names"]


# --- the catalogue: Looking Glass ---------------------------------------------------------------------

LOOKING_GLASS = dedent(
    """
    tools:
      session_start:
        rules:
          - action: allow
            rate_limit:
              max: 10
              window: 60
            validate:
              required_args: true
      session_list:
        rules:
          - action: allow
      page_eval_js:
        rules:
          - action: deny
            reason: "Running arbitrary JavaScript is not allowed"
      page_click:
        rules:
          - validate: {required_args: true}
            reason: "page_click needs a session and a selector"
    """
)

SESSION_START_SCHEMA = {
    "type": "object",
    "properties": {"url": {"type": "string"}, "viewport": {"type": "object"}},
    "required": ["url"],
}


def test_looking_glass_policy_loads_with_a_session_scope_warning():
    policy = regoguard.load_policy_text(LOOKING_GLASS, "looking-glass.yaml")
    assert len(policy.warnings) == 1
    assert "session_start/rules[0]" in policy.warnings[0]
    assert "session-scoped" in policy.warnings[0]


def test_looking_glass_session_start_allowed_with_a_session_scoped_charge():
    d = decide(LOOKING_GLASS, "session_start", {"url": "https://example.com/"}, SESSION_START_SCHEMA)
    assert d.allow
    assert d.charges == (
        Charge("session_start._rate_60s", "session", 1, 10, 60, False, "session_start/rules[0]",
               "Rate limit of 10 calls per minute reached. Try again later."),
    )


def test_looking_glass_missing_required_argument_is_denied():
    d = decide(LOOKING_GLASS, "session_start", {"viewport": {"width": 800}}, SESSION_START_SCHEMA)
    assert not d.allow
    assert d.rule == "session_start/rules[0]"
    assert d.message == 'Policy rule "session_start/rules[0]" denied the call: missing required argument "url"'
    assert d.charges == ()


def test_looking_glass_without_a_schema_the_validate_rule_denies():
    d = decide(LOOKING_GLASS, "session_start", {"url": "https://example.com/"})
    assert not d.allow
    assert d.rule == "session_start/rules[0]"
    assert "inputSchema is unknown" in d.message


@pytest.mark.parametrize(
    ("schema", "allow"),
    [
        ({"type": "object"}, True),  # no `required`: nothing is required
        ({"required": []}, True),
        ({"required": ["url", "viewport"]}, False),
        ({"required": "url"}, False),  # malformed
        ({"required": [1]}, False),
        ({"required": None}, False),
    ],
)
def test_looking_glass_schema_shapes(schema, allow):
    d = decide(LOOKING_GLASS, "session_start", {"url": "u"}, schema, fresh=True)
    assert d.allow is allow, d
    if not allow:
        assert d.rule == "session_start/rules[0]"


def test_looking_glass_required_argument_present_but_null_counts_as_present():
    # validate checks presence of the key; a JSON null is present
    d = decide(LOOKING_GLASS, "session_start", {"url": None}, SESSION_START_SCHEMA)
    assert d.allow


def test_looking_glass_bare_allow_and_deny_with_reason():
    d = decide(LOOKING_GLASS, "session_list", {})
    assert d.allow
    assert d.charges == ()
    d = decide(LOOKING_GLASS, "page_eval_js", {"session_id": "s", "script": "1"})
    assert not d.allow
    assert d.rule == "page_eval_js/rules[0]"
    assert d.message == "Running arbitrary JavaScript is not allowed"
    # an unlisted tool under default allow
    assert decide(LOOKING_GLASS, "page_screenshot", {"session_id": "s"}).allow


def test_looking_glass_validate_rule_reason_replaces_the_default_message():
    schema = {"required": ["session_id", "selector"]}
    d = decide(LOOKING_GLASS, "page_click", {"session_id": "s"}, schema)
    assert d.rule == "page_click/rules[0]"
    assert d.message == "page_click needs a session and a selector"
    assert decide(LOOKING_GLASS, "page_click", {"session_id": "s", "selector": "#a"}, schema).allow


def test_catalogue_rate_limit_scope_and_window_words():
    yaml_text = dedent(
        """
        tools:
          a:
            rules:
              - rate_limit: {max: 3, window: hour}
                scope: principal
          b:
            rules:
              - rate_limit: {max: 2, window: 45}
                scope: global
        """
    )
    (ca,) = decide(yaml_text, "a", {}).charges
    assert (ca.counter, ca.scope, ca.capacity, ca.window) == ("a._rate_3600s", "principal", 3, 3600)
    assert ca.message == "Rate limit of 3 calls per hour reached. Try again later."
    (cb,) = decide(yaml_text, "b", {}).charges
    assert (cb.counter, cb.scope, cb.capacity, cb.window) == ("b._rate_45s", "global", 2, 45)
    assert cb.message == "Rate limit of 2 calls per 45 seconds reached. Try again later."


# --- charges: state counters --------------------------------------------------------------------------

COUNTERS = dedent(
    """
    tools:
      transfer:
        rules:
          - name: hourly
            state: {counter: moved, window: hour, increment_from: args.payment.amount}
            conditions:
              - {path: state.transfer.moved, op: lt, value: 5000}
            scope: principal
          - name: calls
            state: {counter: calls, window: minute, increment: 2}
            conditions:
              - {path: state.transfer.calls, op: lte, value: 20}
      "*":
        rules:
          - name: everything
            state: {counter: all, window: day}
            conditions:
              - {path: state._global.all, op: lte, value: 1000}
    """
)


def test_state_counters_charges():
    d = decide(COUNTERS, "transfer", {"payment": {"amount": 250}})
    assert d.allow
    assert d.charges == (
        Charge("transfer.moved", "principal", 250, 5000, 3600, True, "transfer/hourly",
               "Limit of 5000 per hour on transfer.moved reached. Try again later."),
        Charge("transfer.calls", "global", 2, 20, 60, False, "transfer/calls",
               "Limit of 20 per minute on transfer.calls reached. Try again later."),
        Charge("_global.all", "global", 1, 1000, 86400, False, "*/everything",
               "Limit of 1000 per day on _global.all reached. Try again later."),
    )


@pytest.mark.parametrize("payment", [{"amount": -1}, {"amount": "250"}, {}, {"amount": None}, "250", None])
def test_state_counter_with_bad_cost_is_denied_by_its_rule(payment):
    d = decide(COUNTERS, "transfer", {"payment": payment})
    assert not d.allow
    assert [r.rule for r in d.reasons] == ["transfer/hourly"]
    assert d.message.startswith(
        'Policy rule "transfer/hourly" denied the call: args.payment.amount must be a non-negative number'
    )
    assert d.charges == ()


def test_compiled_reads_cover_conditions_and_cost_paths():
    c = compiled_for(COUNTERS)
    assert c.reads["transfer"].args == frozenset({"payment"})
    assert not c.reads["transfer"].schema
    c = compiled_for(LOOKING_GLASS)
    assert c.reads["session_start"].schema
    assert c.reads["session_start"].args == frozenset()
