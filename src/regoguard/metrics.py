"""Prometheus metrics (``prometheus_client``): what the guard decided, how long deciding, taking limits and
the server took, store failures, and the sessions being served.

Labels stay bounded whatever clients send: ``tool`` is the policy's own key for the tool (a name the policy
lists, or ``*`` for everything else), ``rule`` a rule id of the policy or of regoguard itself.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_FAST = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
_SLOW = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """One process's metrics, in a registry of its own (served at ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter("regoguard_decisions", "Tool calls decided, by outcome, tool key and rule",
                                 ("outcome", "tool", "rule"), registry=r)
        self.decision_seconds = Histogram("regoguard_decision_seconds", "Time to decide one call (policy engine)",
                                          buckets=_FAST, registry=r)
        self.limit_seconds = Histogram("regoguard_limit_store_seconds", "Time to take one call's limits from the "
                                       "state store", buckets=_FAST, registry=r)
        self.upstream_seconds = Histogram("regoguard_upstream_seconds", "Time from forwarding an allowed call to "
                                          "its answer", buckets=_SLOW, registry=r)
        self.store_errors = Counter("regoguard_store_errors", "State store failures while taking limits",
                                    registry=r)
        self.fail_open_allows = Counter("regoguard_fail_open_allows", "Calls allowed only because the state store "
                                        "failed and the proxy fails open", registry=r)
        self.sessions = Gauge("regoguard_active_sessions", "MCP sessions being served", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
