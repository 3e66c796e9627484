"""A finished partial file's digests, read once (in a worker thread) before its move."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .._core.digests import new_hash

__all__ = ["BLOCK", "hash_file"]

BLOCK = 1024 * 1024
"""Bytes read at a time: one buffer, reused (no unbounded reads)."""


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
