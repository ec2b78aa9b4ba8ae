"""Hot reload: watch the policy and the team's Rego, and swap in a new policy that loads cleanly.

The rules of a swap:

- the new policy is loaded, compiled and built into a ready engine *before* anything changes, so no call
  is ever decided by a half-loaded policy; the swap itself is one assignment (see ``Guard.swap``);
- a change that does not load is reported on stderr (every error, with file, line and column), and the
  policy in force keeps enforcing;
- counters live in the state store, keyed by counter name, so they carry over;
- a file caught mid-write is not loaded: a change is taken once two reads a poll apart agree, and what
  was loaded is applied only if the files still hold exactly what those reads saw.

Polling, not inotify: it works the same on every OS and on network and container mounts, and reading a
few small files once a second costs nothing next to the calls it guards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import structlog

from regoguard.errors import RegoguardError
from regoguard.policy_set import PolicySet, fingerprint, load_policy_set

log = structlog.get_logger("regoguard.reload")


class PolicyWatcher:
    """Polls the files of ``current`` every ``interval`` seconds; calls ``apply`` with each new policy.

    Args:
        current: the policy in force.
        rego_dirs: the ``--rego`` directories it was loaded with.
        apply: takes a loaded :class:`PolicySet` and puts it in force (may raise: the old policy stays).
        interval: seconds between polls.
    """

    def __init__(self, current: PolicySet, rego_dirs: Sequence[str], apply: Callable[[PolicySet], None],
                 interval: float = 1.0) -> None:
        self.current = current
        self.rego_dirs = tuple(rego_dirs)
        self.apply = apply
        self.interval = interval
        self.reloads = 0
        self.failures = 0
        self._seen = fingerprint(current.watched)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="regoguard-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        pending: str | None = None
        while not self._stop.wait(self.interval):
            try:
                now = fingerprint(self.current.watched)
            except Exception:  # an unreadable tree is a change we cannot load yet: keep enforcing
                log.exception("cannot read the watched policy files")
                continue
            if now == self._seen:
                pending = None
                continue
            if now != pending:  # changed since the last poll: wait until it holds still
                pending = now
                continue
            pending = None
            self.check_now(expected=now)

    def _changed_while_loading(self, expected: str | None) -> bool:
        """True if the files no longer hold what the polls agreed on: a save began after they agreed, so
        what was just loaded may be half a file. Nothing is applied; the next polls try again."""
        if expected is None:
            return False
        if fingerprint(self.current.watched) == expected:
            return False
        log.info("the policy changed while it was being loaded; waiting for it to settle",
                 policy=self.current.policy.source)
        return True

    def check_now(self, expected: str | None = None) -> bool:
        """Load the watched files and apply them if they load; True if a new policy is in force.

        ``expected``: the fingerprint the polls agreed on; what is loaded is applied only if the files
        still hold exactly that once it is loaded (else a save in progress could be half-read).
        """
        try:
            loaded = load_policy_set(self.current.policy.source, self.rego_dirs)
            if self._changed_while_loading(expected):
                return False
            self._seen = expected or fingerprint(self.current.watched)
            if loaded.revision == self.current.revision:
                return False
            self.apply(loaded)
        except RegoguardError as exc:
            if self._changed_while_loading(expected):
                return False
            self._seen = expected or self._seen
            self.failures += 1
            log.error("policy reload failed; the policy in force keeps enforcing",
                      policy=self.current.policy.source, revision=self.current.revision)
            for line in str(exc).splitlines():
                log.error(line)
            return False
        except Exception as exc:  # anything else while building: same answer, old policy stays
            self._seen = expected or self._seen
            self.failures += 1
            log.error("policy reload failed; the policy in force keeps enforcing",
                      policy=self.current.policy.source, error=repr(exc))
            return False
        log.info("policy reloaded", policy=loaded.policy.source, revision=loaded.revision,
                 previous=self.current.revision)
        watches_other_files = loaded.watched != self.current.watched
        self.current = loaded
        self.reloads += 1
        if watches_other_files or expected is None:
            # It watches other files now (its `rego:` list changed): let the next polls fingerprint them
            # and load once more (a reload to the same revision changes nothing).
            self._seen = ""
        return True
