"""regopy (rego-cpp: std::regex over bytes) and OPA (Go RE2 over characters) decide every regoguard
regex and glob alike, on every subject regoguard lets through.

Each pattern is run in the form the compiler emits (``portable_regex`` / ``glob_to_regex``), written into
a Rego module as a JSON string literal the way the compiled policy writes it, through ``regex.match`` on
both real engines. A case counts when the pattern is accepted and ``subject_is_portable`` does not flag
the subject; every such case must agree. Flagged cases are the ones the engine denies instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import regopy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import regoguard
from helpers_policy import compiled_for, dedent, load_errors
from opa_engine import opa_available, opa_eval
from regoguard.policy.regex_check import (
    RegexProblem,
    glob_to_regex,
    portable_regex,
    subject_is_portable,
    unportable_argument,
)

pytestmark = pytest.mark.skipif(
    not opa_available(), reason="opa-golib-python-bindings not installed (scripts/setup.sh)"
)

# --- the two engines -----------------------------------------------------------------------------------


def _module(patterns: list[str]) -> str:
    # The compiler writes patterns with json.dumps(ensure_ascii=False) into the module; so do we.
    lits = ", ".join(json.dumps(p, ensure_ascii=False) for p in patterns)
    return (
        "package agree\n\nimport rego.v1\n\n"
        f"pats := [{lits}]\n\n"
        "r := [[regex.match(p, s) | some p in pats] | some s in input.subjects]\n"
    )


def regopy_matrix(patterns: list[str], subjects: list[str]) -> list[list[bool]]:
    """``regex.match(pattern, subject)`` under rego-cpp, subject-major."""
    interp = regopy.Interpreter()
    interp.add_module("agree.rego", _module(patterns))
    interp.set_input({"subjects": subjects})
    out = json.loads(str(interp.query("data.agree")))
    return out["expressions"][0]["r"] if isinstance(out, dict) else out[0]["expressions"][0]["r"]


def opa_matrix(patterns: list[str], subjects: list[str]) -> list[list[bool]]:
    """``regex.match(pattern, subject)`` under OPA v1.20, subject-major."""
    result = opa_eval({"agree.rego": _module(patterns)}, {}, {"subjects": subjects}, "data.agree.r")
    assert isinstance(result, list)
    return result


def disagreements(patterns: list[str], subjects: list[str], prechecked: bool = True) -> list[tuple[str, str]]:
    """(pattern, subject) pairs the engines decide differently, skipping pairs the pre-check flags."""
    a, b = regopy_matrix(patterns, subjects), opa_matrix(patterns, subjects)
    out = []
    for si, s in enumerate(subjects):
        for pi, p in enumerate(patterns):
            if prechecked and not subject_is_portable(p, s):
                continue
            if a[si][pi] != b[si][pi]:
                out.append((p, s))
    return out


# --- the corpus ---------------------------------------------------------------------------------------

SUBJECTS = [
    "", "a", "A", "abc", "aXc", "a c", "a.c", "hello", "HELLO", "5", "123", "_", "-", "/", "foo bar", "foo",
    "a/b", "/home/al/x", "x.txt", "a.txt.bak",
    # control and space characters the engines classify differently
    "\r", "a\rc", "\n", "a\nc", "a\n", "\t", "\v", "a\vc", "\f", "\x7f", "\x01", " ",
    # non-ASCII: 2, 3 and 4 bytes; line and paragraph separators; NEL; no-break space
    "é", "É", "aé", "éa", "aéc", "éé", "éè", "café", "日", "日本", "a日c", "😀", "a😀c", "😀😀",
    "\u2028", "a\u2028c", "\u2029", "\u0085", "a\u0085c", "\u00a0", "/home/é/x", "é.txt", "x.é",
    # letters RE2's (?i) folds onto ASCII, and other case oddities
    "\u212a", "\u017f", "k", "K", "s", "S", "İ", "ı", "ß", "ﬀ",
]

REGEXES = [
    # . against \r, \n, U+2028 and multi-byte characters
    ".", "a.c", "^.$", "^..$", "^.+$", "^a.*c$", "^.*$", ".*x.*", "^[^\\n]$",
    # \s against \v; \S; classes
    "\\s", "^\\s$", "^\\S$", "^\\s+$", "a\\sc", "[\\s]", "^[^\\S]$", "^[\\s\\S]$", "^[\\s\\S]*$", "[\\sa]",
    "\\d", "^\\D$", "\\w", "^\\W$", "^\\w+$", "\\bfoo\\b", "\\Bo", "^[a-z]+$", "^[^a]$", "^[^/]+$",
    "^/home/[^/]+/", "^[^/]+/[^/]+$", "[0-9]{3}", "^(foo|bar)$", "\\.", "^$", "a$", "^a", "c$",
    # non-ASCII in the pattern: literals, quantified literals, classes
    "é", "^é$", "é+", "^é{2}$", "^é?$", "[é]", "^[é]$", "[aé]", "^[aé]+$", "^[éè]{2}$", "日", "^日本$",
    "😀", "^😀+$", "^a[é😀]c$", "café",
    # (?i), with the letters RE2 folds onto ASCII
    "(?i)^k$", "(?i)^s$", "(?i)^[a-z]+$", "(?i)^[^a]$", "(?i)^hello$", "(?i)k", "(?i)[j-l]",
    # POSIX classes
    "^[[:alpha:]]+$", "^[[:space:]]$", "[[:punct:]]", "[[:cntrl:]]", "^[[:print:]]+$", "^[[:graph:]]$",
    "^[[:upper:]]$", "^[[:alnum:]_]+$",
]

GLOBS = ["*", "a*", "*.txt", "a?c", "?", "??", "[ab]*", "a[0-9]c", "[!a]", "[!a]*", "caf?", "caf*", "*é",
         "[é]*", "x.[éè]", "*/*", "/home/*/x"]


def emitted_regexes() -> list[str]:
    return [portable_regex(p) for p in REGEXES] + [glob_to_regex(g) for g in GLOBS]


def test_every_corpus_pattern_is_accepted():
    # The corpus is meant to be what regoguard lets through; a refused pattern here is a test bug.
    assert len(emitted_regexes()) == len(REGEXES) + len(GLOBS)


def test_engines_agree_on_every_case_regoguard_lets_through():
    assert disagreements(emitted_regexes(), SUBJECTS) == []


def test_ascii_subjects_are_never_flagged():
    for p in emitted_regexes():
        for s in SUBJECTS:
            if s.isascii():
                assert subject_is_portable(p, s), (p, s)


def test_the_precheck_flags_real_disagreements_and_little_else():
    # Without the pre-check the engines do disagree: the flagged subjects are the ones that matter.
    pats = emitted_regexes()
    raw = disagreements(pats, SUBJECTS, prechecked=False)
    assert raw, "the corpus no longer shows any byte/character difference"
    assert all(not subject_is_portable(p, s) for p, s in raw)
    # A run like [^/]+ or * takes non-ASCII text whole in both engines: such subjects are not flagged.
    for p in ("^[^/]+$", "^/home/[^/]+/", "^[\\s\\S]*\\.txt$", "é", "^(?:é)+$", "^[[:alpha:]]+$"):
        assert subject_is_portable(p, "/home/é/x.txt"), p
    assert subject_is_portable(glob_to_regex("*.txt"), "é.txt")
    assert subject_is_portable(portable_regex("^a.*c$"), "a日c")


@pytest.mark.parametrize(
    ("pattern", "subject", "regopy_raw"),
    [
        (".", "\r", False),  # std::regex's . refuses \r; RE2's takes it
        ("^\\s$", "\v", True),  # std::regex's \s takes \v; RE2's does not
        ("^é+$", "éé", False),  # std::regex repeats the last byte of é
        ("^[é]$", "é", False),  # std::regex reads [é] as a class of two bytes
        ("^\\S$", "\v", False),
    ],
)
def test_translation_removes_a_known_difference(pattern, subject, regopy_raw):
    # Written as the user wrote it, the engines disagree; as regoguard emits it, they agree (with RE2).
    assert regopy_matrix([pattern], [subject]) == [[regopy_raw]]
    assert opa_matrix([pattern], [subject]) == [[not regopy_raw]]
    emitted = portable_regex(pattern)
    assert subject_is_portable(emitted, subject)
    assert regopy_matrix([emitted], [subject]) == opa_matrix([emitted], [subject]) == [[not regopy_raw]]


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [
        ("^.$", "é"),  # one byte against one character: cannot be rewritten, so pre-checked
        ("^..$", "é"),
        ("^[^a]$", "日"),
    ],
)
def test_precheck_flags_what_no_rewrite_can_fix(pattern, subject):
    emitted = portable_regex(pattern)
    assert regopy_matrix([emitted], [subject]) != opa_matrix([emitted], [subject])
    assert not subject_is_portable(emitted, subject)


@pytest.mark.parametrize(("pattern", "subject"), [("(?i)^k$", "\u212a"), ("(?i)^s$", "\u017f")])
def test_precheck_flags_the_letters_re2_folds_onto_ascii(pattern, subject):
    # OPA reading the policy as written folds KELVIN SIGN onto k and LONG S onto s; the translated
    # [kK] / [sS] takes neither, in both engines. So the subject is flagged rather than misjudged.
    emitted = portable_regex(pattern)
    assert opa_matrix([pattern], [subject]) == [[True]]
    assert regopy_matrix([emitted], [subject]) == opa_matrix([emitted], [subject]) == [[False]]
    assert not subject_is_portable(emitted, subject)


def test_glob_question_mark_on_non_ascii_is_prechecked():
    emitted = glob_to_regex("caf?")
    assert regopy_matrix([emitted], ["café"]) != opa_matrix([emitted], ["café"])
    assert not subject_is_portable(emitted, "café")
    assert subject_is_portable(emitted, "cafe")


@pytest.mark.parametrize("key", ["browser_*", "*_file", "*lose", "c*", "a*b*c", "**x"])
def test_tool_key_globs_need_no_precheck(key: str):
    # Tool keys take `*` only: runs separated by literals, which read non-ASCII names alike.
    emitted = glob_to_regex(key)
    assert subject_is_portable(emitted, "é日😀_file")
    names = ["browser_é", "日_file", "c😀", "aéb日c", "x", "é", "close", "clése"]
    assert disagreements([emitted], names) == []


def test_lone_surrogates_are_flagged():
    assert not subject_is_portable("^a", "a\ud800")


# --- random patterns ----------------------------------------------------------------------------------

ATOMS = [".", "a", "b", "é", "日", "😀", "\\s", "\\S", "\\d", "\\w", "\\W", "[^a]", "[ab]", "[aé]", "[é日]",
         "[^/]", "[\\s\\S]", "/", "\\.", "[[:alpha:]]", "[^\\n]", "(a|é)", "\\b"]
QUANTS = ["", "", "", "*", "+", "?", "{2}", "{1,3}", "*?"]
ALPHABET = ["a", "b", "/", ".", " ", "\r", "\n", "\v", "\t", "é", "日", "😀", "\u2028", "\u0085", "\u212a", "K",
            "1", "_"]


@st.composite
def random_patterns(draw: Any) -> str:
    parts = [draw(st.sampled_from(ATOMS)) + draw(st.sampled_from(QUANTS)) for _ in range(draw(st.integers(1, 4)))]
    body = "".join(parts)
    if draw(st.booleans()):
        body = "^" + body
    if draw(st.booleans()):
        body += "$"
    return ("(?i)" if draw(st.integers(0, 5)) == 0 else "") + body


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern=random_patterns(),
    subjects=st.lists(st.lists(st.sampled_from(ALPHABET), max_size=5).map("".join), min_size=1, max_size=12),
)
def test_random_patterns_agree_where_regoguard_lets_them_through(pattern: str, subjects: list[str]):
    try:
        emitted = portable_regex(pattern)
    except RegexProblem:
        return  # refused at load: never reaches an engine
    assert disagreements([emitted], subjects) == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    glob=st.lists(st.sampled_from(["*", "?", "a", "é", ".", "[ab]", "[!a]", "[é]", "/", "日"]), min_size=1,
                  max_size=4).map("".join),
    subjects=st.lists(st.lists(st.sampled_from(ALPHABET), max_size=5).map("".join), min_size=1, max_size=12),
)
def test_random_globs_agree_where_regoguard_lets_them_through(glob: str, subjects: list[str]):
    try:
        emitted = glob_to_regex(glob)
    except RegexProblem:
        return
    assert disagreements([emitted], subjects) == []


# Raw token soup: whatever portable_regex accepts must parse in both engines and agree with them.
SOUP = ["a", "b", "é", "日", "😀", ".", "\\", "[", "]", "^", "$", "(", ")", "|", "*", "+", "?", "{", "}", ",",
        "1", "2", "-", ":", "s", "S", "d", "w", "b", "W", "D", "n", "t", "v", "(?:", "[:alpha:]", " ", "/", "K",
        "[^", "{2}", "\\s", "\\S", "\\b", "\\B", "\\]", "ſ", "[0-Z]", "[Z-a]"]
SOUP_SUBJECTS = ["", "a", "é", "ab", "aé", "日本", "\r", "\v", "a\nb", "😀", "-", "\\", "[", "]", "{", "a1", "ſ",
                 "K", "k", "s", "/é/", "\u2028", "é é"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fold=st.booleans(),
    tokens=st.lists(st.sampled_from(SOUP), min_size=1, max_size=7),
)
def test_token_soup_accepted_means_agreed(fold: bool, tokens: list[str]):
    pattern = ("(?i)" if fold else "") + "".join(tokens)
    try:
        emitted = portable_regex(pattern)
    except RegexProblem:
        return
    assert disagreements([emitted], SOUP_SUBJECTS) == [], (pattern, emitted)


@pytest.mark.parametrize(
    ("pattern", "emitted", "subject"),
    [("{", "\\{", "{"), ("a{x", "a\\{x", "a{x"), ("[])]", "[\\])]", ")"), ("[^]a]", "[^\\]a]", "b")],
)
def test_brackets_std_regex_reads_otherwise_are_escaped(pattern: str, emitted: str, subject: str):
    # std::regex rejects a lone `{` and reads `[]` as an empty class (`[^]` as any byte); RE2 reads both
    # as literals. As written the engines disagree (or rego-cpp errors); as emitted, they agree with RE2.
    assert portable_regex(pattern) == emitted
    assert opa_matrix([pattern], [subject]) == [[True]]
    try:
        raw = regopy_matrix([pattern], [subject])
    except (KeyError, ValueError):
        raw = None  # rego-cpp gave no result: the pattern is an error there
    assert raw != [[True]]
    assert regopy_matrix([emitted], [subject]) == opa_matrix([emitted], [subject]) == [[True]]


@pytest.mark.parametrize("pattern", ["(?i)[0-Z]", "(?i)[Z-a]", "(?i)^[@-Z]+$", "(?i)[_-z]+", "(?i)[a-z]",
                                     "(?i)^[ -\\~]+$", "(?i)^[!-\\]]+$", "(?i)[\\[-a]"])
def test_case_insensitive_ranges_fold_every_letter_they_cover(pattern: str):
    # A range whose ends are not two letters of one case still covers letters: (?i)[0-Z] holds a-z too.
    # The lowered pattern must match what OPA's RE2 matches with the pattern as written.
    subjects = ["abc", "ABC", "z", "Z", "a", "A", "@", "`", "_", "0", "{"]
    assert regopy_matrix([portable_regex(pattern)], subjects) == opa_matrix([pattern], subjects)


def test_a_non_boundary_makes_any_non_ascii_subject_unportable():
    # std::regex finds \B inside a character (between two of its bytes, both non-word); RE2 has no such
    # position: "aéb" matches \B in the one, not in the other. Such a subject is denied, not guessed.
    emitted = portable_regex("\\B")
    assert regopy_matrix([emitted], ["aéb"]) != opa_matrix([emitted], ["aéb"])
    assert not subject_is_portable(emitted, "aéb") and not subject_is_portable(emitted, "x日y")
    assert subject_is_portable(emitted, "ab") and subject_is_portable("\\b", "aéb")


# --- refusals reach the policy author -----------------------------------------------------------------

REFUSED = [
    ("(?i)^café$", "(?i) with non-ASCII letters"),
    ("[^é]", "negated class with non-ASCII"),
    ("[a-é]", "non-ASCII ends"),
    ("\\x41", "hex escapes"),
    ("\\u00e9", "\\u, \\U and \\N"),
    ("\\a", "bell"),
    ("a{,3}", "a{0,n}"),
    ("a{1001}", "above 1000"),
    ("[[:^alpha:]]", "POSIX class"),
    ("[[:word:]]", "POSIX class"),
    ("(?i)[[:lower:]]", "POSIX classes"),
    ("[\\Sa]", "\\S inside a class"),
    ("(?>a)", "atomic groups"),
    ("\\012", "octal"),
    ("[\\b]", "[\\b]"),
    ("\\é", "non-ASCII character"),
    ("[[=a=]]", "collating elements"),
    ("[[.a.]]", "collating elements"),
]


@pytest.mark.parametrize(("pattern", "why"), REFUSED)
def test_unportable_regex_is_refused_at_its_position(pattern: str, why: str):
    for op in ("regex", "not_regex"):
        quoted = "'" + pattern.replace("'", "''") + "'"
        cond = f"{{path: args.a, op: {op}, value: {quoted}}}"
        text = f"tools:\n  t:\n    rules:\n      - conditions:\n          - {cond}\n"
        (e,) = load_errors(text)
        assert (e.line, e.column) == (5, text.splitlines()[4].index(quoted) + 1)
        assert e.key_path == "tools.t.rules[0].conditions[0].value"
        assert e.message.startswith(f"bad regex {pattern!r}: "), str(e)
        assert why in e.message, str(e)


def test_unportable_glob_is_refused():
    text = "tools:\n  t:\n    rules:\n      - conditions:\n          - {path: args.a, op: glob, value: '[!é]*'}\n"
    (e,) = load_errors(text)
    assert e.message.startswith("bad glob '[!é]*': "), str(e)
    assert "negated class with non-ASCII" in e.message


def test_check_reports_the_refusal(tmp_path: Path):
    policy = tmp_path / "p.yaml"
    policy.write_text(
        dedent(
            """
            tools:
              t:
                rules:
                  - conditions:
                      - {path: args.a, op: regex, value: '[^é]+'}
            """
        ),
        encoding="utf-8",
    )
    proc = subprocess.run([sys.executable, "-m", "regoguard", "check", str(policy)], capture_output=True,
                          text=True, check=False, timeout=120)
    assert proc.returncode == 1
    assert f"{policy}:5:" in proc.stderr
    assert "bad regex '[^é]+'" in proc.stderr
    assert "negated class with non-ASCII" in proc.stderr


def test_accepted_patterns_load_and_compile_to_the_translated_form():
    policy = regoguard.load_policy_text(
        "tools:\n  t:\n    rules:\n      - conditions:\n          - {path: args.a, op: regex, value: '^a.\\s[é]+$'}\n"
    )
    compiled = regoguard.compile_policy(policy)
    cond = compiled.settings["tools"]["t"]["rules"][0]["conditions"][0]
    assert cond["regex"] == "^a[^\\n][\\t\\n\\f\\r ](?:é)+$"


# --- what the engine asks before evaluating -----------------------------------------------------------

ENTRY_POLICY = dedent(
    """
    tools:
      t:
        rules:
          - conditions:
              - {path: args.code, op: regex, value: '^.{3}$'}
              - {path: args.items.0, op: not_regex, value: '^[^/]+$'}
      "*":
        rules:
          - conditions:
              - {path: args.name, op: glob, value: 'caf?'}
    """
)


@pytest.mark.parametrize(
    ("args", "flagged"),
    [
        ({"code": "abc", "items": ["x"], "name": "cafe"}, False),
        ({"code": "日本x"}, True),  # ^[^\n]{3}$: three bytes in rego-cpp, three characters in OPA
        ({"code": "abc", "items": ["/é/"]}, False),  # [^/]+ reads é whole in both engines
        ({"items": {"0": "é"}}, False),  # an object key "0" is reached too; [^/]+ is safe on it
        ({"name": "café"}, True),  # the "*" rules count too
        ({"name": "cafe", "code": 5}, False),  # not a string: the condition is false in both engines
        ({"code": "\u212aab"}, True),  # KELVIN SIGN
    ],
)
def test_unportable_argument_names_the_condition(args: dict[str, Any], flagged: bool):
    entry = compiled_for(ENTRY_POLICY).entry_for("t")
    why = unportable_argument(entry, args)
    if flagged:
        assert why is not None
        assert "could match differently" in why
    else:
        assert why is None


def test_unportable_argument_message_points_at_the_yaml_condition():
    entry = compiled_for(ENTRY_POLICY).entry_for("t")
    why = unportable_argument(entry, {"code": "日本x"})
    assert why is not None and "args.code regex" in why


def test_the_engine_denies_what_the_engines_would_match_differently() -> None:
    """Wired into Engine.evaluate, before the decision cache: a non-ASCII argument against a
    single-character pattern element is denied (rule engine/input), an ASCII one is decided."""
    from helpers_policy import decide, dedent

    policy = dedent("""
        version: "1"
        tools:
          pick:
            rules:
              - name: one char
                conditions:
                  - {path: args.c, op: regex, value: "^.$"}
    """)
    assert decide(policy, "pick", {"c": "a"}).allow
    assert not decide(policy, "pick", {"c": "ab"}).allow
    denied = decide(policy, "pick", {"c": "é"})
    assert (denied.allow, denied.rule) == (False, "engine/input")
    assert decide(policy, "pick", {"c": "a"}).allow  # the denial did not poison the cache
