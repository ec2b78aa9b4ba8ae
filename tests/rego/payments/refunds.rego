# A payments team's own rules, beside its YAML policy (used by tests/test_custom_rego.py).
package regoguard.custom

import rego.v1

import data.payments.limits

# Refunds above the threshold wait for a human.
approval contains {"rule": "payments/big-refund", "message": "Refunds over 100 need a human"} if {
	input.tool.name == "create_refund"
	input.tool.arguments.amount > limits.refund_threshold
}

# Every refund spends from one budget shared by everyone: 100 an hour.
charges contains {
	"counter": "refund_budget",
	"capacity": limits.refund_budget,
	"window": 3600,
	"cost": input.tool.arguments.amount,
	"rule": "payments/refund-budget",
	"message": "The hourly refund budget is spent",
} if {
	input.tool.name == "create_refund"
	input.tool.arguments.amount <= limits.refund_threshold
}

# Test customers live in the test account, never here.
deny contains {"rule": "payments/no-test-customers", "message": "Test customers cannot be deleted here"} if {
	input.tool.name == "delete_customer"
	startswith(input.tool.arguments.customer_id, "cus_test")
}

# A plain string: the rule id is "rego".
deny contains "Charges in this currency are not supported" if {
	input.tool.name == "create_charge"
	input.tool.arguments.currency == "xxx"
}
