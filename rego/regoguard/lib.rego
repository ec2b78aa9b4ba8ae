# regoguard's decision library: the generic rules every compiled policy is decided by.
#
# A compiled policy (`regoguard compile`) is one module, `package regoguard`, defining `settings`: per
# tool name an entry holding the rules that apply to it (its own, then the "*" rules) and the limits
# they charge, as data. This library reads `data.regoguard.settings` and the call in `input`:
#
#   data.regoguard.lib.decision = {
#     "allow": bool, "action": "allow" | "deny",
#     "reasons": [{"rule": id, "message": text, "detail": [what failed, ...]}, ...],  # the first is shown
#     "charges": [{"counter", "scope", "cost", "capacity", "window", "strict", "rule", "message"}, ...]}
#
# "action" is "require_approval" when the team's Rego (custom.rego) holds the call for a human.
#
#   data.regoguard.lib.verdict = {"allow": bool, "costs": [...]}    # the engine's hot path: the same
#     decision in few words; the engine fills in the charges from the entry and asks for `decision`
#     only when a call is denied.
#
# Why generic rules over per-tool data: one Rego rule per tool makes every query walk every tool, while a
# lookup by tool name keeps a decision flat from 10 to 1,000 tools (see benchmarks/). Strict Rego v1 and
# standard built-ins only, so the same modules run under OPA:
#   opa eval -d rego/regoguard/lib.rego -d compiled/payments.rego -i call.json data.regoguard.lib.decision
package regoguard.lib

import rego.v1

name := input.tool.name

default args := {}

args := input.tool.arguments if is_object(input.tool.arguments)

decision := {
	"allow": allow,
	"action": action,
	"reasons": reasons,
	"charges": charges,
}

# The hot path reads only the YAML policy's rules; with the team's Rego loaded, the engine asks for
# `team_verdict` instead (the same decision, the team's denials and approvals included).
verdict := {"allow": policy_allow, "costs": costs}

team_verdict := {"allow": allow}

# The shape of `settings` this library reads. The compiler stamps the same number into every policy;
# a policy compiled for another shape is never allowed.
format := 2

default policy_allow := false

policy_allow if {
	count(policy_reasons) == 0
	data.regoguard.settings.format == format
}

default allow := false

allow if {
	policy_allow
	count(team_denials) == 0
	count(custom_approvals) == 0
}

default action := "deny"

action := "allow" if allow

# The team's Rego asked for a human (`approval`), and nothing denies the call outright.
action := "require_approval" if {
	count(denials) == 0
	count(custom_approvals) > 0
}

# The policy's reasons first (its first failing rule is the one shown), then the team's denials; with no
# denial, the approvals the call is held for.
denials := array.concat(policy_reasons, team_denials)

reasons := denials if count(denials) > 0

reasons := custom_approvals if count(denials) == 0

# --- which entry decides this call ------------------------------------------------------------------

# An exact key wins; else the first glob (in file order) that matches the whole name; else `unlisted`.
entry := object.get(data.regoguard.settings.tools, name, other_entry)

other_entry := data.regoguard.settings.unlisted if count(data.regoguard.settings.globs) == 0

other_entry := data.regoguard.settings.globs[first_glob].entry

other_entry := data.regoguard.settings.unlisted if {
	count(data.regoguard.settings.globs) > 0
	not first_glob
}

first_glob := min(hits) if {
	# `some i` then an index, not `some i, g in`: rego-cpp 1.5 rejects the two-variable form in comprehensions
	hits := [i |
		some i
		g := data.regoguard.settings.globs[i]
		regex.match(g.regex, name)
	]
	count(hits) > 0
}

# --- why a call is denied -----------------------------------------------------------------------------

# No string from the input is ever copied into a decision: rego-cpp writes such strings into its JSON
# output without escaping them, so a tool named `x"}],"allow":true,...` could rewrite the decision.

policy_reasons := [{
	"rule": "hide",
	"message": "The tool is hidden by policy",
	"detail": ["the tool is listed under hide"],
}] if entry.hidden

