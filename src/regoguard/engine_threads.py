"""Threads with a stack large enough for regopy: the pool of workers that evaluate behind a timeout, and
:func:`run_with_large_stack` for callers that evaluate inline.

``regex.match`` in regopy is C++ ``std::regex``, which recurses per character: a 100 KB string overflows
an 8 MB stack and kills the process. Every evaluation therefore runs on a thread with a 512 MB stack
(reserved address space; only what is touched is used).

regopy calls the engine through ``ctypes.CDLL``, which releases the GIL for the duration of each C call,
so workers on separate interpreters evaluate in parallel: the pool grows (up to its size) when every
worker is busy, and a worker stuck in a call that will not return (a catastrophic regex) is retired and
replaced, since a C++ call cannot be interrupted.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

WORKER_STACK_BYTES = 512 * 1024 * 1024
thread_state = threading.local()


def start_large_stack_thread(target: Callable[[], None], name: str, daemon: bool) -> threading.Thread:
    """Start ``target`` on a thread with a :data:`WORKER_STACK_BYTES` stack."""
    old = threading.stack_size()
    threading.stack_size(WORKER_STACK_BYTES)
    try:
        thread = threading.Thread(target=target, name=name, daemon=daemon)
        thread.start()
    finally:
        threading.stack_size(old)
    return thread


def run_with_large_stack(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a new thread with a stack large enough for the engine, and return its result.

    An :class:`Engine` called from such a thread evaluates inline (no thread hop) on an interpreter of
    that thread's own. The CLI runs every command this way.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        thread_state.large_stack = True
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised on the caller's thread
            error.append(exc)

    start_large_stack_thread(target, "regoguard-main", daemon=False).join()
    if error:
        raise error[0]
    return result[0] if result else None


def on_large_stack() -> bool:
    """True on a thread started by :func:`run_with_large_stack` (or a pool worker)."""
    return bool(getattr(thread_state, "large_stack", False))


Query = Callable[[Any, str, dict[str, Any]], str]
"""``query(interpreter, unit, doc) -> regopy output text``."""


class Job:
    """One evaluation waiting for, or running on, a worker."""

    __slots__ = ("doc", "future", "unit", "worker")

    def __init__(self, unit: str, doc: dict[str, Any]) -> None:
        self.unit = unit
        self.doc = doc
        self.future: Future[str] = Future()
        self.worker: _Worker | None = None


class _Worker:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.retired = False
        start_large_stack_thread(self._run, "regoguard-engine", daemon=True)

    def _run(self) -> None:
        thread_state.large_stack = True
        pool = self.pool
        try:
            interp = pool.make_interpreter()
        except BaseException:  # an interpreter that cannot be made: the pool's jobs time out, and deny
            pool.gone(self)
            return
        while not self.retired:
            job = pool.jobs.get()
            if job is None:
                pool.jobs.put(None)  # let the next worker see the stop too
                break
            if not job.future.set_running_or_notify_cancel():
                continue
            pool.started(self, job)
            try:
                job.future.set_result(pool.query(interp, job.unit, job.doc))
            except BaseException as exc:  # a query must always answer
                job.future.set_exception(exc)
            finally:
                pool.finished(self)
        pool.gone(self)


class Pool:
    """Up to ``size`` workers taking jobs from one queue, each with its own interpreter.

    Workers start when needed: one at first, another whenever a job arrives and every worker is busy.
    """

    def __init__(self, make_interpreter: Callable[[], Any], query: Query, size: int) -> None:
        self.make_interpreter = make_interpreter
        self.query = query
        self.size = max(1, size)
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._busy = 0
        self._stopped = False

    def started(self, worker: _Worker, job: Job) -> None:
        with self._lock:
            job.worker = worker
            self._busy += 1

    def finished(self, worker: _Worker) -> None:
        with self._lock:
            if not worker.retired:  # a retired worker was counted out when it was retired
                self._busy -= 1

    def gone(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.discard(worker)

    @property
    def workers(self) -> int:
        with self._lock:
            return len(self._workers)

    def start(self) -> None:
        """Start the first worker ahead of the first job."""
        with self._lock:
            if not self._workers and not self._stopped:
                self._workers.add(_Worker(self))

    def submit(self, unit: str, doc: dict[str, Any]) -> Job:
        job = Job(unit, doc)
        with self._lock:
            live = len(self._workers)
            if not self._stopped and live < self.size and self._busy + self.jobs.qsize() >= live:
                self._workers.add(_Worker(self))
        self.jobs.put(job)
        return job

    def abandon(self, job: Job) -> None:
        """``job`` took too long: if it never started, drop it; if it runs, its worker is stuck in C++ and
        is retired (it ends if the call ever returns) and another takes its place."""
        if job.future.cancel():
            return
        with self._lock:
            worker = job.worker
            if worker is None or worker.retired or job.future.done():
                return
            worker.retired = True
            self._workers.discard(worker)
            self._busy -= 1
            if not self._stopped:
                self._workers.add(_Worker(self))

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self.jobs.put(None)
