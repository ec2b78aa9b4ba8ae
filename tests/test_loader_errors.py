"""Every validation error the loader reports: where (file, line, column, key path), what, and the hint.

Each case is a whole policy file and the complete list of errors expected from it, so a case also checks
that nothing else is reported. Positions are given as a fragment of the YAML text the error must point
at (the start of a key, a value or a mapping), turned into line and column by :func:`at`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import regoguard
from helpers_policy import compiled_for, decide, dedent, load_errors
from regoguard import PolicyLoadError


def at(text: str, fragment: str) -> tuple[int, int]:
    """Line and column (1-based) of ``fragment`` in ``text``; ``fragment`` may end in ``@N`` for the Nth hit."""
    if fragment == "<end>":
        return text.count("\n") + 1, len(text) - (text.rfind("\n") + 1) + 1
    nth = 1
    if "@" in fragment and fragment.rsplit("@", 1)[1].isdigit():
        fragment, n = fragment.rsplit("@", 1)
        nth = int(n)
    index = -1
    for _ in range(nth):
        index = text.index(fragment, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


Expected = list[tuple[str, str, str, str | None]]


def assert_errors(yaml_text: str, expected: Expected, dedented: bool = False) -> None:
    """``expected``: (fragment pointed at, key_path, a fragment of the message, a fragment of the hint or None)."""
    text = yaml_text if dedented else dedent(yaml_text)
    errors = load_errors(text)
    want = [(*at(text, where), path) for where, path, _, _ in expected]
    got = [(e.line, e.column, e.key_path) for e in errors]
    assert got == want, "\n".join(map(str, errors))
    for e, (_, _, message, hint) in zip(errors, expected, strict=True):
        assert e.file == "policy.yaml"
        assert e.severity == "error"
        assert message in e.message, str(e)
        if hint is None:
            assert e.hint is None, str(e)
        else:
            assert e.hint is not None and hint in e.hint, str(e)


def wrap_condition(cond: str) -> str:
    """A policy whose only condition is ``cond`` (tools.t.rules[0].conditions[0])."""
    return f"tools:\n  t:\n    rules:\n      - conditions:\n          - {cond}\n"


COND = "tools.t.rules[0].conditions[0]"
NEEDS_SOMETHING = "an evaluate rule needs at least one condition (or a rate_limit or validate)"


# --- unknown and misspelt keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            """
            defualt: deny
            tools: {}
            """,
            [("defualt", "defualt", "unknown key 'defualt' in the policy", "did you mean 'default'?")],
        ),
        (
            """
            tool:
              t: {rules: []}
            """,
            [
                ("tool", "tool", "unknown key 'tool' in the policy", "did you mean 'tools'?"),
                # and without `tools:` the policy does nothing
                ("tool", "tools", "policy has no `tools:`", None),
            ],
        ),
        (
            """
            tools: {}
            colour: blue
            """,
            [("colour", "colour", "unknown key 'colour' in the policy", "allowed keys: version, description")],
        ),
        (
            """
            tools:
              t:
                rule: []
            """,
            [
                ("rule", "tools.t.rule", "unknown key 'rule' in tool 't'", "did you mean 'rules'?"),
                ("rule", "tools.t", "a tool needs `rules:` (use `rules: []`", None),
            ],
        ),
        (
            """
            tools:
              t:
                rules:
                  - conditons:
                      - {path: args.a, op: eq, value: 1}
            """,
            [
                ("conditons", "tools.t.rules[0].conditons", "unknown key 'conditons' in a rule",
                 "did you mean 'conditions'?"),
                ("conditons", "tools.t.rules[0]", NEEDS_SOMETHING, "use `action: deny` to block the tool"),
            ],
        ),
        (
            """
            tools:
              t:
                rules:
                  - action: deny
                    on_deney: no
            """,
            [("on_deney", "tools.t.rules[0].on_deney", "unknown key 'on_deney' in a rule", "did you mean 'on_deny'?")],
        ),
        (
            """
            tools:
              t:
                rules:
                  - conditions:
                      - {path: args.a, op: eq, valeu: 1}
            """,
            [
                ("{path", COND, "a condition needs `value`", None),
                ("valeu", COND + ".valeu", "unknown key 'valeu' in a condition", "did you mean 'value'?"),
            ],
        ),
        (
            """
            tools:
              t:
                rules:
                  - state: {counter: c, window: day, incremnt: 2}
                    conditions:
                      - {path: state.t.c, op: lte, value: 10}
            """,
            [("incremnt", "tools.t.rules[0].state.incremnt", "unknown key 'incremnt' in state",
              "did you mean 'increment'?")],
        ),
        (
            """
            tools:
              t:
                rules:
                  - rate_limit: {max: 5, window: 60, windw: 2}
                    scope: global
            """,
            [("windw", "tools.t.rules[0].rate_limit.windw", "unknown key 'windw' in rate_limit",
              "did you mean 'window'?")],
        ),
        (
            """
            tools:
              t:
                rules:
                  - validate: {required: true}
            """,
            [
                ("{required", "tools.t.rules[0].validate", "validate needs `required_args: true`", None),
                ("required:", "tools.t.rules[0].validate.required", "unknown key 'required' in validate",
                 "did you mean 'required_args'?"),
            ],
        ),
    ],
)
def test_unknown_keys_with_did_you_mean(yaml_text, expected):
    assert_errors(yaml_text, expected)


# --- wrong types and bad values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("- tools\n", [("-", "", "the policy must be a mapping, not a list", None)]),
        ("just text\n", [("just", "", "the policy must be a mapping, not a string", None)]),
        ('version: "2"\ntools: {}\n', [('"2"', "version", 'version must be "1"', None)]),
        ("version: 1.0\ntools: {}\n", [("1.0", "version", 'version must be "1"', None)]),
        ("description: [a]\ntools: {}\n", [("[a]", "description", "description must be a string, not a list", None)]),
        ("default: denny\ntools: {}\n",
         [("denny", "default", "default must be one of allow, deny; got 'denny'", "did you mean 'deny'?")]),
        ("default: true\ntools: {}\n", [("true", "default", "default must be a string, not a boolean", None)]),
        ("hide: delete_repo\n", [
            ("hide", "tools", "policy has no `tools:` (and hides nothing)", None),
            ("delete_repo", "hide", "hide must be a list of tool names, not a string", None),
        ]),
        ("hide: [a, 5, '', a]\ntools: {}\n", [
            ("5", "hide[1]", "a hidden tool name must be a string, not a number", None),
            ("''", "hide[2]", "a hidden tool name must not be empty", None),
            ("a]", "hide[3]", "duplicate entry 'a' in hide", None),
        ]),
        ("hide: ['*', 'delete_*', 'get?']\ntools: {}\n", [
            ("'delete_*'", "hide[1]", "hide entries are exact tool names (only \"*\" alone means every tool), so "
             "'delete_*' would hide none", "list the names to hide"),
            ("'get?'", "hide[2]", "so 'get?' would hide none", "list the names to hide"),
        ]),
        ("tools: [a, b]\n", [("[a", "tools", "tools must be a mapping, not a list", None)]),
        ("description: nothing\n", [("description", "tools", "policy has no `tools:` (and hides nothing)", None)]),
        ("tools:\n  '':\n    rules: []\n", [("''", 'tools[""]', "tool name must not be empty", None)]),
        ("tools:\n  t:\n", [("\n@2", "tools.t", "a tool needs `rules:` (use `rules: []`", None)]),
        ("tools:\n  t: [a]\n", [("[a]", "tools.t", "tool 't' must be a mapping, not a list", None)]),
        ("tools:\n  t: {}\n", [("{}", "tools.t", "a tool needs `rules:`", None)]),
        ("tools:\n  t:\n    rules: {a: 1}\n", [("{a", "tools.t.rules", "rules must be a list, not a mapping", None)]),
        ("tools:\n  t:\n    rules: [deny]\n", [("deny", "tools.t.rules[0]", "a rule must be a mapping, not a string",
                                                 None)]),
        ("tools:\n  'a[z-b]':\n    rules: []\n",
         [("'a[", 'tools["a[z-b]"]', "tool key 'a[z-b]': only `*` globs are supported in tool names",
           "write the names out, or use `*` (browser_*)")]),
        ("tools:\n  'file_?':\n    rules: []\n",
         [("'file_?'", 'tools["file_?"]', "tool key 'file_?': only `*` globs are supported in tool names",
           "write the names out, or use `*` (browser_*)")]),
        # rule fields
        ("tools:\n  t:\n    rules:\n      - {name: 5, action: deny}\n",
         [("5,", "tools.t.rules[0].name", "rule name must be a string, not a number", None)]),
        ("tools:\n  t:\n    rules:\n      - {name: '', action: deny}\n",
         [("'',", "tools.t.rules[0].name", "rule name must not be empty", None)]),
        ("tools:\n  t:\n    rules:\n      - {action: alow}\n", [
            ("alow", "tools.t.rules[0].action",
             "action must be one of evaluate, allow, deny, require_approval; got 'alow'",
             "did you mean 'allow'?"),
        ]),
        ("tools:\n  t:\n    rules:\n      - {action: deny, on_deny: [x]}\n",
         [("[x]", "tools.t.rules[0].on_deny", "on_deny must be a string, not a list", None)]),
        ("tools:\n  t:\n    rules:\n      - {action: deny, reason: ''}\n",
         [("''", "tools.t.rules[0].reason", "reason must not be empty", None)]),
        ("tools:\n  t:\n    rules:\n      - {rate_limit: 5/minute, scope: sesion}\n",
         [("sesion", "tools.t.rules[0].scope", "scope must be one of global, principal, session; got 'sesion'",
           "did you mean 'session'?")]),
        ("tools:\n  t:\n    rules:\n      - {action: deny, scope: global}\n",
         [("global", "tools.t.rules[0].scope", "scope applies to a rule's limit", None)]),
        ("tools:\n  t:\n    rules:\n      - {conditions: {path: args.a}}\n", [
            ("{path", "tools.t.rules[0].conditions", "conditions must be a list, not a mapping", None),
        ]),
        ("tools:\n  t:\n    rules:\n      - {validate: true}\n",
         [("true", "tools.t.rules[0].validate", "validate must be a mapping, not a boolean", None)]),
        ("tools:\n  t:\n    rules:\n      - {validate: {required_args: yes please}}\n",
         [("yes please", "tools.t.rules[0].validate.required_args",
           "required_args must be true or false, not a string", None)]),
    ],
)
def test_wrong_types_and_values(yaml_text, expected):
    assert_errors(yaml_text, expected, dedented=True)


# --- conditions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ("x", [("x\n", COND, "a condition must be a mapping, not a string", None)]),
        ("{op: eq, value: 1}", [("{op", COND, "a condition needs `path`", None)]),
        ("{path: args.a, value: 1}", [("{path", COND, "a condition needs `op`", None)]),
        ("{path: args.a, op: eq}", [("{path", COND, "a condition needs `value`", None)]),
        ("{path: 5, op: eq, value: 1}", [("5,", COND + ".path", "path must be a string, not a number", None)]),
        ("{path: args.a, op: regx, value: a}",
         [("regx", COND + ".op", "op must be one of eq, neq", "did you mean 'regex'?")]),
        ("{path: args.a, op: equals, value: 1}", [("equals", COND + ".op", "got 'equals'", None)]),
        ("{path: arg.a, op: eq, value: 1}", [("arg.a", COND + ".path", 'path must be "args.<key>[.<key>...]"', None)]),
        ("{path: args., op: eq, value: 1}", [("args.", COND + ".path", 'path must be "args.<key>', None)]),
        ("{path: args.a..b, op: eq, value: 1}", [("args.a", COND + ".path", 'path must be "args.<key>', None)]),
        ("{path: args.a.b.c.d.e.f.g.h.i, op: eq, value: 1}", [("args.a", COND + ".path", "(at most 8 keys)", None)]),
        ("{path: state.t, op: lte, value: 1}",
         [("state.t", COND + ".path", 'a state path is "state.<tool>.<counter>"', None)]),
        ("{path: state.t.c, op: lte, value: many}",
         [("many", COND + ".value", "a state condition needs a number, got 'many'", None)]),
        ("{path: state.t.c, op: lte, value: 0}", [("0}", COND + ".value", "a state limit must be positive", None)]),
        ("{path: args.a, op: in, value: usd}", [("usd", COND + ".value", "operator 'in' needs a list value", None)]),
        ("{path: args.a, op: not_in, value: {a: 1}}",
         [("{a", COND + ".value", "operator 'not_in' needs a list value, got a mapping", None)]),
        ('{path: args.a, op: lte, value: "5"}',
         [('"5"', COND + ".value", "operator 'lte' needs a number, got a string", "numbers must be unquoted")]),
        ("{path: args.a, op: gt, value: true}",
         [("true", COND + ".value", "operator 'gt' needs a number, got a boolean", None)]),
        ("{path: args.a, op: len_lte, value: -1}",
         [("-1", COND + ".value", "operator 'len_lte' needs a non-negative integer", None)]),
        ("{path: args.a, op: len_gte, value: 2.5}",
         [("2.5", COND + ".value", "operator 'len_gte' needs a non-negative integer", None)]),
        ("{path: args.a, op: exists, value: maybe}",
         [("maybe", COND + ".value", "operator 'exists' needs true or false, got a string", None)]),
        ("{path: args.a, op: starts_with, value: 5}",
         [("5}", COND + ".value", "operator 'starts_with' needs a string, got a number", None)]),
        ("{path: args.a, op: glob, value: [a]}", [("[a]", COND + ".value", "operator 'glob' needs a string", None)]),
        ("{path: args.a, op: glob, value: 'a[z-b]'}", [("'a[", COND + ".value", "bad glob 'a[z-b]'", None)]),
        ('{path: "args.a\\nt0_c0_0 if true\\n#", op: eq, value: 1}',
         [("\"args", COND + ".path", "holds a control character or line break", None)]),
        ("{path: principal.claims, op: eq, value: 1}",
         [("principal.claims", COND + ".path", "or one of principal.id, principal.claims.<claim>", None)]),
        ("{path: principal.name, op: eq, value: 1}",
         [("principal.name", COND + ".path", "got 'principal.name'", None)]),
        ("{path: session.client, op: eq, value: 1}", [("session.client", COND + ".path", "session.client.name", None)]),
        ("{path: server.name.x, op: eq, value: 1}", [("server.name.x", COND + ".path", "server.name;", None)]),
    ],
)
def test_condition_errors(cond, expected):
    assert_errors(wrap_condition(cond), expected, dedented=True)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ('tools:\n  "*":\n    visible_to: [{path: principal.id, op: eq, value: a}]\n    rules: []\n',
         [("[{path", 'tools["*"].visible_to', "`visible_to` belongs to a tool", "its own `visible_to`")]),
        ("tools:\n  x:\n    visible_to: [{path: args.a, op: eq, value: 1}]\n    rules: []\n",
         [("{path: args", "tools.x.visible_to[0].path", "visible_to reads who is calling", None)]),
        ("tools:\n  x:\n    visible_to: []\n    rules: []\n",
         [("[]", "tools.x.visible_to", "visible_to must be a non-empty list", None)]),
        ("tools:\n  x:\n    visible_to: [{path: server.name, op: eq, value: a}]\n    rules:\n"
         "      - name: visible_to\n        action: deny\n",
         [("name: visible_to", "tools.x.rules[0]", "is the id of this tool's `visible_to`", "rename")]),
    ],
)
def test_visible_to_errors(yaml_text, expected):
    assert_errors(yaml_text, expected)


# --- regular expressions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(a+)+", "nested unbounded quantifiers"),
        ("(a*)*b", "nested unbounded quantifiers"),
        ("(?:ab+)*", "nested unbounded quantifiers"),
        ("(a|b+)+", "nested unbounded quantifiers"),
        ("((a+)x)+", "nested unbounded quantifiers"),
        ("(a+){2,}", "nested unbounded quantifiers"),
        ("foo(?=bar)", "look-ahead"),
        ("foo(?!bar)", "look-ahead"),
        ("(?<=a)b", "look-behind"),
        ("(?<!a)b", "look-behind"),
        ("(a)\\1", "back-references"),
        ("\\Aabc", "not portable; use ^ and $"),
        ("abc\\z", "not portable; use ^ and $"),
        ("(?P<x>a)", "named groups"),
        ("(?<x>a)", "named groups"),
        ("a(?i)b", "inline flags"),
        ("(?s)a.b", "inline flags"),
        ("(?i)(?m)a", "inline flags"),
        ("a++", "possessive"),
        ("\\p{L}", "\\p{...}"),
        ("(unclosed", "invalid regular expression"),
        ("[z-a]", "invalid regular expression"),
        ("*a", "invalid regular expression"),
        ("DROP|(?:(?:z{100}){100}){100}", "multiply past 1000"),  # RE2 refuses it; std::regex cannot build it
        ("(a{40}){30}", "multiply past 1000"),
    ],
)
def test_bad_regex(pattern, why):
    for op in ("regex", "not_regex"):
        quoted = "'" + pattern.replace("'", "''") + "'"
        text = wrap_condition(f"{{path: args.a, op: {op}, value: {quoted}}}")
        (e,) = load_errors(text)
        assert (e.line, e.column, e.key_path) == (*at(text, quoted), COND + ".value")
        assert e.message.startswith(f"bad regex {pattern!r}: "), str(e)
        assert why in e.message, str(e)


@pytest.mark.parametrize(
    "pattern",
    ["(ab)+", "a{2,5}", "(a{1,3})+", "^[a-z]+$", "\\(a+\\)+", "[(]a+[)]+", "(?i)abc", "a+b+c*", "(foo|bar)",
     "\\d{3}-\\d{4}", "(?i)^[a-z]{2}$"],
)
def test_portable_regexes_are_accepted(pattern):
    quoted = "'" + pattern.replace("'", "''") + "'"
    regoguard.load_policy_text(wrap_condition(f"{{path: args.a, op: regex, value: {quoted}}}"))


def test_case_insensitive_regex_is_translated_and_matches_both_cases():
    yaml_text = wrap_condition("{path: args.a, op: regex, value: '(?i)^hello [a-c]+$'}")
    cond = compiled_for(yaml_text).settings["tools"]["t"]["rules"][0]["conditions"][0]
    assert "(?i)" not in cond["regex"]
    assert cond["regex"] == "^[hH][eE][lL][lL][oO] [a-cA-C]+$"
    for text in ("hello abc", "HELLO ABC", "HeLLo cBa"):
        assert decide(yaml_text, "t", {"a": text}).allow, text
    assert not decide(yaml_text, "t", {"a": "hello abd"}).allow


def test_case_insensitive_regex_keeps_quantifier_braces():
    yaml_text = wrap_condition("{path: args.a, op: regex, value: '(?i)^x{2}$'}")
    cond = compiled_for(yaml_text).settings["tools"]["t"]["rules"][0]["conditions"][0]
    assert cond["regex"] == "^[xX]{2}$"
    assert decide(yaml_text, "t", {"a": "xX"}).allow
    assert not decide(yaml_text, "t", {"a": "x"}).allow


# --- rate_limit, state and validate -------------------------------------------------------------------


def rule(body: str) -> str:
    """A policy with one rule (tools.create_charge.rules[0]) made of the lines of ``body``."""
    return "tools:\n  create_charge:\n    rules:\n      - " + body.replace("\n", "\n        ") + "\n"


R0 = "tools.create_charge.rules[0]"
SPEND_LTE_5 = "conditions:\n  - {path: state.create_charge.spend, op: lte, value: 5}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("rate_limit: 5/fortnight",
         [("5/", R0 + ".rate_limit",
           "rate_limit window must be one of second, minute, hour, day; got 'fortnight'", None)]),
        ("rate_limit: 5/minutes", [("5/", R0 + ".rate_limit", "got 'minutes'", "did you mean 'minute'?")]),
        ("rate_limit: 5 per minute", [("5 ", R0 + ".rate_limit", 'rate_limit must look like "5/minute"', None)]),
        ("rate_limit: 0/minute", [("0/", R0 + ".rate_limit", "count must be a positive integer, got 0", None)]),
        ("rate_limit: 5", [("5", R0 + ".rate_limit", "rate_limit must be a mapping, not a number", None)]),
        ("rate_limit: {window: 60}", [("{window", R0 + ".rate_limit", "rate_limit needs `max`", None)]),
        ("rate_limit: {max: 10}", [("{max", R0 + ".rate_limit", "rate_limit needs `window`", None)]),
        ("rate_limit: {max: 0, window: 60}", [("0,", R0 + ".rate_limit.max", "max must be a positive integer", None)]),
        ("rate_limit: {max: 2.5, window: 60}",
         [("2.5", R0 + ".rate_limit.max", "max must be a positive integer, got 2.5", None)]),
        ("rate_limit: {max: 10, window: 0}",
         [("0}", R0 + ".rate_limit.window", "window must be a positive number of seconds, got 0", None)]),
        ("rate_limit: {max: 10, window: weekly}",
         [("weekly", R0 + ".rate_limit.window",
           "window must be one of second, minute, hour, day or a number of seconds", None)]),
        ("rate_limit: {max: 10, window: minut}",
         [("minut}", R0 + ".rate_limit.window", "got 'minut'", "did you mean 'minute'?")]),
        ("rate_limit: 5/minute\nconditions:\n  - {path: args.a, op: eq, value: 1}",
         [("5/", R0 + ".rate_limit", "rate_limit cannot be combined with conditions or state", "separate rule")]),
        # state
        ("conditions:\n  - {path: state.create_charge.spend, op: lte, value: 100}",
         [("{path", R0 + ".conditions[0].path", "has no `state: {counter: spend}` block", "declare the counter")]),
        ("state: {counter: spend, window: day}\nconditions:\n  - {path: state.create_charge.spend, op: gt, value: 1}",
         [
             ("{counter", R0 + ".state", "state counter 'spend' is never limited", "op: lte"),
             ("{path", R0 + ".conditions[0].op", "a state condition limits its counter with lte or lt, not gt", None),
         ]),
        ("state: {counter: spend, window: day}\nconditions:\n  - {path: state.other.spend, op: lte, value: 100}",
         [
             ("{counter", R0 + ".state", "state counter 'spend' is never limited", "op: lte"),
             ("{path", R0 + ".conditions[0].path",
              "counters of tool 'create_charge' are read as state.create_charge.spend, not state.other.spend", None),
         ]),
        ("state: {counter: spend, window: day}\nconditions:\n  - {path: args.a, op: eq, value: 1}",
         [("{counter", R0 + ".state", "state counter 'spend' is never limited", "op: lte")]),
        ("state: {counter: spend, window: day}\n" + SPEND_LTE_5
         + "\n  - {path: state.create_charge.spend, op: lt, value: 9}",
         [("{path@2", R0 + ".conditions[1]", "counter 'spend' is limited twice in one rule", None)]),
        ("state: {window: day}\n" + SPEND_LTE_5,
         [
             ("{window", R0 + ".state", "state needs `counter`", None),
             ("{path", R0 + ".conditions[0].path", "has no `state: {counter: spend}` block", "declare the counter"),
         ]),
        ("state: {counter: spend}\n" + SPEND_LTE_5,
         [("{counter", R0 + ".state", "state needs `window` (minute, hour or day)", None)]),
        ("state: {counter: spend, window: 60}\n" + SPEND_LTE_5,
         [("60", R0 + ".state.window", "window must be one of second, minute, hour, day; got 60", None)]),
        ("state: {counter: spend, window: fortnight}\n" + SPEND_LTE_5,
         [("fortnight", R0 + ".state.window", "got 'fortnight'", None)]),
        ("state: {counter: 'a b', window: day}\nconditions:\n  - {path: args.a, op: eq, value: 1}",
         [("'a b'", R0 + ".state.counter", "counter 'a b' may hold only letters, digits, _ and -", None)]),
        ("state: {counter: spend, window: day, increment: 2, increment_from: args.amount}\n" + SPEND_LTE_5,
         [("args.amount", R0 + ".state.increment_from", "state takes `increment` or `increment_from`, not both",
           None)]),
        ("state: {counter: spend, window: day, increment: -2}\n" + SPEND_LTE_5,
         [("-2", R0 + ".state.increment", "increment must be a positive number, got -2", None)]),
        ("state: {counter: spend, window: day, increment_from: amount}\n" + SPEND_LTE_5,
         [("amount}", R0 + ".state.increment_from",
           'increment_from must be an argument path like "args.amount", got \'amount\'', None)]),
        ("state: {counter: spend, window: day, increment_from: state.create_charge.spend}\n" + SPEND_LTE_5,
         [("state.create_charge.spend}", R0 + ".state.increment_from", "increment_from must be an argument path",
           None)]),
        ("state: [spend]\nconditions:\n  - {path: args.a, op: eq, value: 1}",
         [("[spend]", R0 + ".state", "state must be a mapping, not a list", None)]),
        # evaluate/deny rule shape
        ("name: nothing", [("name", R0, NEEDS_SOMETHING, "use `action: deny` to block the tool")]),
        ("name: nothing\nconditions: []", [("name", R0, NEEDS_SOMETHING, "add conditions")]),
        ("action: evaluate", [("action", R0, NEEDS_SOMETHING, "add conditions")]),
        ("action: deny\nconditions:\n  - {path: args.a, op: eq, value: 1}",
         [("- {path", R0 + ".conditions", "a deny rule takes no conditions: it always denies", None)]),
        ("action: deny\nrate_limit: 5/minute",
         [("5/", R0 + ".rate_limit", "a deny rule takes no rate_limit: it always denies", None)]),
        ("action: deny\nvalidate: {required_args: true}",
         [("{required", R0 + ".validate", "a deny rule takes no validate: it always denies", None)]),
        ("action: deny\non_deny: 'no'\nreason: nope",
         [("nope", R0 + ".reason", "a rule takes `on_deny` (Intercept) or `reason` (catalogue), not both", None)]),
        ("validate: {}", [("{}", R0 + ".validate", "validate needs `required_args: true`", None)]),
    ],
)
def test_rule_errors(body, expected):
    assert_errors(rule(body), expected, dedented=True)


def test_state_condition_must_sit_in_the_rule_that_declares_the_counter():
    assert_errors(
        """
        tools:
          create_charge:
            rules:
              - name: declares
                state: {counter: spend, window: day}
                conditions:
                  - {path: state.create_charge.spend, op: lte, value: 100}
              - name: reads
                conditions:
                  - {path: state.create_charge.spend, op: lte, value: 50}
        """,
        [("{path@2", "tools.create_charge.rules[1].conditions[0].path",
          "this rule has no `state: {counter: spend}`", "declare the counter")],
    )


def test_state_under_star_is_read_as_global():
    regoguard.load_policy_text(
        dedent(
            """
            tools:
              "*":
                rules:
                  - state: {counter: calls, window: hour}
                    conditions:
                      - {path: state._global.calls, op: lt, value: 100}
            """
        )
    )
    assert_errors(
        """
        tools:
          "*":
            rules:
              - state: {counter: calls, window: hour}
                conditions:
                  - {path: "state.*.calls", op: lt, value: 100}
        """,
        [
            ("{counter", 'tools["*"].rules[0].state', "state counter 'calls' is never limited", "state._global.calls"),
            ("{path", 'tools["*"].rules[0].conditions[0].path', "are read as state._global.calls", None),
        ],
    )


def test_duplicate_rule_names_and_counters():
    assert_errors(
        """
        tools:
          t:
            rules:
              - name: cap
                rate_limit: 5/minute
              - name: cap
                rate_limit: 50/minute
              - name: other
                rate_limit: 10/minute
              - name: seconds
                rate_limit: {max: 10, window: 60}
                scope: global
        """,
        [
            ("name: cap@2", "tools.t.rules[1]", "duplicate rule name 'cap' (also rules[0])", "must be unique per tool"),
            ("name: cap@2", "tools.t.rules[1]", "duplicate counter '_rate_minute' (also used by rules[0])",
             "another counter name"),
            ("name: other", "tools.t.rules[2]", "duplicate counter '_rate_minute'", "combine the two rules"),
        ],
    )


def test_same_rule_name_under_two_tools_is_fine():
    regoguard.load_policy_text(
        "tools:\n  a:\n    rules:\n      - {name: x, action: deny}\n"
        "  b:\n    rules:\n      - {name: x, action: deny}\n"
    )


def test_duplicate_state_counter_in_one_tool():
    assert_errors(
        """
        tools:
          t:
            rules:
              - state: {counter: spend, window: day}
                conditions:
                  - {path: state.t.spend, op: lte, value: 100}
              - state: {counter: spend, window: hour}
                conditions:
                  - {path: state.t.spend, op: lte, value: 10}
        """,
        [("state: {counter: spend, window: hour", "tools.t.rules[1]",
          "duplicate counter 'spend' (also used by rules[0])", "another counter name")],
    )


# --- YAML itself --------------------------------------------------------------------------------------


def test_yaml_bombs_are_refused_with_a_line():
    lines = ['version: "1"', "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    text = "\n".join([*lines, "tools:", "  t:", "    rules: []", ""])
    (e,) = load_errors(text)
    assert "expand to more than 2,000,000 nodes" in e.message and 3 <= e.line <= 10, str(e)


def test_one_long_string_aliased_many_times_is_a_bomb_too():
    text = ('version: "1"\nbig: &big "' + "x" * 100_000 + '"\nmany: [' + ", ".join(["*big"] * 200) + "]\n"
            "tools:\n  t:\n    rules: []\n")
    (e,) = load_errors(text)
    assert "bytes of text beyond the file's own" in e.message and e.line == 3, str(e)


def test_a_policy_sharing_one_block_between_thousands_of_tools_loads():
    shared = "  t0: &rules\n    rules:\n      - {name: per minute, rate_limit: 10/minute}\n" \
             "      - conditions: [{path: args.n, op: lte, value: 5}]\n"
    text = 'version: "1"\ntools:\n' + shared + "".join(f"  t{i}: *rules\n" for i in range(1, 8000))
    assert len(regoguard.load_policy_text(text, "policy.yaml").tools) == 8000


def test_nesting_deeper_than_a_policy_needs_is_refused_with_a_line():
    text = 'version: "1"\nx: ' + "[" * 150 + "]" * 150 + "\ntools:\n  t:\n    rules: []\n"
    (e,) = load_errors(text)
    assert "nests deeper than 100 levels" in e.message and e.line == 2, str(e)


def test_a_large_policy_written_out_is_no_yaml_bomb():
    """12,000 tools with a condition each: 200,000-odd nodes, none of them from an alias. Only what
    aliases add is bounded (the file itself is bounded by its size)."""
    tools = "".join(f"  t{i}:\n    rules:\n      - conditions: [{{path: args.n, op: lte, value: {i}}}]\n"
                    for i in range(12_000))
    policy = regoguard.load_policy_text('version: "1"\ntools:\n' + tools, "policy.yaml")
    assert len(policy.tools) == 12_000


def test_anchors_aliases_and_merge_keys_load_as_written_out():
    shared = dedent("""\
        version: "1"
        tools:
          echo:
            rules:
              - &limited
                name: per minute
                rate_limit: 10/minute
          other:
            rules:
              - *limited
          third:
            rules:
              - <<: *limited
                name: hourly
                rate_limit: 100/hour
        """)
    written = dedent("""\
        version: "1"
        tools:
          echo:
            rules:
              - {name: per minute, rate_limit: 10/minute}
          other:
            rules:
              - {name: per minute, rate_limit: 10/minute}
          third:
            rules:
              - {name: hourly, rate_limit: 100/hour}
        """)
    a, b = (regoguard.load_policy_text(t, "policy.yaml") for t in (shared, written))
    assert regoguard.compile_policy(a).settings == regoguard.compile_policy(b).settings


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("tools:\n  t:\n    rules: [\n", "<end>", "YAML syntax error"),
        ("tools:\n  t: {rules: []\n", "<end>", "YAML syntax error"),
        ("tools:\n\tt: {}\n", "\t", "YAML syntax error"),
        ("tools:\n  t:\n    rules: []\n  t:\n    rules: []\n", "t:@2",
         "duplicate key 't' (first defined at line 2, column 3)"),
        ("default: allow\ndefault: deny\ntools: {}\n", "default@2", "duplicate key 'default' (first defined at line 1"),
        ("tools:\n  t:\n    rules:\n      - {action: deny, action: allow}\n", "action@2",
         "duplicate key 'action' (first defined at line 4, column 10)"),
        ("tools:\n  a: {rules: []}\n  b:\n    <<: 5\n", "5\n", "a merge key (<<) takes a mapping or a list"),
        ("tools:\n  a: &a [*a]\n", "&a", "a YAML alias refers to a node that contains it"),
        (wrap_condition("{path: args.a, op: lte, value: .inf}"), ".inf", "number '.inf' is not finite"),
        (wrap_condition("{path: args.a, op: lte, value: -.Inf}"), "-.Inf", "number '-.Inf' is not finite"),
        (wrap_condition("{path: args.a, op: eq, value: .nan}"), ".nan", "number '.nan' is not finite"),
        (wrap_condition("{path: args.a, op: eq, value: 2024-01-01}"), "2024",
         "unsupported YAML value '2024-01-01' (date); quote it"),
        ("tools:\n  5:\n    rules: []\n", "5:", "mapping key '5' must be a string; quote it"),
        ("tools:\n  ? [a, b]\n  : {rules: []}\n", "[a", "mapping keys must be plain strings"),
        ("---\ntools: {}\n---\ntools: {}\n", "---@2", "YAML syntax error"),
        (wrap_condition("{path: args.a, op: eq, value: !custom 5}"), "!custom",
         "unsupported YAML value '5' (!custom): could not determine a constructor"),
        ("tools:\n  !custom t:\n    rules: []\n", "!custom", "unsupported YAML value 't' (!custom)"),
    ],
)
def test_yaml_problems(text, where, message):
    (e,) = load_errors(text)
    assert (e.file, e.line, e.column, e.key_path) == ("policy.yaml", *at(text, where), ""), str(e)
    assert message in e.message, str(e)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "   \n"])
def test_empty_policy(text):
    (e,) = load_errors(text)
    assert (e.line, e.column, e.key_path) == (1, 1, "")
    assert "policy is empty" in e.message


def test_explicit_empty_document_is_an_error():
    (e,) = load_errors("---\n")
    assert e.key_path == ""


def test_quoted_digit_key_and_null_tools_are_fine():
    p = regoguard.load_policy_text("tools:\n  '5':\n    rules: []\n")
    assert [t.key for t in p.tools] == ["5"]
    assert regoguard.load_policy_text("tools:\n").tools == ()


# --- every error at once ------------------------------------------------------------------------------

FIVE_MISTAKES = """\
version: "1"
defualt: deny
tools:
  create_charge:
    rules:
      - name: max_amount
        conditions:
          - {path: args.amount, op: lte, value: "50000"}
      - name: bad_op
        conditions:
          - path: args.amount
            op: lessthan
            value: 5
      - name: bad_rate
        rate_limit: 5/fortnight
  delete_repo:
    rules:
      - action: deny
        on_deny: never
        reason: also never
  "*":
    rules:
      - rate_limit: {max: 100, window: 60}
        scope: global
