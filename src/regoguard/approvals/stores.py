"""Where approvals live: beside the limits, in the same ``--state`` (memory, a SQLite file, Redis).

Each backend runs a function atomically over a small view of the approvals (:class:`View`): a lock in
memory, a ``BEGIN IMMEDIATE`` transaction in SQLite, ``WATCH``/``MULTI`` (retried on conflict) in Redis.
The rules of what may change (:mod:`regoguard.approvals.book`) are written once, over that view, so two
proxies and the CLI sharing a store never both consume one approval.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from regoguard.approvals.record import ApprovalRecord
from regoguard.limits.sqlite_store import default_state_path, write_transaction
from regoguard.limits.store import StoreError

T = TypeVar("T")

RETENTION = 86400.0
"""How long a record is kept after its expiry (for ``approvals list`` and the audit), in seconds."""


class View(Protocol):
    def current(self, fp: str) -> str | None:
        """The id of the latest approval asked for under fingerprint ``fp``."""
        ...

    def load(self, approval_id: str) -> ApprovalRecord | None: ...

    def save(self, record: ApprovalRecord, current: bool = False) -> None:
        """Write ``record``; ``current``: it is now the latest under its fingerprint."""
        ...


class ApprovalStore(Protocol):
    def atomic(self, fn: Callable[[View], T]) -> T:
        """Run ``fn`` with every read and write it makes applied as one (StoreError when the store fails)."""
        ...

    def all(self) -> list[ApprovalRecord]: ...

    def prune(self, before: float) -> None:
        """Forget approvals that expired before ``before`` (Redis expires its keys by itself)."""
        ...

    def close(self) -> None: ...


class MemoryApprovals:
    """Approvals in this process only (``--state memory``): nobody outside it can approve them."""

    def __init__(self) -> None:
        self._records: dict[str, ApprovalRecord] = {}
        self._current: dict[str, str] = {}
        self._lock = threading.Lock()

    def current(self, fp: str) -> str | None:
        return self._current.get(fp)

    def load(self, approval_id: str) -> ApprovalRecord | None:
        return self._records.get(approval_id)

    def save(self, record: ApprovalRecord, current: bool = False) -> None:
        self._records[record.id] = record
        if current:
            self._current[record.fingerprint] = record.id

    def atomic(self, fn: Callable[[View], T]) -> T:
        with self._lock:
            return fn(self)

    def all(self) -> list[ApprovalRecord]:
        with self._lock:
            return list(self._records.values())

    def prune(self, before: float) -> None:
        with self._lock:
            for key in [k for k, r in self._records.items() if r.expires_at < before]:
                record = self._records.pop(key)
                if self._current.get(record.fingerprint) == key:
                    del self._current[record.fingerprint]

    def close(self) -> None:
        pass


_TABLES = (
    "CREATE TABLE IF NOT EXISTS approvals (id TEXT PRIMARY KEY, expires_at REAL NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS approval_current (fingerprint TEXT PRIMARY KEY, id TEXT NOT NULL)",
)


class SQLiteApprovals:
    """Approvals in the limits' SQLite file (its own connection, its own tables)."""

    def __init__(self, path: str | Path, prefix: str = "", create: bool = True, busy_timeout_ms: int = 5000) -> None:
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
            # as the limits' store: WAL (set on the file by whichever opens it first) with NORMAL sync
            # survives a crash of the process; a power cut may lose the last few changes
            self._db.execute("PRAGMA synchronous=NORMAL")
            # the CLI (create=False) never writes a schema into the proxies' file: no table, no approvals
            self.empty = not create and self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'approvals'").fetchone() is None
            if not self.empty:
                with self._write():
                    for ddl in _TABLES:
                        self._db.execute(ddl)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the state database {self.path}: {exc}") from exc

    def _write(self) -> contextlib.AbstractContextManager[None]:
        return write_transaction(self._db, self._lock, self.path)

    def current(self, fp: str) -> str | None:
        row = self._db.execute("SELECT id FROM approval_current WHERE fingerprint = ?", (self.prefix + fp,)).fetchone()
        return row[0][len(self.prefix):] if row else None

    def load(self, approval_id: str) -> ApprovalRecord | None:
        row = self._db.execute("SELECT body FROM approvals WHERE id = ?", (self.prefix + approval_id,)).fetchone()
        return ApprovalRecord.from_json(row[0]) if row else None

    def save(self, record: ApprovalRecord, current: bool = False) -> None:
        self._db.execute("INSERT INTO approvals (id, expires_at, body) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE "
                         "SET expires_at = excluded.expires_at, body = excluded.body",
                         (self.prefix + record.id, record.expires_at, record.to_json()))
        if current:
            self._db.execute("INSERT INTO approval_current (fingerprint, id) VALUES (?, ?) ON CONFLICT(fingerprint) "
                             "DO UPDATE SET id = excluded.id",
                             (self.prefix + record.fingerprint, self.prefix + record.id))

    def atomic(self, fn: Callable[[View], T]) -> T:
        if self.empty:
            return fn(_NoApprovals())
        with self._write():
            return fn(self)

    def prune(self, before: float) -> None:
        """Drop records that expired before ``before`` (and their fingerprints' pointers)."""
        if self.empty:
            return
        with self._write():
            self._db.execute("DELETE FROM approvals WHERE expires_at < ?", (before,))
            self._db.execute("DELETE FROM approval_current WHERE id NOT IN (SELECT id FROM approvals)")

    def all(self) -> list[ApprovalRecord]:
        """This prefix's approvals only: a row is ours when its key is exactly the prefix and its id (an
        empty prefix must not list another team's, nor ``team`` list ``teamB``'s)."""
        if self.empty:
            return []
        with self._lock:
            try:
                rows = self._db.execute("SELECT id, body FROM approvals WHERE substr(id, 1, ?) = ?",
                                        (len(self.prefix), self.prefix)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"state database {self.path}: {exc}") from exc
        records = [(key, ApprovalRecord.from_json(body)) for key, body in rows]
        return [r for key, r in records if key == self.prefix + r.id]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _NoApprovals:
    """The view of a file no proxy has kept approvals in (read by the CLI, never written)."""

    def current(self, fp: str) -> str | None:
        return None

    def load(self, approval_id: str) -> ApprovalRecord | None:
        return None

    def save(self, record: ApprovalRecord, current: bool = False) -> None:
        raise StoreError("this state database holds no approvals")


