"""The asyncio :class:`TestServer`: lifecycle, file registry, faults and observation."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

from aiohttp import web

from ._auth import AuthRequirement, unauthorized
from ._content import (
    ServedFile,
    deterministic_bytes,
    make_served_file,
    next_last_modified,
    normalise_last_modified,
)
from ._faults import Faults, FaultSchedule
from ._ietf import IetfEndpoint
from ._responder import Responder
from ._stats import RecordedRequest, Recorder, ServerStatistics
from ._sync import Gates, Notifier, Shutdown
from ._tus import TusEndpoint
from ._upload import UPLOAD_METHODS, ReceivedUpload, receive_upload
from ._uploads import UploadEndpoint

__all__ = ["TestServer"]

_E = TypeVar("_E", bound=UploadEndpoint)

# Characters left unescaped by url(): RFC 3986 pchar plus "/".
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class _TrackingServer(web.Server):
    """aiohttp's low-level server, counting TCP connections as they open and close."""

    def __init__(self, handler: Callable[[web.BaseRequest], Any], recorder: Recorder) -> None:
        super().__init__(handler, handler_cancellation=True, access_log=None)
        self._recorder = recorder
        self._open: dict[web.RequestHandler, tuple[int, asyncio.Transport]] = {}
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    def connection_id(self, handler: web.RequestHandler) -> int:
        """The id of ``handler``'s connection, or -1 if it is already gone."""
        entry = self._open.get(handler)
        return -1 if entry is None else entry[0]

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._open[handler] = (self._recorder.connection_opened(), transport)
        self._all_closed.clear()

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        super().connection_lost(handler, exc)
        if self._open.pop(handler, None) is not None:
            self._recorder.connection_closed()
        if not self._open:
            self._all_closed.set()

    async def abort_all(self) -> None:
        """Abort every connection still open and wait until all are reported lost."""
        for _, transport in list(self._open.values()):
            transport.abort()  # connection_lost() follows on the next loop iteration
        await self._all_closed.wait()


def _check_path(path: str) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"path must be a string starting with '/', got {path!r}")
    if "?" in path or "#" in path:
        raise ValueError(f"path must not contain a query or fragment, got {path!r}")


