"""Run a service as a real server process for end-to-end tests, as a context manager.

``ServerProcess("edgecloud.llmsim", env={"LLMSIM_PORT": "{port}"})`` starts
``python -m edgecloud.llmsim`` on a free loopback port (``{port}`` and ``{host}`` in ``args`` and
``env`` values are filled in), waits until ``GET /health`` answers 200 and stops it on exit. The
process handling itself is the testbed's ``ManagedProcess``; this adds the port, the URL and the
``with`` form. Output goes to a log file whose tail is in the error if the server fails to start.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from edgecloud.testbed.processes import ManagedProcess, free_port, http_ok


class ServerProcess:
    def __init__(
        self,
        module: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        health_path: str = "/health",
        log_path: Path | None = None,
        startup_timeout_s: float = 60.0,
    ):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        fill = {"host": self.host, "port": str(self.port)}
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix="server-")) / f"{module}.log"
        self.process = ManagedProcess(
            module,
            [sys.executable, "-m", module, *(arg.format(**fill) for arg in args)],
            log_path,
            http_ok(self.base_url + health_path),
            env={key: value.format(**fill) for key, value in (env or {}).items()},
            startup_timeout_s=startup_timeout_s,
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def start(self) -> ServerProcess:
        """Launch the process without waiting for it; call ``wait_ready`` next."""
        self.process.start()
        return self

    def wait_ready(self) -> ServerProcess:
        """Block until healthy; on failure stop the process and raise with the log's tail."""
        try:
            self.process.wait_healthy()
        except Exception:
            self.process.stop()
            raise
        return self

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> ServerProcess:
        return self.start().wait_ready()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
