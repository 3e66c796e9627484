"""The exception tree: bases, messages, attributes, and the docstring's drawing."""

from __future__ import annotations

import copy
import errno
import inspect
import os
import pickle
import re

import pytest

import bgtransfer
from bgtransfer import _exceptions

E = bgtransfer

ALL_CLASSES = [
    obj
    for _, obj in inspect.getmembers(_exceptions, inspect.isclass)
    if obj.__module__ == _exceptions.__name__
]
URL = "https://example.com/data.bin"


def test_module_defines_the_thirty_one_classes() -> None:
    assert {c.__name__ for c in ALL_CLASSES} == set(_exceptions.__all__)
    assert len(ALL_CLASSES) == 31


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_class_is_exported_publicly(cls: type) -> None:
    assert getattr(bgtransfer, cls.__name__) is cls
    assert cls.__name__ in bgtransfer.__all__


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_class_subclasses_bgtransfer_error(cls: type) -> None:
    assert issubclass(cls, E.BgTransferError)
    assert issubclass(cls, Exception)


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (E.BgTransferError, (Exception,)),
        (E.InvalidRequestError, (E.BgTransferError, ValueError)),
        (E.InvalidURLError, (E.InvalidRequestError,)),
        (E.UnsupportedSchemeError, (E.InvalidRequestError,)),
        (E.InvalidDestinationError, (E.InvalidRequestError,)),
        (E.SessionError, (E.BgTransferError, RuntimeError)),
        (E.SessionClosedError, (E.SessionError,)),
        (E.SessionInUseError, (E.SessionError,)),
        (E.TaskSuspendedError, (E.SessionError,)),
        (E.DaemonError, (E.SessionError,)),
        (E.JournalError, (E.SessionError,)),
        (E.TransferError, (E.BgTransferError,)),
        (E.HTTPStatusError, (E.TransferError,)),
        (E.IntegrityError, (E.TransferError,)),
        (E.AuthenticationError, (E.HTTPStatusError,)),
        (E.NetworkError, (E.TransferError, ConnectionError)),
        (E.IncompleteBodyError, (E.NetworkError,)),
        (E.ProtocolError, (E.TransferError,)),
        (E.ResumableUploadError, (E.ProtocolError,)),
        (E.UploadExpiredError, (E.TransferError,)),
        (E.UploadChecksumError, (E.TransferError,)),
        (E.RedirectError, (E.TransferError,)),
        (E.ResponseTooLargeError, (E.TransferError,)),
        (E.TransferTimeoutError, (E.TransferError, TimeoutError)),
        (E.LocalFileError, (E.TransferError, OSError)),
        (E.JournalWriteError, (E.LocalFileError,)),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_bases(cls: type, bases: tuple[type, ...]) -> None:
    assert cls.__bases__ == bases


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (E.InvalidURLError, ValueError),
        (E.UnsupportedSchemeError, ValueError),
        (E.InvalidDestinationError, ValueError),
        (E.NetworkError, ConnectionError),
        (E.IncompleteBodyError, ConnectionError),
        (E.IncompleteBodyError, OSError),
        (E.TransferTimeoutError, TimeoutError),
        (E.LocalFileError, OSError),
        (E.SessionClosedError, RuntimeError),
    ],
    ids=lambda v: v.__name__,
)
def test_builtin_families(cls: type, builtin: type) -> None:
    assert issubclass(cls, builtin)


@pytest.mark.parametrize(
    ("cls", "not_a"),
    [
        (E.TransferError, ValueError),
        (E.HTTPStatusError, OSError),
        (E.ProtocolError, OSError),
        (E.InvalidURLError, E.TransferError),
        (E.SessionError, E.TransferError),
        (E.TransferError, E.SessionError),
    ],
    ids=lambda v: v.__name__,
)
def test_families_do_not_overlap(cls: type, not_a: type) -> None:
    assert not issubclass(cls, not_a)


@pytest.mark.parametrize(
    "cls",
    [
        E.TransferError,
        E.NetworkError,
        E.IncompleteBodyError,
        E.ProtocolError,
        E.RedirectError,
        E.TransferTimeoutError,
        E.ResumableUploadError,
        E.UploadChecksumError,
    ],
    ids=lambda c: c.__name__,
)
def test_transfer_errors_name_the_url(cls: type[E.TransferError]) -> None:
    error = cls("something broke", url=URL)
    assert error.url == URL
    assert str(error) == f"{URL}: something broke"


@pytest.mark.parametrize(
    "cls",
    [E.TransferError, E.NetworkError, E.ProtocolError, E.TransferTimeoutError, E.LocalFileError],
    ids=lambda c: c.__name__,
)
def test_transfer_errors_require_url_keyword(cls: type) -> None:
    with pytest.raises(TypeError):
        cls("message")
    with pytest.raises(TypeError):
        cls("message", URL)


def test_upload_expired_error_carries_the_status_through_pickling() -> None:
    error = E.UploadExpiredError("the server no longer has the upload", url=URL, status=410)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.status, copy.url, str(copy)) == (
        E.UploadExpiredError,
        410,
        URL,
        f"{URL}: the server no longer has the upload",
    )


def test_http_status_error() -> None:
    error = E.HTTPStatusError(404, "Not Found", url=URL)
    assert error.status == 404
    assert error.reason == "Not Found"
    assert error.url == URL
    assert str(error) == f"{URL}: HTTP 404 Not Found"


