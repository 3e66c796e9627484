"""A :class:`TestServer` on its own event loop in a background thread, for sync code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from ._auth import AuthRequirement
from ._content import ServedFile
from ._faults import Faults
from ._server import TestServer
from ._stats import RecordedRequest, ServerStatistics

__all__ = ["ThreadedTestServer"]

_T = TypeVar("_T")


class ThreadedTestServer:
    """Run a :class:`TestServer` in a daemon thread; use it from synchronous code::

        with ThreadedTestServer() as server:
            server.add_file("/a.bin", size=1000)
            urllib.request.urlopen(server.url("/a.bin")).read()

    Every method forwards to the server on its loop thread and waits for the
    result, so it is safe to call from any thread.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Prepare a server for ``host``:``port``; the thread starts on ``__enter__``."""
        self._host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: TestServer | None = None
        self._stop: asyncio.Event | None = None
        self._started: Future[None] = Future()

    def __enter__(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("a ThreadedTestServer can be started only once")
        self._thread = threading.Thread(
            target=self._run, name="bgtransfer-test-server", daemon=True
        )
        self._thread.start()
        try:
            self._started.result()
        except BaseException:
            self._thread.join()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        assert self._stop is not None
        assert self._thread is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            server = TestServer(self._host, self._port)
            await server.start()
        except BaseException as exc:
            self._started.set_exception(exc)
            return
        self._server = server
        try:
            self._started.set_result(None)
            await self._stop.wait()
        finally:
            self._server = None
            await server.close()

    def _call(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if self._loop is None or self._server is None:
            raise RuntimeError("the ThreadedTestServer is not running")

        async def call() -> _T:
            return function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    @property
    def server(self) -> TestServer:
        """The underlying server; only touch it from its loop thread."""
        if self._server is None:
            raise RuntimeError("the ThreadedTestServer is not running")
        return self._server

    @property
    def base_url(self) -> str:
        """See :attr:`TestServer.base_url`."""
        return self.server.base_url  # immutable once started

    @property
    def port(self) -> int:
        """See :attr:`TestServer.port`."""
        return self.server.port

    def url(self, path: str) -> str:
        """See :meth:`TestServer.url`."""
        return self.server.url(path)  # pure computation on immutable state

    def add_file(
        self,
        path: str,
        *,
        size: int | None = None,
        data: bytes | None = None,
        seed: int | str | None = None,
        last_modified: datetime | None = None,
    ) -> ServedFile:
        """See :meth:`TestServer.add_file`."""
        return self._call(
            self.server.add_file,
            path,
            size=size,
            data=data,
            seed=seed,
            last_modified=last_modified,
        )

    def replace_file(
        self,
        path: str,
        *,
        size: int | None = None,
        data: bytes | None = None,
        seed: int | str | None = None,
        last_modified: datetime | None = None,
    ) -> ServedFile:
        """See :meth:`TestServer.replace_file`."""
        return self._call(
            self.server.replace_file,
            path,
            size=size,
            data=data,
            seed=seed,
            last_modified=last_modified,
        )

    def set_faults(self, path: str, faults: Faults, *, times: int | None = None) -> None:
        """See :meth:`TestServer.set_faults`."""
        self._call(self.server.set_faults, path, faults, times=times)

    def require_auth(self, path: str, requirement: AuthRequirement | None) -> None:
        """See :meth:`TestServer.require_auth`."""
        self._call(self.server.require_auth, path, requirement)

    def release(self, path: str) -> None:
        """See :meth:`TestServer.release`."""
        self._call(self.server.release, path)

    def statistics(self) -> ServerStatistics:
        """See :meth:`TestServer.statistics`."""
        return self._call(self.server.statistics)

    def reset_statistics(self) -> None:
        """See :meth:`TestServer.reset_statistics`."""
        self._call(self.server.reset_statistics)

    @property
    def requests(self) -> Sequence[RecordedRequest]:
        """See :attr:`TestServer.requests`."""
        return self._call(lambda: self.server.requests)