"""


def test_all_errors_of_a_file_are_reported_at_once():
    errors = load_errors(FIVE_MISTAKES, "payments.yaml")
    assert [(e.file, e.line, e.column, e.key_path) for e in errors] == [
        ("payments.yaml", *at(FIVE_MISTAKES, "defualt"), "defualt"),
        ("payments.yaml", *at(FIVE_MISTAKES, '"50000"'), "tools.create_charge.rules[0].conditions[0].value"),
        ("payments.yaml", *at(FIVE_MISTAKES, "lessthan"), "tools.create_charge.rules[1].conditions[0].op"),
        ("payments.yaml", *at(FIVE_MISTAKES, "5/fortnight"), "tools.create_charge.rules[2].rate_limit"),
        ("payments.yaml", *at(FIVE_MISTAKES, "also never"), "tools.delete_repo.rules[0].reason"),
    ]
    assert len(errors) == 5
    assert errors[0].hint == "did you mean 'default'?"
    text = str(PolicyLoadError(errors))
    assert text.splitlines()[0] == "payments.yaml:2:1: error: unknown key 'defualt' in the policy (defualt)"
    assert "payments.yaml:12:17: error: op must be one of" in text
    assert "(tools.create_charge.rules[1].conditions[0].op)" in text


def test_errors_are_sorted_by_position():
    errors = load_errors(FIVE_MISTAKES)
    assert [(e.line, e.column) for e in errors] == sorted((e.line, e.column) for e in errors)


def test_error_str_is_compiler_style_with_hint():
    (e,) = load_errors("defualt: deny\ntools: {}\n", "p.yaml")
    assert str(e) == (
        "p.yaml:1:1: error: unknown key 'defualt' in the policy (defualt)\n    hint: did you mean 'default'?"
    )


def test_session_scope_warning_is_not_an_error():
    p = regoguard.load_policy_text(rule("rate_limit: {max: 10, window: 60}"), "p.yaml")
    assert len(p.warnings) == 1
    assert p.warnings[0].startswith("p.yaml:4:9: warning: rule 'create_charge/rules[0]' has a session-scoped limit")
    assert regoguard.load_policy_text(rule("rate_limit: {max: 10, window: 60}\nscope: principal")).warnings == ()


def test_a_pattern_that_can_backtrack_exponentially_loads_with_a_warning_at_its_line():
    text = wrap_condition("{path: args.a, op: regex, value: '^(.|\\s)*END$'}")
    p = regoguard.load_policy_text(text, "p.yaml")
    (w,) = p.warnings
    line, column = at(text, "'^(.|")
    assert w.startswith(f"p.yaml:{line}:{column}: warning: pattern '^(.|\\\\s)*END$' can backtrack exponentially")
    assert "worker pool behind the timeout" in w
    # the patterns policies are made of load without one
    for cond in ("{path: args.a, op: regex, value: '^/workspace/[a-z]+'}", "{path: args.a, op: glob, value: '*.py'}"):
        assert regoguard.load_policy_text(wrap_condition(cond)).warnings == ()


# --- load_policy on files -----------------------------------------------------------------------------


def test_load_policy_names_the_file(tmp_path: Path):
    path = tmp_path / "payments.yaml"
    path.write_text("tools:\n  t:\n    rules:\n      - {action: deny, scope: sesion}\n")
    with pytest.raises(PolicyLoadError) as info:
        regoguard.load_policy(path)
    (e,) = info.value.errors
    assert (e.file, e.line, e.column, e.key_path) == (str(path), 4, 31, "tools.t.rules[0].scope")


def test_load_policy_missing_file(tmp_path: Path):
    with pytest.raises(PolicyLoadError) as info:
        regoguard.load_policy(tmp_path / "nope.yaml")
    (e,) = info.value.errors
    assert (e.line, e.column) == (1, 1)
    assert "cannot read policy" in e.message


def test_load_policy_not_utf8(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"description: caf\xe9\ntools: {}\n")
    with pytest.raises(PolicyLoadError) as info:
        regoguard.load_policy(path)
    assert "policy is not UTF-8" in info.value.errors[0].message


def test_load_policy_too_large(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"# " + b"x" * (4 * 1024 * 1024) + b"\ntools: {}\n")
    with pytest.raises(PolicyLoadError) as info:
        regoguard.load_policy(path)
    assert "policy is larger than" in info.value.errors[0].message


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("hide_unlisted: true\ntools:\n  x:\n    rules: []\n",
         [("true", "hide_unlisted", "hide_unlisted applies under `default: deny`", "add `default: deny`")]),
        ("default: deny\nhide_unlisted: yes please\ntools:\n  x:\n    rules: []\n",
         [("yes please", "hide_unlisted", "hide_unlisted must be true or false, not a string", None)]),
    ],
)
def test_hide_unlisted_errors(yaml_text, expected):
    assert_errors(yaml_text, expected)


def test_a_number_beyond_16_significant_digits_is_refused_at_its_line():
    text = wrap_condition("{path: args.a, op: lte, value: 0.30000000000000004}")
    (e,) = load_errors(text)
    assert (e.line, e.column) == at(text, "0.30000000000000004")
    assert "16" in e.message and "0.3" in e.message
    sixteen = wrap_condition("{path: args.a, op: lte, value: 1234567890.123456}")
    assert regoguard.load_policy_text(sixteen).warnings == ()


def test_a_number_too_small_for_the_engine_to_read_is_refused_at_its_line():
    # rego-cpp's std::stod fails on it: every query of the tool's bundle would be an engine error
    text = wrap_condition("{path: args.a, op: in, value: [1, 1.112536929253601e-308]}")
    (e,) = load_errors(text)
    assert (e.line, e.column) == at(text, "1.112536929253601e-308")
    assert "smaller than the embedded engine can read" in e.message
    smallest = wrap_condition("{path: args.a, op: gte, value: 1.0e-307}")
    assert decide(smallest, "t", {"a": 1}).allow
    assert not decide(smallest, "t", {"a": 0}).allow
