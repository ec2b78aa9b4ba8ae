"""Bounded fuzzing of what reads a line: the strict parser, the id splicer, and the relay core on
arbitrary bytes. Whatever arrives, the only failure is a ParseError, ids are replaced and nothing else,
and everything the core writes is strict JSON."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import regoguard
from regoguard.engine import Engine
from regoguard.guard import Guard
from regoguard.proxy import ids, jsonrpc
from regoguard.proxy.core import RelayCore
from regoguard.proxy.lines import OVERSIZE, LineSplitter, read_line
from regoguard.proxy.session import Session

FUZZ = settings(max_examples=300, deadline=None)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                      max_leaves=12)
layouts = st.sampled_from([{}, {"separators": (",", ":")}, {"indent": 1}, {"separators": (" , ", " : ")},
                           {"ensure_ascii": False}])


def messages() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "id": scalars, "method": st.text(max_size=10)},
                                 optional={"params": values, "id\u00e9": values})


@FUZZ
@given(st.binary(max_size=200))
def test_the_parser_only_ever_raises_parse_error(data: bytes) -> None:
    with contextlib.suppress(jsonrpc.ParseError):
        jsonrpc.loads(data)
    ids.salvage_id(data)  # never raises


@FUZZ
@given(messages(), layouts, st.integers(0, 10**12), st.data())
def test_with_id_replaces_the_id_and_nothing_else(msg: dict[str, Any], layout: dict[str, Any], new_id: int,
                                                   data: st.DataObject) -> None:
    keys = data.draw(st.permutations(list(msg)))
    text = json.dumps({k: msg[k] for k in keys}, **layout)
    assert json.loads(ids.raw_id(text) or "0") == msg["id"]
    replaced = ids.with_id(text, str(new_id))
    assert json.loads(replaced) == {**msg, "id": new_id}
    begin, end = ids.member_span(text, "id") or (0, 0)
    assert replaced[:begin] == text[:begin] and replaced[begin + len(str(new_id)):] == text[end:]


@FUZZ
@given(st.lists(values, max_size=5), layouts)
def test_element_spans_cover_each_entry(batch: list[Any], layout: dict[str, Any]) -> None:
    text = json.dumps(batch, **layout)
    spans = ids.element_spans(text)
    assert [json.loads(text[b:e]) for b, e in spans] == batch
    assert json.loads(ids.splice(text, spans, [text[b:e] for b, e in spans])) == batch


_core_engine: Engine | None = None


def _core() -> RelayCore:
    global _core_engine
    if _core_engine is None:
        _core_engine = Engine(regoguard.compile_policy(regoguard.load_policy_text("hide: [secret]\n", "f.yaml")))
    return RelayCore(Guard(_core_engine), Session("s", "p"))


line_parts = st.sampled_from([b'{"jsonrpc":"2.0",', b'"id":', b'"method":"tools/call",', b'"params":',
                              b'{"name":"secret","arguments":{}}', b'"\\ud800"', b"1" * 30, b"[", b"]", b"{",
                              b"}", b",", b":", b"null", b'"x"', b"\\", b"\r", b" ", b"1e400", b"\xff"])


@settings(max_examples=300, deadline=None)
@given(st.lists(line_parts, max_size=12).map(b"".join))
def test_the_core_answers_any_line_with_strict_json_and_never_forwards_a_hidden_call(line: bytes) -> None:
    core = _core()
    out = core.client_line(line)
    for item in out.to_client:
        jsonrpc.loads(item.data)  # strict JSON, or this raises
    for data in out.to_server:
        msg = jsonrpc.loads(data)
        for entry in msg if isinstance(msg, list) else [msg]:
            assert not (isinstance(entry, dict) and entry.get("method") == "tools/call"
                        and isinstance(entry.get("params"), dict) and entry["params"].get("name") == "secret")


def test_a_denial_names_its_rule_once() -> None:
    from regoguard.decision import Decision
    from regoguard.guard import Verdict
    from regoguard.proxy.replies import denial_reply

    decision = Decision.deny("t/r", 'Policy rule "t/r" denied the call: args.x lte 1 does not hold')
    answer = json.loads(denial_reply('"a"', {"id": "a"}, "t", Verdict("d-1", decision)))
    text = answer["result"]["content"][0]["text"]
    assert text == "[regoguard] Tool call 't' denied by policy rule 't/r': args.x lte 1 does not hold"
    assert answer["result"]["_meta"]["regoguard/decision"]["reason"] == decision.message  # kept whole for machines


def _items(items: list[Any]) -> list[Any]:
    return [("oversize", item.size, item.head) if isinstance(item, OVERSIZE) else item for item in items]


async def _by_read_line(chunks: list[bytes], limit: int) -> list[Any]:
    reader = asyncio.StreamReader(limit=limit)
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    out = []
    while (line := await read_line(reader)) is not None:
        out.append(line)
    return _items(out)


@FUZZ
@given(st.binary(max_size=80).map(lambda b: bytes(b"ab\n"[x % 3] for x in b)), st.integers(1, 12), st.data())
def test_the_direct_relay_splits_lines_as_the_stream_reader_does(data: bytes, limit: int,
                                                                 draw: st.DataObject) -> None:
    """The direct relay's splitter gives the same lines and oversize markers as ``read_line`` on a stream
    reader (the awaited relay), however the bytes are cut into reads."""
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=6)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]
    splitter = LineSplitter(limit)
    got: list[Any] = []
    for chunk in chunks:
        got += splitter.feed(chunk)
    assert _items(got + splitter.end()) == asyncio.run(_by_read_line(chunks, limit))


def test_read_line_keeps_only_the_start_of_a_line_it_skips() -> None:
    """A server printing one endless line must cost the limit, not the line: only its first HEAD_BYTES are
    kept (they were all kept until the newline, 446 MB for a 400 MB line)."""
    import tracemalloc

    from regoguard.proxy.lines import HEAD_BYTES

    async def run() -> tuple[Any, int]:
        reader = asyncio.StreamReader(limit=64 * 1024)
        chunk = b"x" * 65536

        async def produce() -> None:
            for _ in range(512):  # 32 MiB, fed as the reader drains
                reader.feed_data(chunk)
                await asyncio.sleep(0)
            reader.feed_data(b"\n")
            reader.feed_eof()

        tracemalloc.start()
        task = asyncio.ensure_future(produce())
        item = await read_line(reader)
        await task
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return item, peak

    item, peak = asyncio.run(run())
    assert isinstance(item, OVERSIZE) and item.size == 512 * 65536 + 1 and item.head == b"x" * HEAD_BYTES
    assert peak < 8 * 1024 * 1024, peak
