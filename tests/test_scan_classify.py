"""``regoguard scan`` without a server: splitting names into words, the risk groups and their precedence,
and the renderer's promise that whatever the server calls its tools, the file it writes loads and means
what it says (checked by the real loader, compiler and engine).
"""

from __future__ import annotations

import itertools

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers_policy import decide
from regoguard.scan import render as scan_render
from regoguard.scan.classify import (
    _WORDS,
    ToolInfo,
    classify,
    classify_text,
    first_sentence,
    split_words,
    word_group,
)
from regoguard.scan.render import (
    PolicyTooLarge,
    ScanInternalError,
    comment_text,
    render_policy,
    unwritable_reason,
    verify,
    yaml_key,
)

# --------------------------------------------------------------------------- words


@pytest.mark.parametrize(("name", "words"), [
    ("delete_record", ["delete", "record"]),
    ("list-invoices", ["list", "invoices"]),
    ("evalScript", ["eval", "script"]),
    ("getHTTPResponse", ["get", "http", "response"]),
    ("HTMLParser2", ["html", "parser", "2"]),
    ("stripe.create_refund", ["stripe", "create", "refund"]),
    ("weird: name", ["weird", "name"]),
    ("--Run__Shell--", ["run", "shell"]),
    ("café_lookup", ["café", "lookup"]),
    ("", []),
])
def test_split_words(name: str, words: list[str]) -> None:
    assert split_words(name) == words


@pytest.mark.parametrize(("word", "expected"), [
    ("delete", ("destructive", "delete")),
    ("deletes", ("destructive", "delete")),
    ("searches", ("read", "search")),
    ("invoices", ("financial", "invoice")),
    ("status", ("read", "status")),
    ("runs", ("execute", "run")),
    ("deleted", None),  # a past participle describes state (get_deleted_items), it does not delete
    ("frobnicate", None),
])
def test_word_group(word: str, expected: tuple[str, str] | None) -> None:
    assert word_group(word) == expected


def test_each_word_is_in_one_group_only() -> None:
    for (a, wa), (b, wb) in itertools.combinations(_WORDS.items(), 2):
        assert not wa & wb, f"{a} and {b} share {sorted(wa & wb)}"


@pytest.mark.parametrize(("name", "group", "word"), [
    ("delete_record", "destructive", "delete"),
    ("customer-delete", "destructive", "delete"),
    ("get_and_delete", "destructive", "delete"),  # a destructive word counts anywhere
    ("list_records", "read", "list"),
    ("session_list", "read", "list"),
    ("list_invoices", "read", "list"),  # a leading read verb: the invoices are what it reads
    ("stripe_list_refunds", "read", "list"),
    ("get_workflow_run", "read", "get"),
    ("get_or_create", "write", "create"),  # chained verbs: every word counts
    ("fetch_and_run", "execute", "run"),
    ("create_refund", "financial", "refund"),
    ("delete_payment_method", "financial", "payment"),
    ("run_query", "execute", "run"),
    ("page_eval_js", "execute", "eval"),
    ("send_email", "write", "send"),
])
def test_name_words(name: str, group: str, word: str) -> None:
    verdict = classify_text(name, None)
    assert verdict is not None and (verdict.group, verdict.word, verdict.source) == (group, word, "name")


def test_the_description_speaks_only_when_the_name_has_no_known_word() -> None:
    verdict = classify_text("frobnicate", "Deletes every record. Then reads a list.")
    assert verdict is not None and (verdict.group, verdict.source) == ("destructive", "description")
    assert classify_text("get_x", "Deletes every record.") is not None
    assert classify_text("get_x", "Deletes every record.").group == "read"  # type: ignore[union-attr]
    # a read verb in a description counts only as its first word
    assert classify_text("yes", "A name YAML would read as a boolean.") is None
    assert classify_text("tz", "Get the time. Never deletes anything.").group == "read"  # type: ignore[union-attr]


