"""Waiting for a log record: a synchronisation point for work the library does
in the background and tells only its log about."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator


class LogSeen(logging.Handler):
    """``event`` is set once a record whose message contains ``words`` is logged
    (on the loop's thread: the library logs from the loop)."""

    def __init__(self, words: str) -> None:
        super().__init__(logging.DEBUG)
        self.words = words
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


@contextlib.contextmanager
def log_seen(words: str, logger: str = "bgtransfer") -> Iterator[asyncio.Event]:
    """``with log_seen("removed") as seen: ...; await seen.wait()``; the logger
    is set to DEBUG meanwhile."""
    handler = LogSeen(words)
    target = logging.getLogger(logger)
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    try:
        yield handler.event
    finally:
        target.removeHandler(handler)
        target.setLevel(level)
