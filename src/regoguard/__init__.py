"""regoguard: a policy-enforcing proxy for the Model Context Protocol.

Public names:

- :func:`load_policy` / :func:`load_policy_text` read a YAML policy into a typed :class:`Policy`.
- :func:`compile_policy` turns a :class:`Policy` into a Rego v1 module (:class:`CompiledPolicy`).
- :class:`Engine` evaluates an input document against a compiled policy and returns a :class:`Decision`.
"""

from regoguard.compiler import CompiledPolicy, compile_policy
from regoguard.decision import Charge, Decision, Reason
from regoguard.engine import Engine, EngineLimits
from regoguard.errors import PolicyError, PolicyLoadError, RegoguardError
from regoguard.policy import Policy, load_policy, load_policy_text

__version__ = "0.1.0"

__all__ = [
    "Charge",
    "CompiledPolicy",
    "Decision",
    "Engine",
    "EngineLimits",
    "Policy",
    "PolicyError",
    "PolicyLoadError",
    "Reason",
    "RegoguardError",
    "__version__",
    "compile_policy",
    "load_policy",
    "load_policy_text",
]
