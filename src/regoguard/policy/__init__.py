"""What the user wrote: YAML policy → typed model, with file:line:column errors."""

from regoguard.policy.loader import load_policy, load_policy_text
from regoguard.policy.model import Condition, Limit, Policy, Rule, ToolPolicy

__all__ = ["Condition", "Limit", "Policy", "Rule", "ToolPolicy", "load_policy", "load_policy_text"]
