"""bgtransfer: durable background file transfers for asyncio.

The public API is exactly what this module lists in ``__all__``; everything in a
module whose name starts with an underscore is private and may change.
"""

from ._core.auth import BasicAuth, BearerToken, TaskInfo
from ._core.challenge import Challenge
from ._core.config import Configuration
from ._core.events import (
    CancelledEvent,
    ErrorEvent,
    EventsDeliveredEvent,
    EventsGapEvent,
    FinishedEvent,
    ProgressEvent,
    ResumedEvent,
    RetryEvent,
    SessionEvent,
    TaskEvent,
    TerminalEvent,
    UploadReply,
)
from ._core.fetch import FetchResponse
from ._core.metrics import AttemptMetrics, SessionMetrics, TaskMetrics, TimingSummary
from ._core.progress import BufferStatistics
from ._core.request import DownloadRequest
from ._core.resume_data import InvalidResumeDataError, ResumeData
from ._core.retry import RetryPolicy
from ._core.states import TaskState
from ._core.supervisor import SupervisorStatistics
from ._core.tus import TusCapabilities
from ._core.upload import UploadRequest
from ._core.version import VERSION
from ._engine.hub import EventStream
from ._exceptions import (
    AuthenticationError,
    BgTransferError,
    DaemonError,
    HTTPStatusError,
    IncompleteBodyError,
    IntegrityError,
    InvalidDestinationError,
    InvalidRequestError,
    InvalidSourceError,
    InvalidURLError,
    JournalError,
    JournalWriteError,
    LocalFileError,
    NetworkError,
    ProtocolError,
    ProxyError,
    RedirectError,
    ResourceTimeoutError,
    ResponseTooLargeError,
    ResumableUploadError,
    SessionClosedError,
    SessionError,
    SessionInUseError,
    SourceChangedError,
    TaskSuspendedError,
    TLSError,
    TransferError,
    TransferTimeoutError,
    UnsupportedSchemeError,
    UploadChecksumError,
    UploadExpiredError,
)
from ._session import Session, default_state_dir
from ._task import DownloadTask, UploadTask

__version__ = VERSION  # (the one place: _core/version.py)

__all__ = [
    "AttemptMetrics",
    "AuthenticationError",
    "BasicAuth",
    "BearerToken",
    "BgTransferError",
    "BufferStatistics",
    "CancelledEvent",
    "Challenge",
    "Configuration",
    "DaemonError",
    "DownloadRequest",
    "DownloadTask",
    "ErrorEvent",
    "EventStream",
    "EventsDeliveredEvent",
    "EventsGapEvent",
    "FetchResponse",
    "FinishedEvent",
    "HTTPStatusError",
    "IncompleteBodyError",
    "IntegrityError",
    "InvalidDestinationError",
    "InvalidRequestError",
    "InvalidResumeDataError",
    "InvalidSourceError",
    "InvalidURLError",
    "JournalError",
    "JournalWriteError",
    "LocalFileError",
    "NetworkError",
    "ProgressEvent",
    "ProtocolError",
    "ProxyError",
    "RedirectError",
    "ResourceTimeoutError",
    "ResponseTooLargeError",
    "ResumableUploadError",
    "ResumeData",
    "ResumedEvent",
    "RetryEvent",
    "RetryPolicy",
    "Session",
    "SessionClosedError",
    "SessionError",
    "SessionEvent",
    "SessionInUseError",
    "SessionMetrics",
    "SourceChangedError",
    "SupervisorStatistics",
    "TLSError",
    "TaskEvent",
    "TaskInfo",
    "TaskMetrics",
    "TaskState",
    "TaskSuspendedError",
    "TerminalEvent",
    "TimingSummary",
    "TransferError",
    "TransferTimeoutError",
    "TusCapabilities",
    "UnsupportedSchemeError",
    "UploadChecksumError",
    "UploadExpiredError",
    "UploadReply",
    "UploadRequest",
    "UploadTask",
    "__version__",
    "default_state_dir",
]
