"""Local file errors from a real write failing, in a child process with a file-size limit.

RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG), the nearest thing to
a full disk that needs no special mount; the limit is set in a child process so it
cannot touch the test runner's own files.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHILD = textwrap.dedent(
    """
    import asyncio, json, resource, signal, sys
    from pathlib import Path
    from bgtransfer import Session, Configuration, FinishedEvent, LocalFileError
    from bgtransfer.testing import TestServer

    async def main(tmp):
        async with TestServer() as server:
            big = server.add_file("/big.bin", size=3_000_000)
            small = server.add_file("/small.bin", size=10_000)
            # Past 1 MB every write fails with EFBIG instead of killing us with SIGXFSZ.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
            async with Session("disk", state_dir=tmp / "state") as session:
                failing = await session.download(server.url(big.path), tmp / "big.bin")
                fine = await session.download(server.url(small.path), tmp / "small.bin")
                try:
                    await failing.wait()
                    outcome = {"error": None}
                except LocalFileError as exc:
                    outcome = {"error": str(exc), "errno": exc.errno, "type": type(exc).__name__,
                               "is_oserror": isinstance(exc, OSError)}
                result = await fine.wait()
                outcome["other_finished"] = isinstance(result, FinishedEvent)
                partials = session.directory / "partials"
                outcome["partials"] = {p.name: p.stat().st_size for p in partials.iterdir()}
                data = failing.result.resume_data
                outcome["resume_offset"] = None if data is None else data.offset
            outcome["destination_exists"] = (tmp / "big.bin").exists()
            outcome["small_ok"] = (tmp / "small.bin").read_bytes() == small.data
            print(json.dumps(outcome))

    asyncio.run(main(Path(sys.argv[1])))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_write_failure_ends_in_local_file_error_and_keeps_the_partial_for_resume_data(
    tmp_path: Path,
) -> None:
    """Out of space (here EFBIG): the error carries resume data for the bytes on
    disk and the partial file stays for it; nothing reaches the destination."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["type"] == "LocalFileError"
    assert outcome["is_oserror"] is True
    assert outcome["errno"] == errno.EFBIG
    assert "file too large" in outcome["error"]
    assert outcome["error"].startswith("http://127.0.0.1:")
    assert "/big.bin" in outcome["error"]
    assert outcome["other_finished"] is True
    assert outcome["small_ok"] is True
    assert outcome["destination_exists"] is False
    (size,) = outcome["partials"].values()
    assert list(outcome["partials"]) == ["1.part"]
    assert 0 < outcome["resume_offset"] <= size <= 1_000_000