class RedisApprovals:
    """Approvals in Redis, as hashes beside the buckets' prefix (``state show``/``reset`` never read
    them as buckets); each key expires a day after its approval does."""

    def __init__(self, url: str, prefix: str = "regoguard:", timeout: float = 2.0) -> None:
        import redis

        self.url = url
        self._base = f"regoguard-approvals:{prefix}"
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._watch_error = redis.WatchError
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        except (redis.RedisError, ValueError) as exc:
            raise StoreError(f"redis {url}: {exc}") from exc

    def atomic(self, fn: Callable[[View], T]) -> T:
        for _ in range(50):
            try:
                with self._redis.pipeline(transaction=True) as pipe:
                    view = _RedisView(pipe, self._base)
                    out = fn(view)
                    pipe.multi()
                    for key, fields, expire_at in view.writes:
                        pipe.hset(key, mapping=fields)
                        pipe.pexpireat(key, int(expire_at * 1000))
                    pipe.execute()
                    return out
            except self._watch_error:
                continue  # another writer changed what fn read: read again
            except self._errors as exc:
                raise StoreError(f"redis {self.url}: {exc}") from exc
        raise StoreError(f"redis {self.url}: approvals kept changing under 50 attempts")

    def all(self) -> list[ApprovalRecord]:
        from regoguard.limits.redis_store import glob_escape

        out = []
        try:
            for key in self._redis.scan_iter(match=glob_escape(self._base) + "id:*", count=500):
                body = self._redis.hget(key, "record")
                if body is not None:
                    out.append(ApprovalRecord.from_json(body))
        except self._errors as exc:
            raise StoreError(f"redis {self.url}: {exc}") from exc
        return out

    def prune(self, before: float) -> None:
        pass  # every key expires a day after its approval

    def close(self) -> None:
        self._redis.close()


class _RedisView:
    def __init__(self, pipe: Any, base: str) -> None:
        self._pipe = pipe
        self._base = base
        self.writes: list[tuple[str, dict[Any, Any], float]] = []

    def current(self, fp: str) -> str | None:
        key = f"{self._base}fp:{fp}"
        self._pipe.watch(key)
        got = self._pipe.hget(key, "id")
        return got.decode() if isinstance(got, bytes) else got

    def load(self, approval_id: str) -> ApprovalRecord | None:
        key = f"{self._base}id:{approval_id}"
        self._pipe.watch(key)
        body = self._pipe.hget(key, "record")
        return ApprovalRecord.from_json(body) if body is not None else None

    def save(self, record: ApprovalRecord, current: bool = False) -> None:
        self.writes.append((f"{self._base}id:{record.id}", {"record": record.to_json()},
                            record.expires_at + RETENTION))
        if current:
            # An answer moves expires_at to at most one timeout past the last moment it could come (the
            # pending approval's expiry): the pointer outlives every record it can point to.
            keep = record.created_at + 2 * record.timeout + RETENTION
            self.writes.append((f"{self._base}fp:{record.fingerprint}", {"id": record.id}, keep))


def open_approvals(spec: str | None, prefix: str | None = None, create: bool = True) -> ApprovalStore:
    """The approvals of the ``--state`` store ``spec`` (as :func:`regoguard.limits.open_store` reads it)."""
    from regoguard.limits.limiter import DEFAULT_REDIS_PREFIX

    if spec == "memory":
        return MemoryApprovals()
    if spec and spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisApprovals(spec, DEFAULT_REDIS_PREFIX if prefix is None else prefix)
    return SQLiteApprovals(spec or default_state_path(), prefix=prefix or "", create=create)
