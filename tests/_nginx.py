"""A real nginx on loopback for tests and benchmarks.

``NginxServer`` writes a minimal ``nginx.conf`` into a private prefix directory and
runs ``nginx -g 'daemon off; master_process off;'`` as a single foreground process
listening on ``127.0.0.1``.  Everything nginx writes (pid file, logs, temp paths)
lives inside the prefix, so several servers can run side by side and nothing
outside the prefix is touched.

Typical use (the ``nginx`` fixture in ``conftest.py`` does this for you)::

    with NginxServer(tmp_path / "www", binary="/usr/sbin/nginx", ports=4) as server:
        (server.root / "file.bin").write_bytes(b"...")
        server.url("file.bin")      # "http://127.0.0.1:<port0>/file.bin"
        server.base_urls            # one base URL per listening port

The module is imported by ``tests/conftest.py`` as ``from _nginx import ...``
(pytest puts ``tests/`` on ``sys.path`` because the conftest there lives in a
directory without ``__init__.py``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["NginxServer", "NginxStartError"]

# Access log format: enough to assert on Range requests and connection reuse.
ACCESS_LOG_FORMAT = (
    '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
    '"$http_range" $request_time conn=$connection req=$connection_requests'
)

ACCESS_LOG_WAIT = 30.0  # seconds wait_access_log() waits for a request's line

_TEMP_PATH_MODULES = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
_BIND_RACE_MARKER = "Address already in use"


class NginxStartError(RuntimeError):
    """nginx did not come up; the message carries its stderr and error log."""


@functools.cache
def _probe_binary(binary: str) -> tuple[tuple[int, ...], frozenset[str]]:
    """Return (version, disabled temp-path modules) from ``nginx -V``."""
    proc = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False, timeout=30)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise NginxStartError(f"`{binary} -V` failed with exit code {proc.returncode}:\n{output}")
    match = re.search(r"nginx/(\d+(?:\.\d+)*)", output)
    version = tuple(int(part) for part in match.group(1).split(".")) if match else (0,)
    disabled = frozenset(
        module
        for module in _TEMP_PATH_MODULES
        if module != "client_body" and f"--without-http_{module}_module" in output
    )
    return version, disabled


def _quote(value: str | os.PathLike[str]) -> str:
    """Quote a path for nginx.conf; refuse characters nginx would interpret."""
    text = os.fspath(value)
    if "$" in text:
        raise ValueError(f"nginx would expand variables in path {text!r}")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _free_ports(count: int) -> list[int]:
    """Pick ``count`` distinct free loopback ports (bind to 0, then release)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class NginxServer:
    """A single-process nginx serving ``root`` on one or more loopback ports.

    Args:
        root: document root; created if missing.  Files written there are served
            at ``url(<relative path>)``.
        binary: path to the nginx executable.
        prefix: private directory for the config, pid file, logs and temp
            paths.  Defaults to ``<root>.nginx`` next to the document root so it
            is never itself served.
        ports: how many listening ports (one ``server`` block each, same root).
        limit_rate: nginx ``limit_rate`` in bytes/s per connection (None: off).
        worker_connections: nginx ``worker_connections``.
        startup_timeout: seconds to wait for nginx to accept connections.

    After ``start()`` (or entering the context manager): ``ports`` holds the
    port numbers, ``base_url``/``base_urls`` the ``http://127.0.0.1:<port>``
    URLs, ``url(path)`` builds a URL, ``config_text`` is the generated config,
    and ``read_access_log()``/``read_error_log()`` return nginx's logs.
    """

    STARTUP_TIMEOUT = 10.0
    STOP_TIMEOUT = 5.0
    BIND_ATTEMPTS = 5

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        binary: str | os.PathLike[str] = "nginx",
        prefix: str | os.PathLike[str] | None = None,
        ports: int = 1,
        limit_rate: int | None = None,
        worker_connections: int = 1024,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if ports < 1:
            raise ValueError(f"ports must be >= 1, got {ports}")
        if limit_rate is not None and limit_rate <= 0:
            raise ValueError(f"limit_rate must be a positive number of bytes/s, got {limit_rate}")
        self.root = Path(root).resolve()
        self.binary = os.fspath(binary)
        self.prefix = (
            Path(prefix).resolve()
            if prefix is not None
            else self.root.with_name(self.root.name + ".nginx")
        )
        self.port_count = ports
        self.limit_rate = limit_rate
        self.worker_connections = worker_connections
        self.startup_timeout = startup_timeout

        self.conf_path = self.prefix / "nginx.conf"
        self.pid_path = self.prefix / "nginx.pid"
        self.logs_dir = self.prefix / "logs"
        self.temp_dir = self.prefix / "temp"
        self.error_log_path = self.logs_dir / "error.log"
        self.access_log_path = self.logs_dir / "access.log"
        self.stderr_path = self.logs_dir / "stderr.log"

        self.ports: tuple[int, ...] = ()
        self.config_text = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._args: list[str] = []

    # ------------------------------------------------------------------ URLs

    @property
    def port(self) -> int:
        """The first listening port."""
        self._require_running()
        return self.ports[0]

    @property
    def base_urls(self) -> list[str]:
        """One ``http://127.0.0.1:<port>`` base URL per listening port."""
        self._require_running()
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    @property
    def base_url(self) -> str:
        """Base URL of the first listening port (no trailing slash)."""
        return self.base_urls[0]

    def url(self, path: str = "", *, host: int = 0) -> str:
        """URL of ``path`` (relative to the document root) on port number ``host``."""
        return f"{self.base_urls[host]}/{path.lstrip('/')}"

    # ------------------------------------------------------------------ logs

    def read_access_log(self) -> str:
        """The access log so far (format: ``ACCESS_LOG_FORMAT``)."""
        return _read_text(self.access_log_path)

    async def wait_access_log(self, done: Callable[[str], bool]) -> str:
        """The access log once ``done(log)`` holds (or, after ``ACCESS_LOG_WAIT``
        seconds, as it is then: the caller's assertion says what is missing).

        nginx writes a request's line when it is done with the request: after it
        sent the response's last byte, which a client may have read and acted on
        first, or once it notices that a client closed the connection mid-body.
        So a test that has just read a body waits for the line, reading another
        process's file as a script would (there is no notification to wait on).
        """
        deadline = time.monotonic() + ACCESS_LOG_WAIT
        while True:
            log = self.read_access_log()
            if done(log) or time.monotonic() >= deadline:
                return log
            await asyncio.sleep(0.02)  # another process's file, read as a script would

    def read_error_log(self) -> str:
        """nginx's error log plus anything it printed on stderr."""
        return _read_text(self.error_log_path) + _read_text(self.stderr_path)

    # ------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start nginx and wait until every port accepts connections."""
        if self._proc is not None:
            raise RuntimeError("NginxServer already started")
        version, disabled_modules = _probe_binary(self.binary)
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)

        failures: list[str] = []
        for _attempt in range(self.BIND_ATTEMPTS):
            ports = _free_ports(self.port_count)
            self.config_text = self._render_config(ports, disabled_modules)
            self.conf_path.write_text(self.config_text)
            for stale in (self.pid_path, self.error_log_path):
                stale.unlink(missing_ok=True)
            try:
                self._launch(version)
                if self._wait_ready(ports):
                    self.ports = tuple(ports)
                    return self
            except BaseException:
                self._terminate()
                raise
            # Lost the race for a port between picking and nginx's bind(): retry.
            failures.append(self.read_error_log())
            self._terminate()
        raise NginxStartError(
            f"nginx could not bind free ports after {self.BIND_ATTEMPTS} attempts:\n"
            + "\n".join(failures)
        )

    def stop(self) -> None:
        """Stop nginx: SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` seconds.  Idempotent."""
        self._terminate()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"ports={list(self.ports)}" if self.running else "stopped"
        return f"<NginxServer root={str(self.root)!r} {state}>"

    # ------------------------------------------------------------- internals

    def _require_running(self) -> None:
        if not self.ports:
            raise RuntimeError("NginxServer is not started; call start() or use `with`")

    def _render_config(self, ports: list[int], disabled_modules: frozenset[str]) -> str:
        temp_paths = "\n".join(
            f"    {module}_temp_path {_quote(self.temp_dir / module)};"
            for module in _TEMP_PATH_MODULES
            if module not in disabled_modules
        )
        limit = f"    limit_rate {self.limit_rate};\n" if self.limit_rate is not None else ""
        servers = "\n".join(
            f"    server {{\n"
            f"        listen 127.0.0.1:{port};\n"
            f"        server_name localhost;\n"
            f"        root {_quote(self.root)};\n"
            f"    }}"
            for port in ports
        )
        return (
            "# Generated by tests/_nginx.py (bgtransfer test suite).\n"
            "# Started with: -g 'daemon off; master_process off;'\n"
            f"pid {_quote(self.pid_path)};\n"
            f"error_log {_quote(self.error_log_path)} warn;\n"
            "\n"
            "events {\n"
            f"    worker_connections {self.worker_connections};\n"
            "}\n"
            "\n"
            "http {\n"
            "    default_type application/octet-stream;\n"
            f"    log_format bgtransfer '{ACCESS_LOG_FORMAT}';\n"
            f"    access_log {_quote(self.access_log_path)} bgtransfer;\n"
            f"{temp_paths}\n"
            "    sendfile on;\n"
            "    keepalive_timeout 65;\n"
            "    etag on;\n"
            "    server_tokens off;\n"
            f"{limit}"
            "\n"
            f"{servers}\n"
            "}\n"
        )

    def _command(self, version: tuple[int, ...]) -> list[str]:
        command = [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf_path)]
        if version >= (1, 19, 5):
            # Startup messages (before the config's error_log applies) go here too,
            # instead of the compiled-in default such as /var/log/nginx/error.log.
            command += ["-e", str(self.error_log_path)]
        return [*command, "-g", "daemon off; master_process off;"]

    def _launch(self, version: tuple[int, ...]) -> None:
        self._args = self._command(version)
        with self.stderr_path.open("wb") as stderr:
            self._proc = subprocess.Popen(
                self._args,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )

    def _wait_ready(self, ports: list[int]) -> bool:
        """True once ready; False on a bind race (caller retries); raise otherwise.

        nginx writes its pid file only after it has bound every listening socket,
        so "pid file written + every port connects" means the ports are nginx's,
        not some other process's that won the race for a port we picked.
        """
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.startup_timeout
        pending = list(ports)
        while True:
            if proc.poll() is not None:
                log = self.read_error_log()
                if _BIND_RACE_MARKER in log:
                    return False
                raise NginxStartError(
                    f"nginx exited with code {proc.returncode} during startup.\n"
                    f"command: {self._command_text()}\nconfig: {self.conf_path}\n{log}"
                )
            if _BIND_RACE_MARKER in _read_text(self.stderr_path):
                return False  # nginx would retry bind() for ~2.5 s; don't wait for it
            # Created before its number is written: wait for the number, so a
            # reader after start() never finds the file empty.
            if _read_text(self.pid_path).strip().isdigit():
                while pending and self._accepts(pending[0]):
                    pending.pop(0)
                if not pending:
                    return True
            if time.monotonic() >= deadline:
                raise NginxStartError(
                    f"nginx did not accept connections on 127.0.0.1:{pending} within "
                    f"{self.startup_timeout} s.\ncommand: {self._command_text()}\n"
                    f"config: {self.conf_path}\n{self.read_error_log()}"
                )
            time.sleep(0.02)  # readiness probe only: bounded by the deadline above

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return True
        except OSError:
            return False

    def _command_text(self) -> str:
        return shlex.join(self._args)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        self.ports = ()
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
        finally:
            proc.wait()
