"""Cut the connection at random offsets, many times: the file always ends byte-exact."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _helpers import check_resumable_stream, collect, sha256_file
from bgtransfer import Configuration, FinishedEvent, RetryPolicy, Session
from bgtransfer.testing import Faults, TestServer

SIZE = 256 * 1024

cuts = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=SIZE - 1),
        st.sampled_from(["reset", "close"]),
        st.booleans(),  # the server also ignores Range on that request (a 200)
    ),
    min_size=1,
    max_size=4,
)


async def scenario(plan: list[tuple[int, str, bool]]) -> None:
    async with TestServer() as server:
        file = server.add_file("/f.bin", size=SIZE, seed="property")
        # Each listed cut applies to one request, in order; the request after
        # the last cut is clean. A cut offset is relative to that response's body.
        schedule = [
            Faults(reset_after=offset, ignore_range=whole)
            if kind == "reset"
            else Faults(close_after=offset, ignore_range=whole)
            for offset, kind, whole in plan
        ]
        policy = RetryPolicy(max_attempts=len(schedule) + 2, initial_delay=0, jitter=0)
        config = Configuration(retry=policy, progress_interval=0)
        with tempfile.TemporaryDirectory() as tmp:
            # One-shot faults stack (the latest applies first): push them in reverse.
            for faults in reversed(schedule):
                server.set_faults(file.path, faults, times=1)
            async with Session(state_dir=Path(tmp) / "state", config=config) as session:
                task = await session.download(server.url(file.path), Path(tmp) / "f.bin")
                events = await collect(task.events())
                terminal = check_resumable_stream(events, task.id)
                assert isinstance(terminal, FinishedEvent), terminal
                assert sha256_file(Path(tmp) / "f.bin") == file.sha256
                assert not list((session.directory / "partials").iterdir())
            # Each cut, then a clean request; fewer when a cut falls at or past the end
            # of what its response had to send (whether bytes sent just before a
            # reset are read first is up to timing: either way nothing is lost).
            assert server.statistics().requests <= len(schedule) + 1
            for request in server.requests:  # ranged requests carry the strong validator
                if "Range" in request.headers:
                    assert request.headers["If-Range"] == file.etag


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # a fixed set of examples: the suite stays deterministic
)
@given(plan=cuts)
def test_random_cuts_always_end_byte_exact(plan: list[tuple[int, str, bool]]) -> None:
    asyncio.run(scenario(plan))