def test_http_status_error_without_reason() -> None:
    error = E.HTTPStatusError(599, url=URL)
    assert error.reason == ""
    assert str(error) == f"{URL}: HTTP 599"


def test_local_file_error_carries_os_details() -> None:
    error = E.LocalFileError(
        "cannot write /x/y.part: no space left on device",
        url=URL,
        errno=errno.ENOSPC,
        filename="/x/y.part",
    )
    assert error.errno == errno.ENOSPC
    assert error.filename == "/x/y.part"
    assert error.strerror == os.strerror(errno.ENOSPC)
    assert error.url == URL
    assert str(error) == f"{URL}: cannot write /x/y.part: no space left on device"
    assert "[Errno" not in str(error)
    assert isinstance(error, OSError)


def test_local_file_error_without_errno() -> None:
    error = E.LocalFileError("weird", url=URL)
    assert error.errno is None
    assert error.strerror is None
    assert error.filename is None
    assert str(error) == f"{URL}: weird"


@pytest.mark.parametrize(
    ("error", "catch"),
    [
        (E.NetworkError("reset", url=URL), ConnectionError),
        (E.IncompleteBodyError("short", url=URL), E.NetworkError),
        (E.TransferTimeoutError("slow", url=URL), TimeoutError),
        (E.LocalFileError("full", url=URL, errno=errno.ENOSPC), OSError),
        (E.InvalidURLError("bad"), ValueError),
        (E.SessionClosedError("closed"), RuntimeError),
        (E.HTTPStatusError(500, url=URL), E.TransferError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.__name__,
)
def test_caught_by_builtin_except_clauses(error: Exception, catch: type[Exception]) -> None:
    with pytest.raises(catch):
        raise error


# -- the docstring's drawing ----------------------------------------------------------------------

_TREE_LINE = re.compile(r"^(?P<indent>[\s│├└─]*)(?P<name>[A-Z]\w+)(?P<rest>.*)$")


def _drawn_tree() -> list[tuple[int, str, str]]:
    doc = _exceptions.__doc__
    assert doc is not None
    block = doc.split("::", 1)[1].split("\n\n", 2)[1]  # the indented literal block
    rows = []
    for line in block.splitlines():
        match = _TREE_LINE.match(line)
        if match is None:  # a continuation of the previous line's description
            assert not re.search(r"\b[A-Z]\w*Error\b", line), line
            continue
        rows.append((len(match["indent"]), match["name"], match["rest"]))
    return rows


def test_docstring_tree_mentions_every_class() -> None:
    drawn = {name for _, name, _ in _drawn_tree()}
    assert drawn == {cls.__name__ for cls in ALL_CLASSES}


def test_docstring_tree_mentions_each_class_once() -> None:
    names = [name for _, name, _ in _drawn_tree()]
    assert len(names) == len(set(names))


def test_docstring_tree_matches_the_real_hierarchy() -> None:
    stack: list[tuple[int, type]] = []
    for depth, name, rest in _drawn_tree():
        cls = getattr(_exceptions, name)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            assert cls.__bases__[0] is stack[-1][1], (
                f"{name} is drawn under {stack[-1][1].__name__}"
            )
        else:
            assert cls is E.BgTransferError
        mixins = re.findall(r"\(\+ (\w+)\)", rest)
        builtin_bases = [b for b in cls.__bases__ if b.__module__ == "builtins"]
        if stack:  # the root is drawn as "(Exception)"
            assert [b.__name__ for b in builtin_bases] == mixins, name
        else:
            assert rest.split()[0] == "(Exception)"
            assert cls.__bases__ == (Exception,)
        stack.append((depth, cls))


@pytest.mark.parametrize(
    "error",
    [
        bgtransfer.HTTPStatusError(404, "Not Found", url="http://h/p"),
        bgtransfer.NetworkError("connection refused", url="http://h/p"),
        bgtransfer.TransferTimeoutError("no data", url="http://h/p"),
        bgtransfer.LocalFileError("disk full", url="http://h/p", errno=28, filename="/x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transfer_errors_pickle_and_copy(error: bgtransfer.TransferError) -> None:
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(clone) is type(error)
        assert str(clone) == str(error)
        assert clone.url == error.url
        assert vars(clone) == vars(error)
        if isinstance(error, OSError):
            assert isinstance(clone, OSError)
            assert (clone.errno, clone.filename) == (error.errno, error.filename)


def test_session_in_use_error_names_identifier_and_owner() -> None:
    error = E.SessionInUseError("com.example.bg", 4242)
    assert (error.identifier, error.pid) == ("com.example.bg", 4242)
    assert str(error) == "session 'com.example.bg' is in use by process 4242"
    assert str(E.SessionInUseError("x", None)) == "session 'x' is in use by another process"
    copied = pickle.loads(pickle.dumps(error))
    assert (type(copied), str(copied), copied.pid) == (E.SessionInUseError, str(error), 4242)


def test_journal_error_names_path_and_problem() -> None:
    error = E.JournalError("/state/id/journal.sqlite3", "the file is empty")
    assert (error.path, error.problem) == ("/state/id/journal.sqlite3", "the file is empty")
    assert str(error) == "journal /state/id/journal.sqlite3: the file is empty"
    copied = pickle.loads(pickle.dumps(error))
    assert (type(copied), str(copied), copied.path) == (E.JournalError, str(error), error.path)
