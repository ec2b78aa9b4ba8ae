# regoguard's decision library: the generic rules every compiled policy is decided by.
#
# A compiled policy (`regoguard compile`) is one module, `package regoguard`, defining `settings`: per
# tool, its rules, conditions and limits, as data. This library reads `data.regoguard.settings` and the
# call in `input`, and answers `data.regoguard.lib.decision`:
#
#   {"allow": bool, "action": "allow" | "deny",
#    "reasons": [{"rule": id, "message": text, "detail": [what failed, ...]}, ...],   # first one is shown
#    "charges": [{"counter", "scope", "cost", "capacity", "window", "strict", "rule", "message"}, ...]}
#
# Why generic rules over per-tool data: one Rego rule per tool makes every query walk every tool, while a
# lookup by tool name keeps a decision flat from 10 to 1,000 tools (see benchmarks/). Rules rather than
# functions where possible: a rule is evaluated once per query, a function once per call.
#
# Strict Rego v1 and only standard built-ins, so the same modules run under OPA:
#   opa eval -d rego/regoguard/lib.rego -d compiled/payments.rego -i call.json data.regoguard.lib.decision
package regoguard.lib

import rego.v1

settings := data.regoguard.settings

name := input.tool.name

default args := {}

args := input.tool.arguments if is_object(input.tool.arguments)

decision := {
	"allow": count(reasons) == 0,
	"action": action,
	"reasons": reasons,
	"charges": charges,
}

default action := "deny"

action := "allow" if count(reasons) == 0

# --- which rules apply ----------------------------------------------------------------------------

# The tool's entry: {"rules": [...]}, {"hidden": true} or {"unlisted": true} (under default: deny).
# An exact key wins; else the first glob (in file order) that matches the whole name; else `unlisted`.
entry := settings.tools[name]

entry := settings.globs[first_glob].entry if not settings.tools[name]

entry := settings.unlisted if {
	not settings.tools[name]
	not first_glob
}

first_glob := min(hits) if {
	# `some i` then an index, not `some i, g in`: rego-cpp 1.5 rejects the two-variable form in comprehensions
	hits := [i |
		some i
		g := settings.globs[i]
		regex.match(g.regex, name)
	]
	count(hits) > 0
}

# A tool's own rules run first, then the "*" rules.
rules := array.concat(entry.rules, settings.wildcard)

reasons := [{
	"rule": "hide",
	"message": concat("", ["Tool \"", name, "\" is hidden by policy"]),
	"detail": ["the tool is listed under hide"],
}] if entry.hidden

reasons := [{
	"rule": "default",
	"message": concat("", ["Tool \"", name, "\" is not allowed by policy (default: deny)"]),
	"detail": ["the tool is not listed under tools"],
}] if entry.unlisted

reasons := [{"rule": r.id, "message": reason_message(r), "detail": failures(r)} |
	some r in rules
	fails(r)
] if entry.rules

# The rule's own on_deny/reason; without one, say what failed.
reason_message(r) := r.message if r.custom_message

reason_message(r) := concat("", ["Policy rule \"", r.id, "\" denied the call: ", failures(r)[0]]) if {
	not r.custom_message
	r.action != "deny"
}

reason_message(r) := r.message if {
	not r.custom_message
	r.action == "deny"
}

# --- why a rule fails -----------------------------------------------------------------------------

fails(r) if r.action == "deny"

fails(r) if {
	some c in r.conditions
	not holds(c)
}

fails(r) if {
	r.validate_required
	not required_present
}

fails(r) if {
	r.limit.cost_from
	not cost_of(r.limit)
}

# Only for rules that fail: the words saying why.
failures(r) := array.concat(
	array.concat(deny_failures(r), condition_failures(r)),
	array.concat(validate_failures(r), cost_failures(r)),
)

deny_failures(r) := ["the rule denies every call"] if r.action == "deny"

deny_failures(r) := [] if r.action != "deny"

condition_failures(r) := [concat("", [c.text, " does not hold"]) |
	some c in r.conditions
	not holds(c)
]

validate_failures(r) := [] if not r.validate_required

validate_failures(r) := ["the tool's inputSchema is unknown, so its required arguments cannot be checked"] if {
	r.validate_required
	not is_object(input.schema)
}

validate_failures(r) := ["the tool's inputSchema has a malformed `required` list"] if {
	r.validate_required
	is_object(input.schema)
	not valid_required
}

validate_failures(r) := [concat("", ["missing required argument \"", k, "\""]) |
	some k in required
	not has_key(args, k)
] if {
	r.validate_required
	valid_required
}