def test_first_sentence() -> None:
    assert first_sentence("Get the time. Then more.") == "Get the time"
    assert first_sentence("Line one\nline two") == "Line one"
    assert first_sentence("v1.2 is out") == "v1.2 is out"
    assert first_sentence(None) == ""


# --------------------------------------------------------------------------- precedence


@pytest.mark.parametrize(("tool", "group", "reason", "note"), [
    (ToolInfo("refund_payment", read_only=True), "financial", 'name word "refund"', "readOnlyHint: true ignored"),
    (ToolInfo("create_invoice", destructive=True), "financial", 'name word "invoice"', None),
    (ToolInfo("get_record", destructive=True), "destructive", "destructiveHint: true", "outranks"),
    (ToolInfo("list_x", read_only=True, destructive=True), "destructive", "destructiveHint: true", "contradicts"),
    (ToolInfo("purge_cache", destructive=False), "destructive", 'name word "purge"', "destructiveHint: false ignored"),
    (ToolInfo("delete_x", read_only=True), "destructive", 'name word "delete"', "readOnlyHint: true ignored"),
    (ToolInfo("run_command", read_only=True), "execute", 'name word "run"', "readOnlyHint: true ignored"),
    (ToolInfo("update_index", read_only=True), "read", "readOnlyHint: true", 'outranks name word "update"'),
    (ToolInfo("page_screenshot", read_only=True), "read", "readOnlyHint: true", None),
    (ToolInfo("fetch_report", read_only=False), "write", "readOnlyHint: false", 'outranks name word "fetch"'),
    (ToolInfo("frobnicate", read_only=False), "write", "readOnlyHint: false", None),
    (ToolInfo("get_record"), "read", 'name word "get"', None),
    (ToolInfo("send_email", idempotent=True, open_world=True), "write", 'name word "send"', None),
    (ToolInfo("frobnicate"), "write", "unknown tools count as write", None),
    (ToolInfo("frobnicate", "Evaluate a Python expression."), "execute", 'description word "evaluate"', None),
])
def test_precedence(tool: ToolInfo, group: str, reason: str, note: str | None) -> None:
    verdict = classify(tool)
    assert verdict.group == group
    assert reason in verdict.reason
    if note is None:
        assert verdict.notes == ()
    else:
        assert any(note in n for n in verdict.notes), verdict.notes


# --------------------------------------------------------------------------- rendering


def test_comment_text_is_one_visible_line() -> None:
    text = "Delete it.\nNext line\u2028default: allow\x85x\u202eevil\u200b\ud800 # ok: yes\t\x00end"
    shown = comment_text(text, 200)
    assert shown == "Delete it. Next line default: allow x evil # ok: yes end"
    assert comment_text("x" * 50, 10) == "x" * 9 + "…"


@pytest.mark.parametrize("name", ["delete_x", "weird: name", "-dash", "yes", "no", "null", "1.5", "true", "~",
                                  "café", "delеte_x", "a\u2028b", "x\U0001f600", " padded ", "a#b", "&anchor",
                                  "!tag", "%x", "@x", "`x", "{x}", "x,y", "'quoted'", "é" * 100])
def test_yaml_key_reads_back_as_the_name(name: str) -> None:
    assert unwritable_reason(name) is None
    key = yaml_key(name)
    assert key.isascii() and "\n" not in key
    assert yaml.safe_load(f"{key}: 1") == {name: 1}


@pytest.mark.parametrize(("name", "reason"), [
    ("", "empty"), ("  ", "empty"), ('a"b', "quote"), ("a\\b", "backslash"), ("a\nb", "control"),
    ("a\x7fb", "control"), ("*", "glob"), ("get_*", "glob"), ("file_?", "glob"), ("[x]", "glob"),
    ("\ud800x", "Unicode"), ("x" * 1001, "longer"), ("é" * 300, "longer"),
])
def test_unwritable_names(name: str, reason: str) -> None:
    got = unwritable_reason(name)
    assert got is not None and reason in got


