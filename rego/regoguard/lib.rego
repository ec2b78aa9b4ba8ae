# regoguard's library: a compiled policy's decision, combined with what the team's own Rego adds.
#
# A compiled policy (`regoguard compile`) is `package regoguard.policy`: each tool key's rules written
# out as Rego; `data.regoguard.policy.verdict`, `charges` and `decision` pick the section that decides
# the call. On its own it decides the YAML rules. This library adds the team's modules (`package regoguard.custom`, read
# by custom.rego) and gives the documented decision:
#
#   data.regoguard.lib.decision = {
#     "allow": bool, "action": "allow" | "deny" | "require_approval",
#     "reasons": [{"rule": id, "message": text, "detail": [what failed, ...]}, ...],  # the first is shown
#     "charges": [{"counter", "scope", "cost", "capacity", "window", "strict", "rule", "message"}, ...]}
#
#   data.regoguard.lib.verdict: the engine's one query per call with the team's Rego loaded: the same
#     decision, with the policy's charges given as their argument-derived `costs` (the engine fills in
#     the rest from the compiled policy) and the team's charges in full.
#
# Strict Rego v1 and standard built-ins only, so the same modules run under OPA:
#   opa eval -d rego/regoguard -d compiled/payments.rego -d team/ -i call.json data.regoguard.lib.decision
package regoguard.lib

import rego.v1

# The compiled policy's verdict: {"allow": true, "costs"} or {"allow": false, "reasons"}.
policy := data.regoguard.policy.verdict

# A compiled verdict that holds the call for a person says so in `action`; any other denial has none.
policy_action := object.get(policy, "action", "deny")

policy_reasons := [] if policy.allow == true

policy_reasons := policy.reasons if {
	policy.allow == false
	policy_action == "deny"
}

policy_reasons := [] if {
	policy.allow == false
	policy_action == "require_approval"
}

default policy_holds := []

policy_holds := policy.reasons if {
	policy.allow == false
	policy_action == "require_approval"
}

# A person approved this exact call (the proxy says so after an approval): the team's approvals no longer
# hold it. The compiled policy reads the same field for its own `require_approval` rules.
default granted := false

granted if input.approval.granted == true

default team_holds := []

team_holds := custom_approvals if granted == false

holds := array.concat(policy_holds, team_holds)

default allow := false

allow if {
	policy.allow == true
	count(team_denials) == 0
	count(team_holds) == 0
}

default action := "deny"

action := "allow" if allow

# A rule asked for a person (the policy's `require_approval`, the team's `approval`), and nothing denies
# the call outright.
action := "require_approval" if {
	count(denials) == 0
	count(holds) > 0
}

# The policy's reasons first (its first failing rule is the one shown), then the team's denials; with no
# denial, the approvals the call is held for.
denials := array.concat(policy_reasons, team_denials)

reasons := denials if count(denials) > 0

reasons := holds if count(denials) == 0

default charges := []

charges := array.concat(data.regoguard.policy.charges, custom_charges) if allow

decision := {
	"allow": allow,
	"action": action,
	"reasons": reasons,
	"charges": charges,
}

verdict := {
	"allow": true,
	"action": "allow",
	"reasons": [],
	"costs": policy.costs,
	"charges": custom_charges,
} if allow

verdict := {"allow": false, "action": action, "reasons": reasons} if allow == false
