"""Approvals: a person's yes or no for one exact call, kept beside the limits (memory, SQLite, Redis).

A call a ``require_approval`` rule holds gets an :class:`ApprovalRecord` bound to its fingerprint
(principal, server, tool, canonical arguments, policy revision). A person approves or denies it while it
is pending; the agent's identical retry consumes an approved one once; a consumed approval whose call
fails upstream goes back to approved. :class:`ApprovalBook` holds these rules once, over any backend.
"""

from regoguard.approvals.book import ApprovalBook, ApprovalError
from regoguard.approvals.fingerprint import canonical_arguments, fingerprint
from regoguard.approvals.record import ApprovalRecord
from regoguard.approvals.stores import open_approvals

__all__ = ["ApprovalBook", "ApprovalError", "ApprovalRecord", "canonical_arguments", "fingerprint",
           "open_approvals"]
