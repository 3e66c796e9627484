"""A real HTTP proxy (tinyproxy, Debian's package) on loopback, for tests.

``TinyProxy`` writes a minimal configuration into a private directory and runs
``tinyproxy -d`` (foreground) listening on ``127.0.0.1``; its log lives there
too. With ``credentials=("user", "password")`` it demands Basic credentials
(407 without them). It adds ``Via: 1.1 <via>`` to what it forwards, so a test
server sees that a request came through it; :meth:`log` holds every request it
handled (``Request (file descriptor N): GET http://...``, ``CONNECT host:port``).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["TinyProxy", "TinyProxyStartError"]

VIA = "bgtransfer-test-proxy"


class TinyProxyStartError(RuntimeError):
    """tinyproxy did not come up; the message carries its output."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TinyProxy:
    STARTUP_TIMEOUT = 10.0
    BIND_ATTEMPTS = 5

    def __init__(
        self,
        directory: Path,
        *,
        binary: str = "tinyproxy",
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.binary = binary
        self.credentials = credentials
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, without credentials."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url_with_credentials(self) -> str:
        assert self.credentials is not None
        user, password = self.credentials
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "tinyproxy.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def requests(self) -> list[str]:
        """The request lines it received (``GET http://...``, ``CONNECT host:port``)."""
        return [
            line.split("): ", 1)[1].rsplit(" HTTP/", 1)[0]
            for line in self.log().splitlines()
            if "Request (file descriptor" in line
        ]

    def start(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(self.BIND_ATTEMPTS):
            self.port = _free_port()
            config = self.directory / "tinyproxy.conf"
            lines = [
                f"Port {self.port}",
                "Listen 127.0.0.1",
                "Timeout 30",
                f'LogFile "{self.log_path}"',
                "LogLevel Info",
                "MaxClients 50",
                "Allow 127.0.0.1",
                f'ViaProxyName "{VIA}"',
            ]
            if self.credentials is not None:
                lines.append(f"BasicAuth {self.credentials[0]} {self.credentials[1]}")
            config.write_text("\n".join(lines) + "\n")
            output = self.directory / "tinyproxy.out"
            with output.open("wb") as sink:
                self._process = subprocess.Popen(
                    [self.binary, "-d", "-c", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return self
            self.stop()
        raise TinyProxyStartError(
            f"tinyproxy did not start:\n{output.read_text(errors='replace')}\n{self.log()}"
        )

    def _wait_ready(self) -> bool:
        """Poll until the port accepts a connection (or the process died)."""
        assert self._process is not None
        deadline = time.monotonic() + self.STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.02)  # polling for a condition, not standing in for one
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
