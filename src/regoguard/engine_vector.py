"""Reading a decider's vector verdict (:mod:`regoguard.compiler.vector`): one term per rule, combined
here into the decision the committed module's ``decision`` rule gives (the OPA agreement test holds the
two together). Strict: a term of the wrong type, a vector of the wrong length or anything unexpected is
an ``engine/malformed`` denial, never an allow.
"""

from __future__ import annotations

from typing import Any

from regoguard.compiler.sections import COST_DETAIL
from regoguard.compiler.vector import Spec
from regoguard.decision import Charge, Decision, Reason
from regoguard.engine_io import NAMED_MESSAGES, charges_of, engine_failure, expression

_PREFIX = '{"expressions":[['
_SUFFIX = "]]}"


class VectorReader:
    """Reads one decider's vectors: ``spec`` from its section, ``entry`` its compiled settings entry."""

    def __init__(self, spec: Spec, entry: dict[str, Any], fixed: tuple[Charge, ...] | None) -> None:
        self.spec = spec
        self.entry = entry
        self.fixed = fixed
        # rego-cpp's exact text for the commonest answer: every rule holds, no approval given (a decider
        # with argument-derived costs has none: its costs are part of the answer)
        self.plain = None if fixed is None else \
            _PREFIX + ",".join("false" if s["kind"] == "granted" else "true" for s in spec) + _SUFFIX

    def read(self, raw: str, name: str, args: Any = None) -> Decision:
        """The decision ``raw`` (regopy's output text) gives for a call to ``name`` with ``args``."""
        if raw == self.plain:
            return Decision(True, "allow", (), self.fixed or (), extra={"from_policy": True})
        failed = engine_failure(raw)
        if failed is not None:
            return failed
        try:
            terms = self._terms(raw)
            if len(terms) != len(self.spec):
                raise ValueError(f"the verdict has {len(terms)} terms, the decider {len(self.spec)}")
            return self._combine(terms, name, args)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return Decision.deny("engine/malformed", f"the policy gave a malformed verdict: {exc}")

    def _terms(self, raw: str) -> list[Any]:
        if raw.startswith(_PREFIX) and raw.endswith(_SUFFIX):  # a vector of booleans needs no JSON parser
            inner = raw[len(_PREFIX):-len(_SUFFIX)]
            parts = inner.split(",") if inner else []
            if all(p in ("true", "false") for p in parts):
                return [p == "true" for p in parts]
        terms = expression(raw)
        if not isinstance(terms, list):
            raise ValueError("the verdict is not a vector")
        return terms

    def _combine(self, terms: list[Any], name: str, args: Any) -> Decision:
        denials: list[tuple[int, dict[str, Any]]] = []
        held: list[dict[str, Any]] = []
        granted = False
        costs: list[Any] = []
        for term, s in zip(terms, self.spec, strict=True):
            kind = s["kind"]
            if kind in ("ok", "held", "granted"):
                if term is not True and term is not False:
                    raise ValueError(f"a {kind} term is not a boolean")
                if kind == "granted":
                    granted = term
                elif term is False and kind == "ok":
                    denials.append((s["at"], s["reason"]))
                elif term is False:
                    held.append(s["reason"])
            elif kind == "costs":
                if not isinstance(term, list):
                    raise ValueError("the costs are not a list")
                costs = term
            elif term is not True:
                detail = _checks_detail(term, s["texts"]) if kind == "checks" else _detail(term)
                denials.append((s["at"], {"rule": s["rule"], "message": _message(s, detail), "detail": detail}))
        if denials:
            denials.sort(key=lambda d: d[0])
            return _denial("deny", [r for _, r in denials], name)
        if held and not granted:
            return _denial("require_approval", held, name)
        charges = self.fixed if self.fixed is not None else tuple(charges_of(costs, self.entry, args))
        return Decision(True, "allow", (), charges, extra={"from_policy": True})


def _checks_detail(term: Any, texts: list[list[str]]) -> list[str]:
    """A rule of several checks: one count per check (how often its body holds, 0 when it fails); the
    texts of those that fail."""
    if not isinstance(term, list) or len(term) != len(texts) or any(type(c) is not int or c < 0 for c in term):
        raise ValueError("a rule's checks are not one count per check")
    detail = [t for c, ts in zip(term, texts, strict=True) if c == 0 for t in ts]
    if not detail:
        raise ValueError("a rule failed with every check holding")
    return detail


def _detail(term: Any) -> list[str]:
    if not isinstance(term, list) or not term or not all(isinstance(t, str) for t in term):
        raise ValueError("a rule's detail is not a list of text")
    return list(term)


def _message(s: dict[str, Any], detail: list[str]) -> str:
    """As the committed module writes it: the rule's own message, else what failed first; a cost argument
    that is missing or not a number says so, whatever the rule's own message says."""
    intro = f'Policy rule "{s["rule"]}" denied the call: '
    if s["custom"] is None:
        return intro + detail[0]
    if s["cost"]:
        for t in detail:
            if t.endswith(COST_DETAIL):
                return intro + t
    return str(s["custom"])


def _denial(action: str, given: list[dict[str, Any]], name: str) -> Decision:
    reasons = tuple(Reason(r["rule"], NAMED_MESSAGES[r["rule"]].format(name) if r["rule"] in NAMED_MESSAGES
                           else r["message"]) for r in given)
    details = {r["rule"]: list(r["detail"]) for r in given}  # copies: the spec is shared
    return Decision(False, action, reasons, (), extra={"details": details, "from_policy": True})
