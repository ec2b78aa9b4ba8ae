"""What happened and why: structlog set-up, the OPA-shaped decision log, masking, log summaries."""

from regoguard.audit.decision_log import DecisionLog, FileSink, Sink, StderrSink
from regoguard.audit.logging_setup import configure_logging
from regoguard.audit.masking import DEFAULT_SENSITIVE_KEYS, MaskingRules, mask_arguments

__all__ = [
    "DEFAULT_SENSITIVE_KEYS",
    "DecisionLog",
    "FileSink",
    "MaskingRules",
    "Sink",
    "StderrSink",
    "configure_logging",
    "mask_arguments",
]