class TestServer:
    """A real HTTP/1.1 file server on loopback, with fault injection, for tests.

    Use it as an async context manager; it binds ``host``:``port`` (port 0 picks a
    free port) on entry and shuts down cleanly on exit, aborting requests that
    are still held at a gate or sleeping in a fault::

        async with TestServer() as server:
            file = server.add_file("/files/a.bin", size=700_000)
            server.set_faults(file.path, Faults(reset_after=1000), times=1)
            ...  # download server.url(file.path)

    Files, faults and gates may be configured before or after starting.  All
    methods must be called from the event loop the server runs on (see
    :class:`~bgtransfer.testing.ThreadedTestServer` for synchronous callers).
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        shutdown_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Prepare a server for ``host``:``port``; nothing is bound until :meth:`start`.

        ``shutdown_timeout`` bounds how long :meth:`close` waits for responses
        still being streamed before cancelling them. With ``ssl_context`` (a
        server context holding a certificate) it serves HTTPS, and
        :attr:`base_url` starts with ``https://``.
        """
        self._ssl_context = ssl_context
        self._host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._files: dict[str, ServedFile] = {}
        self._weak_dates: set[str] = set()
        self._faults: dict[str, FaultSchedule] = {}
        self._notifier = Notifier()
        self._shutdown = Shutdown()
        self._gates = Gates(self._notifier, self._shutdown)
        self._recorder = Recorder(self._notifier)
        self._web_server: _TrackingServer | None = None
        self._runner: web.ServerRunner | None = None
        self._base_url: str | None = None
        self._uploads: list[ReceivedUpload] = []
        self._upload_endpoints: dict[str, UploadEndpoint] = {}
        self._auth: dict[str, AuthRequirement] = {}

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving.  Prefer ``async with``."""
        if self._runner is not None or self._shutdown.is_set:
            raise RuntimeError("a TestServer can be started only once")
        self._web_server = _TrackingServer(self._handle, self._recorder)
        runner = web.ServerRunner(self._web_server, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl_context)
        try:
            await site.start()
        except BaseException:
            await self.close()
            raise
        port = runner.addresses[0][1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "http" if self._ssl_context is None else "https"
        self._base_url = f"{scheme}://{host}:{port}"

    async def close(self) -> None:
        """Stop serving: abort held and sleeping requests, close every connection."""
        self._shutdown.set()
        self._gates.release_all()
        for endpoint in self._upload_endpoints.values():
            endpoint.release()
        self._notifier.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            assert self._web_server is not None
            await runner.cleanup()
            # Connections whose transport is still flushing to a client that stopped
            # reading would otherwise outlive the server.
            await self._web_server.abort_all()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- addresses ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS) of the running server,
        without a trailing slash."""
        if self._base_url is None:
            raise RuntimeError("the TestServer has not been started")
        return self._base_url

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self.base_url.rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server, percent-encoding as needed."""
        _check_path(path)
        return self.base_url + quote(path, safe=_PATH_SAFE)

    # -- files -------------------------------------------------------------------

    def add_file(
        self,
        path: str,
        *,
        size: int | None = None,
        data: bytes | None = None,
        seed: int | str | None = None,
        last_modified: datetime | None = None,
    ) -> ServedFile:
        """Serve a new file at ``path`` and return it.

        Give exactly one of ``data`` (explicit content) or ``size`` (that many
        deterministic pseudo-random bytes generated from ``seed``, which defaults
        to the path).  ``last_modified`` (timezone-aware) defaults to one hour ago,
        whole seconds, so that it is a strong validator.
        """
        _check_path(path)
        if path in self._files:
            raise ValueError(f"{path!r} is already served; use replace_file() to change it")
        content = self._content(path, size=size, data=data, seed=path if seed is None else seed)
        file = make_served_file(
            path,
            content,
            generation=0,
            last_modified=next_last_modified(None) if last_modified is None else last_modified,
        )
        self._files[path] = file
        return file

    def replace_file(
        self,
        path: str,
        *,
        size: int | None = None,
        data: bytes | None = None,
        seed: int | str | None = None,
        last_modified: datetime | None = None,
    ) -> ServedFile:
        """Change the content served at ``path``, as if the file changed on the server.

        ``data``/``size``/``seed`` work as in :meth:`add_file`; with neither
        ``data`` nor ``size`` the size stays the same.  The default ``seed``
        depends on the new generation, so the bytes differ from before.  The new
        file always gets a new ETag and, unless ``last_modified`` is given, a
        Last-Modified at least one second later than before.  Passing the old
        ``last_modified`` again makes that date a weak validator, so ``If-Range``
        with it no longer matches (RFC 9110 §8.8.2.2).
        """
        old = self.file(path)
        generation = old.generation + 1
        if size is None and data is None:
            size = old.size
        if seed is None:
            seed = f"{path}#{generation}"
        content = self._content(path, size=size, data=data, seed=seed)
        if last_modified is None:
            modified = next_last_modified(old.last_modified)
        else:
            modified = normalise_last_modified(last_modified)
        if modified == old.last_modified:
            self._weak_dates.add(path)
        else:
            self._weak_dates.discard(path)
        file = make_served_file(path, content, generation=generation, last_modified=modified)
        self._files[path] = file
        return file

    def remove_file(self, path: str) -> None:
        """Stop serving ``path``; later requests get 404."""
        self.file(path)
        del self._files[path]
        self._weak_dates.discard(path)

    def file(self, path: str) -> ServedFile:
        """The file currently served at ``path``; :class:`KeyError` if there is none."""
        try:
            return self._files[path]
        except KeyError:
            raise KeyError(f"no file is served at {path!r}") from None

    @staticmethod
    def _content(path: str, *, size: int | None, data: bytes | None, seed: int | str) -> bytes:
        if (size is None) == (data is None):
            raise ValueError(f"{path!r}: give exactly one of size= or data=")
        if data is not None:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"data must be bytes, got {type(data).__name__}")
            return bytes(data)
        assert size is not None
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be an int >= 0, got {size!r}")
        return deterministic_bytes(size, seed)

    # -- resumable-upload endpoints (testing/_tus.py, testing/_ietf.py) ------------------

    def add_tus_endpoint(
        self,
        prefix: str = "/tus/",
        *,
        max_size: int | None = None,
        checksum_algorithms: tuple[str, ...] = ("sha1",),
        termination: bool = True,
    ) -> TusEndpoint:
        """Serve a tus 1.0.0 upload endpoint under ``prefix`` and return it."""
        return self._add_upload_endpoint(
            TusEndpoint(
                prefix,
                max_size=max_size,
                checksum_algorithms=checksum_algorithms,
                termination=termination,
            )
        )

    def add_ietf_endpoint(
        self, prefix: str = "/ietf/", *, max_append_size: int | None = None
    ) -> IetfEndpoint:
        """Serve an IETF resumable-upload draft endpoint under ``prefix`` and return it."""
        return self._add_upload_endpoint(IetfEndpoint(prefix, max_append_size=max_append_size))

    def _add_upload_endpoint(self, endpoint: _E) -> _E:
        _check_path(endpoint.prefix)
        if endpoint.prefix in self._upload_endpoints:
            raise ValueError(f"{endpoint.prefix!r} already has an upload endpoint")
        self._upload_endpoints[endpoint.prefix] = endpoint
        return endpoint

    # -- faults and gates ----------------------------------------------------------

    def set_faults(self, path: str, faults: Faults, *, times: int | None = None) -> None:
        """Apply ``faults`` to requests for ``path`` (which need not be a served file).

        With ``times=N`` the faults apply to the next N requests for ``path`` and
        then revert to whatever applied before; with ``None`` they apply until the
        next ``set_faults(path, ..., times=None)``, which also drops pending
        one-shot faults.  ``Faults()`` turns everything off.  Any call re-arms the
        path's gate (see :meth:`release`).
        """
        _check_path(path)
        self._faults.setdefault(path, FaultSchedule()).set(faults, times)
        self._gates.arm(path)

    def require_auth(self, path: str, requirement: AuthRequirement | None) -> None:
        """Answer requests for ``path`` 401 unless they carry the credentials
        ``requirement`` accepts (see :class:`AuthRequirement`); None lifts it.
        Checked before the path's faults; a 401 takes none of them."""
        _check_path(path)
        if requirement is None:
            self._auth.pop(path, None)
        else:
            self._auth[path] = requirement

    def hold(self, path: str) -> None:
        """Re-arm ``path``'s gate after :meth:`release`, without changing its faults."""
        _check_path(path)
        self._gates.arm(path)

    def release(self, path: str) -> None:
        """Open ``path``'s gate.

        Requests held there (``Faults(hold_after=...)``) continue, and later
        requests pass the gate without waiting until :meth:`hold` or
        :meth:`set_faults` is called for ``path``.
        """
        _check_path(path)
        self._gates.release(path)

    def held(self, path: str) -> int:
        """How many requests for ``path`` are waiting at its gate right now."""
        return self._gates.held(path)

    async def wait_held(self, path: str, count: int = 1) -> None:
        """Return once at least ``count`` requests for ``path`` are held at its gate.

        Event-driven, no polling; bound it with :func:`asyncio.timeout` if needed.
        Raises :class:`RuntimeError` if the server closes first.
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        await self._notifier.wait_for(lambda: self._gates.held(path) >= count)

    async def wait_until(self, predicate: Callable[[ServerStatistics], bool]) -> ServerStatistics:
        """Wait until ``predicate(statistics())`` is true and return those statistics.

        Re-evaluated whenever a counter changes, e.g.
        ``await server.wait_until(lambda s: s.open_connections == 0)``.
        Raises like :meth:`wait_held`.
        """
        await self._notifier.wait_for(lambda: predicate(self._recorder.snapshot()))
        return self._recorder.snapshot()

    # -- observation -----------------------------------------------------------------

    def statistics(self) -> ServerStatistics:
        """A snapshot of the counters; see :class:`ServerStatistics`."""
        return self._recorder.snapshot()

    def reset_statistics(self) -> None:
        """Zero the counters, clear :attr:`requests`, restart peaks from current gauges."""
        self._recorder.reset()

    @property
    def requests(self) -> Sequence[RecordedRequest]:
        """Requests received since start (or the last reset), in arrival order."""
        return tuple(self._recorder.requests)

    @property
    def uploads(self) -> Sequence[ReceivedUpload]:
        """The bodies of ``PUT`` and ``POST`` requests received (any path), in
        the order they ended: length, SHA-256 and whether each was complete."""
        return tuple(self._uploads)

    def _received(self, upload: ReceivedUpload) -> None:
        self._uploads.append(upload)
        self._notifier.notify()

    # -- request handling ------------------------------------------------------------

    def _upload_endpoint(self, path: str) -> UploadEndpoint | None:
        if not self._upload_endpoints:
            return None
        for prefix, endpoint in self._upload_endpoints.items():
            if path.startswith(prefix):
                return endpoint
        return None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self._web_server is not None  # requests only arrive once started
        path = request.path
        self._recorder.request_started(
            connection_id=self._web_server.connection_id(request.protocol),
            method=request.method,
            path=path,
            query_string=request.query_string,
            headers=request.headers,
        )
        try:
            requirement = self._auth.get(path)
            if requirement is not None and not requirement.accepts(
                request.headers.get("Authorization")
            ):
                return await unauthorized(request, requirement)  # (_auth.py)
            endpoint = self._upload_endpoint(path)
            if endpoint is not None:
                return await endpoint.handle(request)
            schedule = self._faults.get(path)
            if request.method in UPLOAD_METHODS and path not in self._files:
                # the upload endpoint (_upload.py): any path that serves no file
                return await receive_upload(
                    request,
                    Faults() if schedule is None else schedule.take(),
                    gates=self._gates,
                    shutdown=self._shutdown,
                    record=self._received,
                )
            responder = Responder(
                request,
                Faults() if schedule is None else schedule.take(),
                self._files.get(path),
                date_is_strong=path not in self._weak_dates,
                gates=self._gates,
                shutdown=self._shutdown,
                recorder=self._recorder,
            )
            return await responder.respond()
        finally:
            self._recorder.request_finished()
