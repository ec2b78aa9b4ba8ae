# Destructive tools are for admins: the rule a security engineer writes over the verified identity.
# input.principal.id is the token's `sub`; input.principal.claims holds every claim it carries.
package regoguard.custom

import rego.v1

destructive := {"delete_customer"}

deny contains {"rule": "team/admins-only", "message": "only members of the admins group may do this"} if {
	input.tool.name in destructive
	not admin
}

admin if "admins" in input.principal.claims.groups
