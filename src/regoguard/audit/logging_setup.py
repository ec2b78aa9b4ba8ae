"""structlog, configured once: readable lines on stderr, never stdout."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(level: str | None = None) -> None:
    """Send every log line to stderr, at ``level`` (default ``$REGOGUARD_LOG_LEVEL`` or ``info``)."""
    name = (level or os.environ.get("REGOGUARD_LOG_LEVEL") or "info").upper()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, name, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
