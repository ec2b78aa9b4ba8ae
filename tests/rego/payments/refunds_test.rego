# A test module: `with input as` is allowed here, and the proxy never loads *_test.rego files.
package payments.refunds_test

import rego.v1

test_big_refund_is_held if {
	count(data.regoguard.custom.approval) == 1 with input as {"tool": {"name": "create_refund", "arguments": {"amount": 500}}}
}