policy_reasons := [{
	"rule": "default",
	"message": "The tool is not allowed by policy (default: deny)",
	"detail": ["the tool is not listed under tools"],
}] if entry.unlisted

policy_reasons := [{"rule": r.id, "message": reason_message(r), "detail": failures(r)} |
	some r in entry.rules
	fails(r)
] if entry.rules

# A rule's data holds only the keys that apply to it, so each clause below fails fast on the others.
fails(r) if r.deny

fails(r) if {
	some c in r.conditions
	not holds(c)
}

fails(r) if {
	r.validate_required
	not required_present
}

fails(r) if {
	r.cost_from
	not cost_value(r.cost_from)
}

# The rule's own on_deny/reason; without one, say what failed.
reason_message(r) := r.message if r.custom_message

reason_message(r) := r.message if {
	not r.custom_message
	r.deny
}

reason_message(r) := concat("", ["Policy rule \"", r.id, "\" denied the call: ", failures(r)[0]]) if {
	not r.custom_message
	not r.deny
}

# Only for rules that fail: the words saying why.
failures(r) := array.concat(
	array.concat(deny_failures(r), condition_failures(r)),
	array.concat(validate_failures(r), cost_failures(r)),
)

deny_failures(r) := ["the rule denies every call"] if r.deny

deny_failures(r) := [] if not r.deny

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

cost_failures(r) := [] if not r.cost_from

cost_failures(r) := [] if cost_value(r.cost_from)

cost_failures(r) := [concat("", [r.cost_from.text, " must be a non-negative number: it is what the call costs"])] if {
	r.cost_from
	not cost_value(r.cost_from)
}

# --- validate: {required_args: true} --------------------------------------------------------------------

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

has_key(obj, k) if _ = obj[k]

# --- charges: the tokens an allowed call takes (the guard takes them, not this library) -------------

default charges := []

charges := array.concat([charge(t) | some t in entry.charges], custom_charges) if allow

charge(t) := t if not t.cost_from

charge(t) := object.union(object.remove(t, ["cost_from"]), {"cost": cost_value(t.cost_from)}) if t.cost_from

# Costs taken from arguments (increment_from), in charge order; static costs are in the entry already.
default costs := []

costs := [cost_value(t.cost_from) |
	some t in entry.charges
	t.cost_from
] if {
	policy_allow
	entry.dynamic_costs
}

cost_value(src) := v if {
	v := arg_at(src)
	is_number(v)
	v >= 0
}

# --- conditions -----------------------------------------------------------------------------------

# The argument a condition (or a cost) reads; null when absent. Paths of plain keys use object.get;
# a path with a digit segment (`key_path` present) is walked a step at a time, the digit indexing a list
# or naming an object key, whichever the value holds (rego-cpp's object.get fails on an index past the
# end of a list, rather than answering the default).
arg_at(c) := object.get(args, c.path, null) if not c.key_path

arg_at(c) := v if {
	c.key_path
	[v] := walk_path(args, c.key_path, c.path)
}

arg_at(c) := null if {
	c.key_path
	not walk_path(args, c.key_path, c.path)
}

# The value at the end of the path, wrapped in a list so that a `false` found there still counts as found
# (paths are at most 8 keys long; the loader says so).
walk_path(x, keys, idx) := [v] if {
	count(keys) == 1
	v := step(x, keys[0], idx[0])
}

walk_path(x, keys, idx) := [v] if {
	count(keys) == 2
	v := step(step(x, keys[0], idx[0]), keys[1], idx[1])
}

walk_path(x, keys, idx) := [v] if {
	count(keys) == 3
	v := step(step(step(x, keys[0], idx[0]), keys[1], idx[1]), keys[2], idx[2])
}

walk_path(x, keys, idx) := [v] if {
	count(keys) == 4
	v := step(step(step(step(x, keys[0], idx[0]), keys[1], idx[1]), keys[2], idx[2]), keys[3], idx[3])
}

walk_path(x, keys, idx) := [v] if {
	count(keys) == 5
	v := step(step(step(step(step(x, keys[0], idx[0]), keys[1], idx[1]), keys[2], idx[2]), keys[3], idx[3]), keys[4], idx[4])
}

