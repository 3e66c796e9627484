"""Test support: a real loopback HTTP file server with fault injection.

:class:`TestServer` serves deterministic files over HTTP/1.1 with correct
Range/If-Range semantics (RFC 9110), can misbehave on demand (:class:`Faults`),
counts what it sees (:class:`ServerStatistics`, :class:`RecordedRequest`) and lets
tests synchronise with in-progress responses without sleeping
(``Faults(hold_after=...)``, :meth:`TestServer.wait_held`,
:meth:`TestServer.release`).  :class:`ThreadedTestServer` runs one in a background
thread for synchronous callers.
"""

from ._auth import AuthRequirement
from ._content import ServedFile
from ._faults import Faults
from ._ietf import IetfEndpoint
from ._server import TestServer
from ._stats import RecordedRequest, ServerStatistics
from ._threaded import ThreadedTestServer
from ._tus import TusEndpoint
from ._upload import ReceivedUpload
from ._uploads import StoredUpload, UploadFaults

__all__ = [
    "AuthRequirement",
    "Faults",
    "IetfEndpoint",
    "ReceivedUpload",
    "RecordedRequest",
    "ServedFile",
    "ServerStatistics",
    "StoredUpload",
    "TestServer",
    "ThreadedTestServer",
    "TusEndpoint",
    "UploadFaults",
]
