"""Buckets in a SQLite file: the default store. Survives restarts; safe across processes on one machine.

Every take is one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock), so concurrent proxies sharing
the file serialise their takes and none is lost. WAL mode lets readers (``regoguard state show``) run
beside writers. ``synchronous=NORMAL`` in WAL mode survives a crash of the process; a power cut can lose
the last few takes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from regoguard.limits.store import StoreError, TakeResult, apply_all, refund_all
from regoguard.limits.token_bucket import BucketState, Spec

_SCHEMA = "CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL)"
_PINS = "CREATE TABLE IF NOT EXISTS pins (key TEXT PRIMARY KEY, digest TEXT NOT NULL)"


@contextlib.contextmanager
def write_transaction(db: sqlite3.Connection, lock: threading.Lock, path: Path) -> Iterator[None]:
    """One ``BEGIN IMMEDIATE`` transaction on ``db`` under ``lock``: committed, or rolled back on any error
    (a SQLite error becomes a StoreError naming ``path``). The limits and the approvals both write so."""
    with lock:
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"state database {path}: {exc}") from exc


def default_state_path() -> Path:
    """``$XDG_STATE_HOME/regoguard/state.db`` (``~/.local/state/regoguard/state.db``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "regoguard" / "state.db"


class SQLiteStore:
    """Buckets in the SQLite file at ``path``.

    Args:
        prefix: put before every key (``--state-prefix``), so teams can share one file, as in Redis.
        create: make the file (and its directory) if missing; False: a missing file is a StoreError
            (``regoguard state`` reads a store, it must not conjure an empty one from a typo).
    """

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000, prefix: str = "", create: bool = True) -> None:
        self.path = Path(path)
        self.prefix = prefix
        self._lock = threading.Lock()
        if not create and not self.path.is_file():
            raise StoreError(f"no state database at {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                       timeout=busy_timeout_ms / 1000)
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            self._set_up(busy_timeout_ms / 1000)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the state database {self.path}: {exc}") from exc

    def _set_up(self, timeout: float) -> None:
        """WAL mode and the table. Switching the journal mode takes an exclusive lock that SQLite's busy
        handler does not wait for, so processes opening one new file at once retry it here."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(_SCHEMA)
                self._db.execute(_PINS)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _load(self, keys: list[str]) -> dict[str, BucketState | None]:
        unique = sorted(set(keys))
        marks = ",".join("?" * len(unique))
        rows = self._db.execute(f"SELECT key, tokens, updated FROM buckets WHERE key IN ({marks})", unique)
        found: dict[str, BucketState | None] = dict.fromkeys(unique)
        for key, tokens, updated in rows:
            found[key] = BucketState(tokens, updated)
        return found

    def _save(self, states: dict[str, BucketState]) -> None:
        self._db.executemany(
            "INSERT INTO buckets (key, tokens, updated) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated",
            [(k, s.tokens, s.updated) for k, s in states.items()],
        )

    def _write(self) -> contextlib.AbstractContextManager[None]:
        return write_transaction(self._db, self._lock, self.path)

    def take_all(self, items: list[tuple[str, Spec]], now: float) -> TakeResult:
        items = [(self.prefix + k, spec) for k, spec in items]
        with self._write():
            result, new = apply_all(self._load([k for k, _ in items]), items, now)
            if result.ok:
                self._save(new)
        return result

    def give_back_all(self, items: list[tuple[str, Spec]], now: float) -> None:
        items = [(self.prefix + k, spec) for k, spec in items]
        with self._write():
            self._save(refund_all(self._load([k for k, _ in items]), items, now))

    def snapshot(self, prefix: str = "") -> dict[str, BucketState]:
        prefix = self.prefix + prefix
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT key, tokens, updated FROM buckets WHERE substr(key, 1, ?) = ? ORDER BY key",
                    (len(prefix), prefix),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"state database {self.path}: {exc}") from exc
        return {k[len(self.prefix):]: BucketState(t, u) for k, t, u in rows}

    def reset(self, prefix: str = "") -> int:
        prefix = self.prefix + prefix
        with self._lock:
            try:
                cur = self._db.execute("DELETE FROM buckets WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
            except sqlite3.Error as exc:
                raise StoreError(f"state database {self.path}: {exc}") from exc
            return cur.rowcount

    def pin_first_use(self, digests: dict[str, str]) -> dict[str, str]:
        keyed = {self.prefix + k: v for k, v in digests.items()}
        with self._write():
            self._db.executemany("INSERT OR IGNORE INTO pins (key, digest) VALUES (?, ?)", list(keyed.items()))
            found: dict[str, str] = {}
            items = list(keyed)
            for i in range(0, len(items), 500):
                chunk = items[i:i + 500]
                marks = ",".join("?" * len(chunk))
                found.update(self._db.execute(f"SELECT key, digest FROM pins WHERE key IN ({marks})", chunk))
        return {k: found[self.prefix + k] for k in digests}

    def close(self) -> None:
        with self._lock:
            self._db.close()
