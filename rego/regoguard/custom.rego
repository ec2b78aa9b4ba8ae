# The team's own Rego: what modules in `package regoguard.custom` add to a decision.
#
# A team writes, from the same input document the YAML rules see:
#
#   deny contains "Pushes to main need a release ticket" if { ... }               # rule id "rego"
#   deny contains {"rule": "no-main", "message": "Pushes to main ..."} if { ... }
#   approval contains {"rule": "big-refund", "message": "Refunds over $100 need a human"} if { ... }
#   charges contains {"counter": "refund_spend", "capacity": 500, "window": 86400,
#                     "cost": input.tool.arguments.amount, "scope": "principal"} if { ... }
#
# `deny` adds reasons after the policy's own; `approval` holds a call nothing denies for a human
# (action "require_approval"); `charges` are taken with the policy's, all or none. Every value is checked
# here: a malformed one denies the call and says which rule name was malformed.
#
# Texts a team copies from the input (sprintf of an argument) are the danger: rego-cpp writes strings
# into its JSON output without escaping them, so such a message could rewrite the decision. Messages
# holding quotes, backslashes or control characters are therefore replaced, and ids and counter names
# must be plain words.
package regoguard.lib

import rego.v1

# Without the team's Rego, each of these is one failed lookup (`data.regoguard.custom` is undefined).
default team_denials := []

team_denials := array.concat(
	array.concat(custom_denials, custom_denials_of_approvals),
	array.concat(custom_denials_of_charges, custom_denials_of_shape),
) if {
	data.regoguard.custom
}

default custom_approvals := []

custom_approvals := [a |
	some x in data.regoguard.custom.approval
	well_formed_or_text(x)
	a := custom_reason(x, "approval")
] if data.regoguard.custom

# A malformed approval is a denial (its message says so), never a hold.
custom_denials_of_approvals := [d |
	some x in data.regoguard.custom.approval
	not well_formed_or_text(x)
	d := custom_reason(x, "approval")
]

well_formed_or_text(x) if is_string(x)

well_formed_or_text(x) if well_formed_reason(x)

default custom_charges := []

custom_charges := [c |
	some x in data.regoguard.custom.charges
	valid_charge(x)
	c := custom_charge(x)
] if data.regoguard.custom

custom_denials := [d |
	some x in data.regoguard.custom.deny
	d := custom_reason(x, "deny")
]

# A malformed charge is a denial: a limit the team meant to enforce must not silently vanish.
custom_denials_of_charges := [{
	"rule": "rego/invalid-charge",
	"message": "A charge from the team's Rego (data.regoguard.custom.charges) is malformed, so the call is denied",
	"detail": ["a charge needs counter (a plain word), capacity > 0, window > 0 seconds; cost >= 0 and scope global, principal or session if given"],
} |
	some x in data.regoguard.custom.charges
	not valid_charge(x)
]

# `deny`, `approval` and `charges` are sets (or arrays): anything else (say `deny := true`) would iterate
# to nothing and silently weaken the policy, so it denies.
custom_denials_of_shape := [{
	"rule": "rego/malformed",
	"message": concat("", ["data.regoguard.custom.", k, " must be a set (`", k, " contains ...`), so the call is denied"]),
	"detail": ["a rule in the team's Rego has the wrong shape"],
} |
	some k in ["deny", "approval", "charges"]
	v := data.regoguard.custom[k]
	not is_set(v)
	not is_array(v)
]

custom_reason(x, _) := {"rule": "rego", "message": safe_text(x), "detail": ["a rule in the team's Rego"]} if is_string(x)

custom_reason(x, _) := {"rule": safe_id(x.rule), "message": safe_text(x.message), "detail": ["a rule in the team's Rego"]} if {
	well_formed_reason(x)
}

custom_reason(x, kind) := {
	"rule": "rego/malformed",
	"message": concat("", ["A `", kind, "` from the team's Rego is malformed, so the call is denied"]),
	"detail": ["expected a message string, or {\"rule\": id, \"message\": text}"],
} if {
	not well_formed_or_text(x)
}

well_formed_reason(x) if {
	is_object(x)
	is_string(x.rule)
	is_string(x.message)
}

# Plain words only: ids and counters are written into the output and into bucket keys.
safe_id(s) := s if regex.match(`^[A-Za-z0-9_.:@/-]{1,128}$`, s)

safe_id(s) := "rego" if not regex.match(`^[A-Za-z0-9_.:@/-]{1,128}$`, s)

safe_text(s) := substring(s, 0, 1000) if not regex.match(`["\\[:cntrl:]]`, s)

safe_text(s) := "Denied by a rule in the team's Rego (its message held quotes, backslashes or control characters, which are not shown)" if {
	regex.match(`["\\[:cntrl:]]`, s)
}

valid_charge(x) if {
	is_object(x)
	is_string(x.counter)
	regex.match(`^[A-Za-z0-9_.:@/-]{1,128}$`, x.counter)
	is_number(x.capacity)
	x.capacity > 0
	is_number(x.window)
	x.window > 0
	is_number(object.get(x, "cost", 1))
	object.get(x, "cost", 1) >= 0
	object.get(x, "scope", "global") in {"global", "principal", "session"}
	is_string(object.get(x, "rule", "rego"))
	is_string(object.get(x, "message", ""))
}

custom_charge(x) := {
	"counter": x.counter,
	"scope": object.get(x, "scope", "global"),
	"cost": object.get(x, "cost", 1),
	"capacity": x.capacity,
	"window": x.window,
	"strict": false,
	"rule": safe_id(object.get(x, "rule", "rego")),
	"message": charge_message(x),
}

charge_message(x) := safe_text(x.message) if is_string(x.message)

charge_message(x) := concat("", ["Limit \"", x.counter, "\" reached"]) if not x.message