walk_path(x, keys, idx) := [v] if {
	count(keys) == 6
	v := step(step(step(step(step(step(x, keys[0], idx[0]), keys[1], idx[1]), keys[2], idx[2]), keys[3], idx[3]), keys[4], idx[4]), keys[5], idx[5])
}

walk_path(x, keys, idx) := [v] if {
	count(keys) == 7
	v := step(step(step(step(step(step(step(x, keys[0], idx[0]), keys[1], idx[1]), keys[2], idx[2]), keys[3], idx[3]), keys[4], idx[4]), keys[5], idx[5]), keys[6], idx[6])
}

walk_path(x, keys, idx) := [v] if {
	count(keys) == 8
	v := step(step(step(step(step(step(step(step(x, keys[0], idx[0]), keys[1], idx[1]), keys[2], idx[2]), keys[3], idx[3]), keys[4], idx[4]), keys[5], idx[5]), keys[6], idx[6]), keys[7], idx[7])
}

# One step down: an object by key; a list by index (the key's digits), within bounds.
step(x, key, i) := x[key] if is_object(x)

step(x, key, i) := x[i] if {
	is_array(x)
	is_number(i)
	i < count(x)
}

# One chain, most common operators first: `else` stops at the first branch whose body holds, so a
# passing condition costs one or two branches, not one per operator. A missing or null argument fails
# every operator but `exists`.
holds(c) if {
	c.op == "lte"
	v := arg_at(c)
	is_number(v)
	v <= c.value
} else if {
	c.op == "in"
	v := arg_at(c)
	v != null
	some m in c.matches
	eq_match(v, m)
} else if {
	c.op == "eq"
	v := arg_at(c)
	v != null
	eq_match(v, c.match)
} else if {
	c.op == "regex"
	v := arg_at(c)
	regex_subject(v)
	regex.match(c.regex, v)
} else if {
	c.op == "lt"
	v := arg_at(c)
	is_number(v)
	v < c.value
} else if {
	c.op == "gte"
	v := arg_at(c)
	is_number(v)
	v >= c.value
} else if {
	c.op == "gt"
	v := arg_at(c)
	is_number(v)
	v > c.value
} else if {
	c.op == "neq"
	v := arg_at(c)
	v != null
	not eq_match(v, c.match)
} else if {
	c.op == "not_in"
	v := arg_at(c)
	v != null
	not in_any(v, c.matches)
} else if {
	c.op == "exists"
	c.value == true
	arg_at(c) != null
} else if {
	c.op == "exists"
	c.value == false
	arg_at(c) == null
} else if {
	c.op == "glob"
	v := arg_at(c)
	regex_subject(v)
	regex.match(c.regex, v)
} else if {
	c.op == "not_regex"
	v := arg_at(c)
	regex_subject(v)
	not regex.match(c.regex, v)
} else if {
	c.op == "contains"
	v := arg_at(c)
	is_string(v)
	is_string(c.value)
	contains(v, c.value)
} else if {
	c.op == "contains"
	v := arg_at(c)
	is_array(v)
	some e in v
	eq_match(e, c.match)
} else if {
	c.op == "starts_with"
	v := arg_at(c)
	is_string(v)
	startswith(v, c.value)
} else if {
	c.op == "ends_with"
	v := arg_at(c)
	is_string(v)
	endswith(v, c.value)
} else if {
	c.op == "len_lte"
	v := arg_at(c)
	sized(v)
	count(v) <= c.value
} else if {
	c.op == "len_gte"
	v := arg_at(c)
	sized(v)
	count(v) >= c.value
}

sized(v) if is_string(v)

sized(v) if is_array(v)

sized(v) if is_object(v)

# Strings longer than 64 KiB never reach a regex: the embedded engine's std::regex recurses per
# character (a 1 MB string against `^(a|b)*$` overflows even a 512 MB stack) and backtracks.
regex_subject(v) if {
	is_string(v)
	count(v) <= 65536
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
