# Helpers in a package of the team's own.
package payments.limits

import rego.v1

refund_threshold := 100

refund_budget := 100
