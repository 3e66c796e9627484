"""A finished body checked before it is moved into place (issue 22's integrity)."""

from __future__ import annotations

import logging

from .._exceptions import IntegrityError
from .._io.digest import hash_file
from .._io.errors import file_error
from .._io.threads import run_blocking
from .download_job import DownloadJob

__all__ = ["verify"]

logger = logging.getLogger("bgtransfer")


async def verify(job: DownloadJob) -> None:
    """The whole body against ``checksum=``, ``expected_size=`` and the digests
    the server sent, before it is moved into place: a mismatch is an
    :class:`IntegrityError` (the partial file is then removed with the task).

    The digests computed as the bytes were written serve when they cover the
    whole file (one body from byte 0, or bodies that continued each other in
    this process); otherwise (segments, a partial file of an earlier process)
    the partial file is read once, in a worker thread."""
    integrity = job.integrity
    url = job.record.url
    algorithms = set(job.served_digests)
    if integrity is not None and integrity.checksum is not None:
        algorithms.add(integrity.checksum.algorithm)
    running = job.running
    if running is not None and running.covers(job.record.bytes_received, algorithms):
        size, actual, how = running.offset, running.digests(), "as it arrived"
    else:
        try:
            size, actual = await run_blocking(hash_file, job.partial, sorted(algorithms))
        except OSError as exc:
            raise file_error(exc, url=url, action="read", path=job.partial) from exc
        how = "read again"
    if integrity is not None and integrity.expected_size not in (None, size):
        raise IntegrityError(
            f"received {size} bytes, expected_size is {integrity.expected_size}",
            url=url,
            algorithm="size",
            expected=str(integrity.expected_size),
            actual=str(size),
        )
    expected: list[tuple[str, str, str]] = []
    if integrity is not None and integrity.checksum is not None:
        checksum = integrity.checksum
        expected.append((checksum.algorithm, checksum.hex, "checksum"))
    for algorithm, (digest, source) in sorted(job.served_digests.items()):
        expected.append((algorithm, digest.hex(), f"the server's {source}"))
    for algorithm, want, source in expected:
        got = actual[algorithm].hex()
        if got != want:
            raise IntegrityError(
                f"{algorithm} of the {size} bytes received is {got}, {source} says {want}",
                url=url,
                algorithm=algorithm,
                expected=want,
                actual=got,
            )
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "task %d: %d bytes verified, %s (%s)",
            job.record.id,
            size,
            how,
            ", ".join(sorted(actual)),
        )