def _policy(tools: list[ToolInfo]) -> str:
    rendered = render_policy("test-server 1.0", tools)
    verify(rendered)
    return rendered.text


def test_the_engine_reads_each_name_exactly() -> None:
    names = ["café_get", "delete_x", "weird: name", "yes", "-dash", "delеte_y", "run_it"]
    text = _policy([ToolInfo(n) for n in names])
    assert decide(text, "café_get").allow
    assert decide(text, "weird: name").allow
    assert decide(text, "yes").allow
    assert decide(text, "-dash").allow
    assert decide(text, "run_it").allow  # rate-limited, not denied
    assert not decide(text, "delete_x").allow
    assert not decide(text, "cafe_get").allow  # not listed: default deny
    assert not decide(text, "weird:name").allow
    # the Cyrillic look-alike is its own tool, written escaped so the reviewer sees it
    assert "\\u0435" in text.lower() and decide(text, "delеte_y").allow
    assert not decide(text, "delete_y").allow


def test_unwritable_tools_are_listed_and_denied() -> None:
    rendered = render_policy("s", [ToolInfo('bad"name'), ToolInfo("glob*"), ToolInfo("ok_tool")])
    verify(rendered)
    assert set(rendered.groups) == {"ok_tool"}
    assert [name for name, _ in rendered.skipped] == ['bad"name', "glob*"]
    assert '# "bad\\"name": it holds a quote' in rendered.text
    assert not decide(rendered.text, 'bad"name').allow
    assert not decide(rendered.text, "globX").allow


def test_names_up_to_the_key_limit_load() -> None:
    names = ["x" * 1000, "é" * 249, "-" + "y" * 997]
    rendered = render_policy("s", [ToolInfo(n) for n in names])
    verify(rendered)
    assert set(rendered.groups) == set(names)


def test_no_tools_is_still_a_policy() -> None:
    rendered = render_policy("empty", [])
    verify(rendered)
    assert "tools: {}" in rendered.text


def test_verify_catches_a_policy_that_says_something_else() -> None:
    rendered = render_policy("s", [ToolInfo("delete_x"), ToolInfo("get_y")])
    with pytest.raises(ScanInternalError, match="other tools"):
        verify(scan_render.Rendered(rendered.text.replace("  get_y:", "  get_z:"), rendered.groups, ()))
    with pytest.raises(ScanInternalError, match="do not say"):
        verify(scan_render.Rendered(rendered.text.replace("120/minute", "121/minute"), rendered.groups, ()))
    with pytest.raises(ScanInternalError, match="does not load"):
        verify(scan_render.Rendered(rendered.text.replace("action: deny", "action: maybe"), rendered.groups, ()))


def test_verify_refuses_a_policy_over_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan_render, "MAX_POLICY_BYTES", 1000)
    with pytest.raises(PolicyTooLarge, match="over the 1000-byte limit"):
        verify(render_policy("s", [ToolInfo(f"tool_{i}") for i in range(20)]))


_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from("\"\\*?[:#-\n\u2028\u202e\x85 '{}&!|>"), max_size=40)
_TOOLS = st.lists(
    st.builds(ToolInfo, name=_TEXT, description=st.none() | _TEXT, required=st.lists(_TEXT, max_size=3).map(tuple),
              arguments=st.lists(_TEXT, max_size=3).map(tuple), read_only=st.none() | st.booleans(),
              destructive=st.none() | st.booleans()),
    max_size=8, unique_by=lambda t: t.name,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TOOLS, _TEXT)
def test_any_server_gets_a_policy_that_loads(tools: list[ToolInfo], server: str) -> None:
    """Whatever the names and descriptions, the file loads, and holds each writable tool under its own name."""
    rendered = render_policy(server, tools)
    verify(rendered)
    assert set(rendered.groups) | {name for name, _ in rendered.skipped} == {t.name for t in tools}
    assert all(unwritable_reason(name) for name, _ in rendered.skipped)
