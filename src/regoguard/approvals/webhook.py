"""``--approval-webhook URL``: each pending approval announced by an HMAC-signed POST, off the call path.

The body is JSON ``{"event": "approval_requested", "approval": {...}, "sent_at": ...}``; with a secret,
``X-Regoguard-Signature: sha256=<hex HMAC-SHA256 of the body>`` lets the receiver check it came from the
proxy. Posts go from one background thread through a bounded queue: a slow or dead receiver never delays
a call, and what does not fit is dropped with a warning (the approval itself is in the store either way).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
from typing import Any

import httpx2
import structlog

log = structlog.get_logger("regoguard.approvals")

SIGNATURE_HEADER = "X-Regoguard-Signature"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Webhook:
    def __init__(self, url: str, secret: bytes | None = None, timeout: float = 5.0, max_queued: int = 100) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(max_queued)
        self._thread = threading.Thread(target=self._run, name="regoguard-approval-webhook", daemon=True)
        self._thread.start()

    def announce(self, approval: dict[str, Any]) -> None:
        body = json.dumps({"event": "approval_requested", "approval": approval, "sent_at": time.time()},
                          ensure_ascii=False, sort_keys=True).encode("utf-8", "backslashreplace")
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.failed += 1
            log.warning("approval webhook queue full; an announcement was dropped", url=self.url)

    def _run(self) -> None:
        with httpx2.Client(timeout=self.timeout, follow_redirects=False) as client:
            while (body := self._queue.get()) is not None:
                headers = {"Content-Type": "application/json"}
                if self.secret is not None:
                    headers[SIGNATURE_HEADER] = sign(self.secret, body)
                try:
                    answer = client.post(self.url, content=body, headers=headers)
                    if answer.status_code >= 300:
                        raise OSError(f"HTTP {answer.status_code}")
                    self.sent += 1
                except Exception as exc:
                    self.failed += 1
                    log.warning("approval webhook failed", url=self.url, error=str(exc))

    def close(self, wait: float = 2.0) -> None:
        """Send what is queued (for up to ``wait`` seconds), then stop."""
        try:
            self._queue.put(None, timeout=wait)
        except queue.Full:
            return
        self._thread.join(wait)
