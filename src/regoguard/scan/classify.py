"""Risk groups for ``regoguard scan``: which starter rules a tool gets, guessed from what the server says.

A starter policy is only useful if a reviewer can trust its mistakes to be on the safe side, so the
classification is built to err towards the more dangerous group and to say why it chose each one.

Groups, most dangerous first: ``financial`` > ``destructive`` > ``execute`` > ``write`` > ``read``.

How a tool's group is decided. First its words give a verdict (step 1); then the first of steps 2-7
that applies decides:

1. Words. The name is split into words (``snake_case``, ``kebab-case``, ``camelCase``, dots and spaces;
   ``getHTTPResponse`` is get/http/response) and each word is looked up in the verb lists below (a
   plural or third-person ``-s``/``-es`` is tried too). The most dangerous word wins, except that a
   name whose first known word is a read verb (``list_invoices``, ``get_workflow_run``,
   ``stripe_list_refunds``) reads: its other words are the objects it reads, not actions. A destructive
   word still counts anywhere (``get_and_delete`` deletes), and so does every word of a name that chains
   verbs (``fetch_and_run``, ``get_or_create``). Only a name with no known word falls back to the first
   sentence of the description, read the same way except that a read verb counts only as its first
   word ("Get the time" reads; "A name YAML would read as a boolean" does not).
2. Money first: a financial word makes the tool ``financial`` whatever its annotations say, because
   ``readOnlyHint`` cannot make a refund safe.
3. An explicit ``destructiveHint: true`` makes it ``destructive`` (even beside ``readOnlyHint: true``:
   when the hints contradict each other, the more dangerous one wins).
4. A destructive or execute word keeps its group: hints never relax those two (the MCP specification
   says hints from an untrusted server must not drive decisions, and these are the groups where a wrong
   guess is expensive; ``destructiveHint: false`` on ``delete_x`` is noted, not obeyed).
5. ``readOnlyHint: true`` makes the tool ``read``, even against a write word (``update_index`` marked
   read-only). Between read and write the starter rules differ only in how loose the rate limit is, so
   the server author's word is worth more than a guess from a verb.
6. ``readOnlyHint: false`` makes a read-looking or unknown tool ``write``: a hint may always raise risk.
7. Otherwise the words decide; a tool with no known word and no hint is ``write`` (safer than read).

``idempotentHint`` and ``openWorldHint`` do not change the group; they are shown in the comment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Group = Literal["financial", "destructive", "execute", "write", "read"]

GROUPS: tuple[Group, ...] = ("destructive", "financial", "execute", "write", "read")
"""Every group, in the order a reviewer should read them (the ones denied outright first)."""

_SEVERITY: dict[Group, int] = {"read": 0, "write": 1, "execute": 2, "destructive": 3, "financial": 4}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_WORDS: dict[Group, frozenset[str]] = {
    "read": _words(
        "get list read search fetch describe show view find query lookup inspect count browse preview retrieve "
        "ls cat stat stats status info explain check diff peek validate analyze analyse"
    ),
    "write": _words(
        "create update write set post put edit move mv upload send add insert modify patch rename save push "
        "commit publish merge apply assign submit replace append copy cp make mkdir install deploy enable "
        "disable start stop restart close lock unlock import sync register approve reject invite schedule "
        "trigger click type fill navigate"
    ),
    "execute": _words(
        "exec execute run rerun shell command cmd eval evaluate spawn script bash sh zsh powershell pwsh terminal "
        "subprocess invoke interpret interpreter repl sql python javascript launch"
    ),
    "destructive": _words(
        "delete del remove rm rmdir unlink drop destroy purge kill revoke wipe truncate erase terminate clear "
        "reset uninstall shred expunge cancel discard prune overwrite"
    ),
    "financial": _words(
        "pay payment charge refund transfer payout invoice purchase buy sell trade withdraw withdrawal checkout "
        "money billing bill debit credit donate fund remit"
    ),
}

_CONJUNCTIONS = frozenset({"and", "or", "then", "plus"})

# Acronym before a capitalised word (HTTPResponse -> HTTP), a capitalised or lower-case word, an acronym,
# or digits. Applied to ASCII chunks only; other scripts keep their chunk whole.
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_SEPARATORS = re.compile(r"[\W_]+")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)|\n")


@dataclass(frozen=True)
class ToolInfo:
    """What scan knows about one tool, independent of the SDK's types (so the classifier is testable)."""

    name: str
    description: str | None = None
    required: tuple[str, ...] = ()
    arguments: tuple[str, ...] = ()
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None