default required := []

required := input.schema.required

valid_required if {
	is_object(input.schema)
	is_array(required)
	every k in required {
		is_string(k)
	}
}

required_present if {
	valid_required
	every k in required {
		has_key(args, k)
	}
}

cost_failures(r) := [] if not r.limit.cost_from

cost_failures(r) := [] if cost_of(r.limit)

cost_failures(r) := [concat("", [
	r.limit.cost_from.text,
	" must be a non-negative number: it is the cost counted against ", r.limit.counter,
])] if {
	r.limit.cost_from
	not cost_of(r.limit)
}

has_key(obj, k) if _ = obj[k]

# --- charges: the tokens an allowed call takes (the guard takes them, not this library) -----------

default charges := []

charges := [{
	"counter": r.limit.counter,
	"scope": r.limit.scope,
	"cost": cost_of(r.limit),
	"capacity": r.limit.capacity,
	"window": r.limit.window,
	"strict": r.limit.strict,
	"rule": r.id,
	"message": r.message,
} |
	some r in rules
	r.limit
] if count(reasons) == 0

cost_of(l) := l.cost if not l.cost_from

cost_of(l) := v if {
	v := arg_at(l.cost_from)
	is_number(v)
	v >= 0
}

# --- conditions -----------------------------------------------------------------------------------

# The argument a condition (or a cost) reads; null when absent. A digit segment indexes a list (`path`
# holds it as a number) or, failing that, names an object key (`key_path` holds every segment as text).
arg_at(c) := object.get(args, c.path, object.get(args, c.key_path, null))

# A missing or null argument fails every operator but `exists`.
holds(c) if {
	c.op != "exists"
	v := arg_at(c)
	v != null
	op_holds(c, v)
}

holds(c) if {
	c.op == "exists"
	c.value == true
	arg_at(c) != null
}

holds(c) if {
	c.op == "exists"
	c.value == false
	arg_at(c) == null
}

op_holds(c, v) if {
	c.op == "eq"
	eq_match(v, c.match)
}

op_holds(c, v) if {
	c.op == "neq"
	not eq_match(v, c.match)
}

op_holds(c, v) if {
	c.op == "in"
	some m in c.matches
	eq_match(v, m)
}

op_holds(c, v) if {
	c.op == "not_in"
	not in_any(v, c.matches)
}

op_holds(c, v) if {
	c.op == "lt"
	is_number(v)
	v < c.value
}

op_holds(c, v) if {
	c.op == "lte"
	is_number(v)
	v <= c.value
}

op_holds(c, v) if {
	c.op == "gt"
	is_number(v)
	v > c.value
}

op_holds(c, v) if {
	c.op == "gte"
	is_number(v)
	v >= c.value
}

op_holds(c, v) if {
	c.op in {"regex", "glob"}
	regex_subject(v)
	regex.match(c.regex, v)
}

op_holds(c, v) if {
	c.op == "not_regex"
	regex_subject(v)
	not regex.match(c.regex, v)
}

op_holds(c, v) if {
	c.op == "contains"
	is_string(v)
	is_string(c.value)
	contains(v, c.value)
}

op_holds(c, v) if {
	c.op == "contains"
	is_array(v)
	some e in v
	eq_match(e, c.match)
}

op_holds(c, v) if {
	c.op == "starts_with"
	is_string(v)
	startswith(v, c.value)
}

op_holds(c, v) if {
	c.op == "ends_with"
	is_string(v)
	endswith(v, c.value)
}

op_holds(c, v) if {
	c.op == "len_lte"
	sized(v)
	count(v) <= c.value
}

op_holds(c, v) if {
	c.op == "len_gte"
	sized(v)
	count(v) >= c.value
}

sized(v) if is_string(v)

sized(v) if is_array(v)

sized(v) if is_object(v)

# Strings longer than 1 MiB never reach a regex: the embedded engine's std::regex recurses per character.
regex_subject(v) if {
	is_string(v)
	count(v) <= 1048576
}

in_any(v, matches) if {
	some m in matches
	eq_match(v, m)
}

# `eq`, precomputed by the compiler into a matcher: two numbers compare as numbers, a number and a
# string as text, a boolean and a string as text, anything else structurally.
eq_match(v, m) if {
	is_number(v)
	v == m.num
}

eq_match(v, m) if {
	is_string(v)
	v == m.text
}

eq_match(v, m) if {
	is_boolean(v)
	v == m.bool
}

eq_match(v, m) if {
	not is_number(v)
	not is_string(v)
	not is_boolean(v)
	v == m.value
}

