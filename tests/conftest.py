"""Shared fixtures.

- ``redis_url``: a real ``redis-server`` on 127.0.0.1 (free port, no persistence, tmp dir), one per test
  session. Skips only when the ``redis-server`` binary is missing (CI installs it); a server that is
  installed but does not start is an error, not a skip.
- ``redis_servers``: a factory that starts more servers (optionally on a chosen port), all stopped at the
  end of the session. For tests that need a server to appear or disappear.
- ``redis_prefix``: a key prefix unique to the test, so tests sharing ``redis_url`` never see each
  other's keys.
- ``free_port()``: a port nobody listens on right now (plain helper, importable from conftest).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read the port, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServers:
    """Starts ``redis-server`` processes on 127.0.0.1 and stops every one of them at :meth:`stop_all`."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, port: int | None = None) -> str:
        """Start a server (on ``port``, or a free one) and return its ``redis://`` URL once it answers."""
        port = port or free_port()
        d = self.workdir / f"redis-{port}"
        d.mkdir(parents=True, exist_ok=True)
        log = d / "redis.log"
        proc = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(d), "--logfile", str(log), "--daemonize", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {proc.returncode} on port {port}:\n{text}")
            if _ping(port):
                self._procs[port] = proc
                return f"redis://127.0.0.1:{port}/0"
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        raise RuntimeError(f"redis-server did not answer on port {port} within {REDIS_START_TIMEOUT}s")

    def stop(self, url_or_port: str | int) -> None:
        port = url_or_port if isinstance(url_or_port, int) else int(url_or_port.rsplit(":", 1)[1].split("/")[0])
        proc = self._procs.pop(port, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for port in list(self._procs):
            self.stop(port)


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServers]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    servers = RedisServers(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="session")
def redis_url(redis_servers: RedisServers) -> str:
    """``redis://127.0.0.1:<port>/0`` of a redis-server that lives for the whole test session."""
    return redis_servers.start()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A Redis key prefix no other test uses (the store's ``prefix`` / the CLI's ``--state-prefix``)."""
    return f"test:{request.node.name[:40]}:{uuid.uuid4().hex[:12]}:"

