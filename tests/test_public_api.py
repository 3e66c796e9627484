"""The front door: what ``import bgtransfer`` offers, pinned."""

from __future__ import annotations

import typing
from importlib.metadata import version
from pathlib import Path

import attrs
import pytest

import bgtransfer
import bgtransfer.testing

EXPECTED = {
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
    "SourceChangedError",
    "SessionMetrics",
    "SupervisorStatistics",
    "TaskEvent",
    "TaskMetrics",
    "TimingSummary",
    "TaskInfo",
    "TLSError",
    "TaskState",
    "TaskSuspendedError",
    "TerminalEvent",
    "TransferError",
    "TransferTimeoutError",
    "TusCapabilities",
    "UnsupportedSchemeError",
    "UploadReply",
    "UploadRequest",
    "UploadTask",
    "UploadChecksumError",
    "UploadExpiredError",
    "__version__",
    "default_state_dir",
}


def test_all_is_pinned() -> None:
    assert set(bgtransfer.__all__) == EXPECTED
    for name in bgtransfer.__all__:
        assert hasattr(bgtransfer, name), name


def test_testing_front_door() -> None:
    assert set(bgtransfer.testing.__all__) >= {
        "TestServer",
        "Faults",
        "ServedFile",
        "ServerStatistics",
    }


def test_event_union_is_closed_and_frozen() -> None:
    members = typing.get_args(bgtransfer.TaskEvent)
    assert set(members) == {
        bgtransfer.ProgressEvent,
        bgtransfer.ResumedEvent,
        bgtransfer.RetryEvent,
        bgtransfer.FinishedEvent,
        bgtransfer.ErrorEvent,
        bgtransfer.CancelledEvent,
    }
    for cls in members:
        assert attrs.has(cls)
        assert "__slots__" in cls.__dict__
        with pytest.raises(TypeError):
            cls(1)  # keyword-only


def test_py_typed_is_shipped() -> None:
    assert (Path(bgtransfer.__file__).parent / "py.typed").is_file()


def test_version_matches_metadata() -> None:
    assert bgtransfer.__version__ == version("bgtransfer")
