"""Local processes of the testbed (and of the test suite): start, wait until healthy, stop cleanly.

Each process runs in its own session so that stopping it also stops what it spawned (vLLM starts
an engine process of its own). Output goes to a log file, never to the terminal.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HealthCheck = Callable[[], bool]
# How often a starting process is polled, and how long a stopping one gets before SIGKILL.
POLL_INTERVAL_S = 0.25
STOP_GRACE_S = 10.0
# free_port picks below the kernel's ephemeral range, where no outgoing connection takes a local port: one
# chosen by bind(0) lies in that range and a client's connect() took it before the server bound it (CI,
# "address already in use"). The floor is ours; the range is Linux's default when it cannot be read.
FREE_PORT_FLOOR = 20_000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_LOW = 32_768
FREE_PORT_TRIES = 200
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on loopback that nothing uses right now, outside the ephemeral range, not handed out before by
    this process (falls back to the kernel's choice if that range leaves no room)."""
    ephemeral_low = _ephemeral_low()
    for _ in range(FREE_PORT_TRIES if ephemeral_low > FREE_PORT_FLOOR else 0):
        port = random.randrange(FREE_PORT_FLOOR, ephemeral_low)
        if port not in _handed_out and _bound_port(port) is not None:
            _handed_out.add(port)
            return port
    chosen = _bound_port(0)
    if chosen is None:
        raise OSError("no TCP port on loopback can be bound")
    return chosen


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def _bound_port(port: int) -> int | None:
    """The port a socket bound on loopback got when it asked for ``port`` (0: the kernel's choice), None if refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return None
        return int(probe.getsockname()[1])


def http_ok(url: str, ready: Callable[[Any], bool] | None = None) -> HealthCheck:
    """200 from ``url``, and, when ``ready`` is given, ``ready(JSON body)`` true."""

    def check() -> bool:
        try:
            response = httpx.get(url, timeout=2.0)
            return response.status_code == 200 and (ready is None or ready(response.json()))
        except (httpx.HTTPError, ValueError):
            return False

    return check


def tcp_open(port: int, host: str = "127.0.0.1") -> HealthCheck:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            return False

    return check


@dataclass
class Backoff:
    """When to restart a process that died: 1 s, 2 s, 4 s ... up to ``max_s`` (ours); from 1 s again once
    it stayed up ``stable_s``. So a crash costs a second, and a crash loop cannot spin the machine."""

    first_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0
    restarts: int = 0
    _next_s: float = field(default=0.0, init=False)
    _restarted_at: float | None = field(default=None, init=False)

    def next_delay(self, now: float) -> float:
        if self._restarted_at is None or now - self._restarted_at >= self.stable_s:
            self._next_s = self.first_s
        delay, self._next_s = self._next_s, min(self.max_s, 2 * self._next_s)
        self._restarted_at = now + delay
        self.restarts += 1
        return delay


class ProcessFailed(RuntimeError):
    """A process exited or did not become healthy in time; the message ends with its log's tail."""


@dataclass
class ManagedProcess:
    name: str
    argv: Sequence[str]
    log_path: Path
    healthy: HealthCheck
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    startup_timeout_s: float = 60.0
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            list(self.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()

    def wait_healthy(self, on_wait: Callable[[float], None] | None = None) -> float:
        """Block until the health check passes; return the seconds it took. ``on_wait`` sees progress."""
        timeout_s = self.startup_timeout_s
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if self.popen is not None and self.popen.poll() is not None:
                raise ProcessFailed(f"{self.name} exited with code {self.popen.returncode}.\n{self.log_tail()}")
            if self.healthy():
                return elapsed
            if elapsed > timeout_s:
                raise ProcessFailed(f"{self.name} was not healthy after {timeout_s:.0f} s.\n{self.log_tail()}")
            if on_wait is not None:
                on_wait(elapsed)
            time.sleep(POLL_INTERVAL_S)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def last_log_line(self) -> str:
        tail = self.log_tail(1).strip()
        return tail if tail != "(no log)" else ""

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it if it is still there after a grace period."""
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        except ProcessLookupError:
            pass
        _kill_leftovers(self.popen.pid)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def _kill_leftovers(process_group: int) -> None:
    """Children that outlived their leader (vLLM's engine) still carry its process group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process_group, signal.SIGKILL)
