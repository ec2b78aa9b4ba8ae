"""The event loop the proxies run on: uvloop where it is installed (a dependency on Linux and macOS),
else asyncio's own.

uvloop moves the pipe and socket plumbing of every relayed message into C: on this project's stdio
benchmark it took 0.01 to 0.03 ms off each call's added latency and 3 to 19% onto throughput at 32 in
flight (benchmarks/bench_proxy.py, one run). ``REGOGUARD_EVENT_LOOP=asyncio`` runs asyncio's loop
instead (to rule the loop out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop, as :func:`asyncio.run` does."""
    if os.environ.get("REGOGUARD_EVENT_LOOP", "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)

