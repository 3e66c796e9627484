"""Digests of a partial file: hashed as its bytes are written (:class:`RunningDigest`),
or read once in a worker thread before the move (:func:`hash_file`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._core.digests import new_hash

__all__ = ["BLOCK", "RunningDigest", "hash_file"]

BLOCK = 1024 * 1024
"""Bytes read at a time by :func:`hash_file`: one buffer, reused."""


class RunningDigest:
    """The digests of a partial file's bytes from 0, updated by the writes of the
    one transfer that owns it (in the file thread or the pump's: one write at a
    time). ``offset`` is how many bytes it covers; a write elsewhere than there,
    or one that failed, makes it ``broken`` (the file is then read again)."""

    __slots__ = ("broken", "hashes", "offset")

    def __init__(self, algorithms: Iterable[str]) -> None:
        self.hashes = {name: new_hash(name) for name in algorithms}
        self.offset = 0
        self.broken = False

    def update(self, offset: int, chunks: Sequence[bytes | bytearray | memoryview]) -> None:
        """``chunks`` were written at ``offset``."""
        if self.broken or offset != self.offset:
            self.broken = True
            return
        for chunk in chunks:
            for h in self.hashes.values():
                h.update(chunk)
            self.offset += len(chunk)

    def covers(self, size: int, algorithms: Iterable[str]) -> bool:
        """Whether it holds the digests of a file of ``size`` bytes for ``algorithms``."""
        return not self.broken and self.offset == size and set(algorithms) <= self.hashes.keys()

    def digests(self) -> dict[str, bytes]:
        return {name: h.digest() for name, h in self.hashes.items()}


def hash_file(path: Path, algorithms: Iterable[str]) -> tuple[int, dict[str, bytes]]:
    """The file's size and its digest for each algorithm (blocking: run it in a thread)."""
    hashes = {name: new_hash(name) for name in algorithms}
    size = 0
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        while n := os.readv(fd, [buffer]):
            chunk = view[:n]
            for h in hashes.values():
                h.update(chunk)
            size += n
    finally:
        os.close(fd)
    return size, {name: h.digest() for name, h in hashes.items()}
