"""What the test server observed: counters, gauges and the request log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType

import attrs
from multidict import CIMultiDictProxy

from ._sync import Notifier

__all__ = ["RecordedRequest", "Recorder", "ServerStatistics"]


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request as the server received it."""

    index: int
    """Position in arrival order, starting at 0; never reused, even after a reset."""
    connection_id: int
    """Identifies the TCP connection; equal ids mean a reused keep-alive connection."""
    method: str
    """Request method, e.g. ``"GET"``."""
    path: str
    """Percent-decoded path, without the query string."""
    query_string: str
    """The raw query string ('' when there is none)."""
    headers: CIMultiDictProxy[str]
    """Request headers; lookups are case-insensitive."""


@attrs.frozen(kw_only=True)
class ServerStatistics:
    """A snapshot of the server's counters.

    Counters (``requests``, ``bytes_sent``, ``total_connections``) and peaks are
    reset by :meth:`TestServer.reset_statistics
    <bgtransfer.testing.TestServer.reset_statistics>`; gauges (``open_connections``,
    ``in_flight``) always describe the present.
    """

    requests: int
    """Requests received (any method, any outcome)."""
    requests_by_path: Mapping[str, int]
    """``requests`` broken down by path."""
    bytes_sent: int
    """Response body bytes handed to the transport (headers not included)."""
    open_connections: int
    """TCP connections open right now."""
    peak_connections: int
    """Highest number of TCP connections open at the same time."""
    total_connections: int
    """TCP connections accepted."""
    in_flight: int
    """Requests whose handler is running right now."""
    peak_in_flight: int
    """Highest number of requests handled at the same time."""


class Recorder:
    """Mutable bookkeeping behind :class:`ServerStatistics`; notifies on every change."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._next_connection_id = 0
        self._next_index = 0
        self._open_connections = 0
        self._in_flight = 0
        self.requests: list[RecordedRequest] = []
        self.reset()

    def reset(self) -> None:
        """Zero the counters and the request log; peaks restart from the current gauges."""
        self._requests_by_path: Counter[str] = Counter()
        self._bytes_sent = 0
        self._total_connections = 0
        self._peak_connections = self._open_connections
        self._peak_in_flight = self._in_flight
        self.requests.clear()
        self._notifier.notify()

    def connection_opened(self) -> int:
        """Count a new TCP connection and return its id."""
        connection_id = self._next_connection_id
        self._next_connection_id += 1
        self._open_connections += 1
        self._total_connections += 1
        self._peak_connections = max(self._peak_connections, self._open_connections)
        self._notifier.notify()
        return connection_id

    def connection_closed(self) -> None:
        """Count a TCP connection as gone."""
        self._open_connections -= 1
        self._notifier.notify()

    def request_started(
        self,
        *,
        connection_id: int,
        method: str,
        path: str,
        query_string: str,
        headers: CIMultiDictProxy[str],
    ) -> RecordedRequest:
        """Log a request whose handler has just started."""
        request = RecordedRequest(
            index=self._next_index,
            connection_id=connection_id,
            method=method,
            path=path,
            query_string=query_string,
            headers=headers,
        )
        self._next_index += 1
        self.requests.append(request)
        self._requests_by_path[path] += 1
        self._in_flight += 1
        self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        self._notifier.notify()
        return request

    def request_finished(self) -> None:
        """Count a handler as finished (normally, by error or by cancellation)."""
        self._in_flight -= 1
        self._notifier.notify()

    def body_sent(self, size: int) -> None:
        """Add ``size`` body bytes to ``bytes_sent``."""
        self._bytes_sent += size
        self._notifier.notify()

    def snapshot(self) -> ServerStatistics:
        """Return the current :class:`ServerStatistics`."""
        return ServerStatistics(
            requests=sum(self._requests_by_path.values()),
            requests_by_path=MappingProxyType(dict(self._requests_by_path)),
            bytes_sent=self._bytes_sent,
            open_connections=self._open_connections,
            peak_connections=self._peak_connections,
            total_connections=self._total_connections,
            in_flight=self._in_flight,
            peak_in_flight=self._peak_in_flight,
        )