@dataclass(frozen=True)
class WordVerdict:
    """The group the words point to, and the word (and where it was found) that decided it."""

    group: Group
    word: str
    source: Literal["name", "description"]

    def __str__(self) -> str:
        return f'{self.source} word "{self.word}"'


@dataclass(frozen=True)
class Classification:
    group: Group
    reason: str
    notes: tuple[str, ...] = ()


def split_words(text: str) -> list[str]:
    """Lower-case words of a tool name or sentence: ``getHTTPResponse-v2`` -> get, http, response, v, 2."""
    words: list[str] = []
    for chunk in _SEPARATORS.split(text):
        if not chunk:
            continue
        if chunk.isascii():
            words.extend(w.lower() for w in _CAMEL.findall(chunk))
        else:
            words.append(chunk.lower())
    return words


def word_group(word: str) -> tuple[Group, str] | None:
    """The group of one word and the list entry it matched (``deletes`` matches ``delete``)."""
    for candidate in (word, word[:-1] if word.endswith("s") else "", word[:-2] if word.endswith("es") else ""):
        if not candidate:
            continue
        for group in sorted(_WORDS, key=lambda g: -_SEVERITY[g]):
            if candidate in _WORDS[group]:
                return group, candidate
    return None


def classify_words(words: list[str], source: Literal["name", "description"]) -> WordVerdict | None:
    """The group the words point to (see the module docstring, step 1), or None if no word is known."""
    known = [(group, entry) for i, w in enumerate(words) if (hit := word_group(w)) is not None
             for group, entry in [hit] if source == "name" or group != "read" or i == 0]
    if not known:
        return None
    destructive = next((entry for group, entry in known if group == "destructive"), None)
    if destructive is not None and not any(g == "financial" for g, _ in known):
        return WordVerdict("destructive", destructive, source)
    first_group, first_entry = known[0]
    if first_group == "read" and destructive is None and not _CONJUNCTIONS.intersection(words):
        return WordVerdict("read", first_entry, source)
    group, entry = max(known, key=lambda hit: _SEVERITY[hit[0]])
    return WordVerdict(group, entry, source)


def first_sentence(description: str | None) -> str:
    if not description:
        return ""
    text = description.strip()
    match = _SENTENCE_END.search(text)
    return text[: match.start()] if match else text


def classify_text(name: str, description: str | None) -> WordVerdict | None:
    """What the name says; only a name with no known word falls back to the description's first sentence."""
    return classify_words(split_words(name), "name") or classify_words(
        split_words(first_sentence(description)), "description"
    )


def classify(tool: ToolInfo) -> Classification:
    """The tool's group, with the reason and any contradiction a reviewer should look at."""
    words = classify_text(tool.name, tool.description)
    if words is not None and words.group == "financial":
        notes = ["readOnlyHint: true ignored: the tool looks like it moves money"] if tool.read_only else []
        return Classification("financial", str(words), tuple(notes))
    if tool.destructive is True:
        return _declared_destructive(tool, words)
    if words is not None and words.group in ("destructive", "execute"):
        return _unrelaxed(tool, words)
    if tool.read_only is True:
        notes = [f"readOnlyHint: true outranks {words} (write)"] if words is not None and words.group == "write" else []
        return Classification("read", "readOnlyHint: true", tuple(notes))
    if tool.read_only is False and (words is None or words.group == "read"):
        notes = [f"readOnlyHint: false outranks {words} (read)"] if words is not None else []
        return Classification("write", "readOnlyHint: false", tuple(notes))
    if words is not None:
        return Classification(words.group, str(words))
    return Classification("write", "no hint or known word: unknown tools count as write")


def _declared_destructive(tool: ToolInfo, words: WordVerdict | None) -> Classification:
    notes: list[str] = []
    if tool.read_only:
        notes.append("readOnlyHint: true contradicts destructiveHint: true; the more dangerous hint wins")
    elif words is not None and words.group != "destructive":
        notes.append(f"destructiveHint: true outranks {words} ({words.group})")
    return Classification("destructive", "destructiveHint: true", tuple(notes))


def _unrelaxed(tool: ToolInfo, words: WordVerdict) -> Classification:
    """A destructive or execute word: hints that would relax it are noted, not obeyed."""
    notes: list[str] = []
    if tool.read_only is True:
        notes.append(f"readOnlyHint: true ignored: hints never relax {words.group} tools")
    if tool.destructive is False and words.group == "destructive":
        notes.append("destructiveHint: false ignored: hints never relax destructive tools")
    return Classification(words.group, str(words), tuple(notes))
