"""The daemon's commands: one function per route that acts on an attached session.

Each takes the served session, the request's JSON body and the number in its
path (the task's or the question's id; None where the route has none), and
answers a JSON object; the server checks the lease first and adds the
statistics (``server.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from .._core.resume_data import ResumeData
from .._core.wire import (
    WireError,
    decode_request,
    encode_exception,
    encode_snapshot,
)
from .._core.wire_auth import decode_answer
from .._core.wire_metrics import encode_session_metrics, encode_task_metrics
from .._core.wire_stats import encode_statistics
from .._core.wire_upload import decode_upload
from .._exceptions import BgTransferError
from .routing import NUMBER
from .sessions import Served

__all__ = ["COMMANDS", "Command", "run_command"]

Command = Callable[[Served, dict[str, Any], int | None], Awaitable[dict[str, Any]]]


async def submit(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    backend = served.backend
    if "each" in body:
        given = body["each"]
        if not isinstance(given, list):
            raise WireError("'each' is not a list")
        results = await _submit_each(served, given)
        served.activity()
        return {"results": results}
    if "request" in body:
        snapshot = await backend.submit(decode_request(body["request"]))
        served.activity()
        return {"tasks": [encode_snapshot(snapshot)]}
    given = body.get("requests")
    if not isinstance(given, list):
        raise WireError("'requests' is not a list")
    snapshots = await backend.submit_many([decode_request(item) for item in given])
    served.activity()
    return {"tasks": [encode_snapshot(s) for s in snapshots]}


def _id(number: int | None) -> int:
    """The task's (question's) id of a route that has one (routing.py's ``{n}``)."""
    assert number is not None
    return number


REFUSED: Final = (BgTransferError, TypeError, ValueError, KeyError)
"""What a request is refused with (the server's ``_guard`` answers them 4xx)."""


async def _submit_each(
    served: Served, given: list[Any], *, upload: bool = False
) -> list[dict[str, Any]]:
    """Each request as its own ``download()`` (``upload()``) would be, one
    result each, in order: ``{"task": <snapshot>}`` or ``{"error": <exception>}``.
    All go in one ``submit_many`` (``submit_uploads``: one journal write); when
    it refuses one of them, each is submitted alone, in order, so the others are
    made as their own calls would make them."""
    backend = served.backend
    decode: Callable[[object], Any] = decode_upload if upload else decode_request
    submit_one = backend.submit_upload if upload else backend.submit
    submit_all = backend.submit_uploads if upload else backend.submit_many
    results: list[dict[str, Any]] = [{} for _ in given]
    decoded: list[tuple[int, Any]] = []
    for index, item in enumerate(given):
        try:
            decoded.append((index, decode(item)))
        except REFUSED as exc:
            results[index] = {"error": encode_exception(exc)}
    try:
        snapshots = await submit_all([r for _, r in decoded])
    except REFUSED:
        for index, one in decoded:
            try:
                results[index] = {"task": encode_snapshot(await submit_one(one))}
            except REFUSED as exc:
                results[index] = {"error": encode_exception(exc)}
    else:
        for (index, _), snapshot in zip(decoded, snapshots, strict=True):
            results[index] = {"task": encode_snapshot(snapshot)}
    return results


async def submit_upload(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    """``{"upload": ...}`` (one ``upload()``), ``{"each": [...]}`` (concurrent
    ``upload()`` calls, one result each) or ``{"uploads": [...]}``
    (``upload_many``, all or none)."""
    backend = served.backend
    if "each" in body:
        given = body["each"]
        if not isinstance(given, list):
            raise WireError("'each' is not a list")
        results = await _submit_each(served, given, upload=True)
        served.activity()
        return {"results": results}
    if "uploads" in body:
        batch = body["uploads"]
        if not isinstance(batch, list):
            raise WireError("'uploads' is not a list")
        decoded = []
        for index, item in enumerate(batch):
            try:
                decoded.append(decode_upload(item))
            except REFUSED as exc:
                exc.add_note(f"request {index} of {len(batch)}; no task was made")
                raise
        snapshots = await backend.submit_uploads(decoded)
        served.activity()
        return {"tasks": [encode_snapshot(s) for s in snapshots]}
    snapshot = await backend.submit_upload(decode_upload(body.get("upload")))
    served.activity()
    return {"task": encode_snapshot(snapshot)}


async def submit_resumed(
    served: Served, body: dict[str, Any], number: int | None
) -> dict[str, Any]:
    blob = body.get("resume_data")
    if not isinstance(blob, str):
        raise WireError("'resume_data' is not text")
    destination = body.get("destination")
    if destination is not None and (
        not isinstance(destination, str) or not Path(destination).is_absolute()
    ):
        raise WireError(f"destination {destination!r} is not an absolute path")
    headers = decode_request({"url": "", "headers": body.get("headers", [])}).headers
    snapshot = await served.backend.submit_resumed(
        ResumeData.from_bytes(blob.encode("utf-8")), destination, headers=headers
    )
    served.activity()
    return {"task": encode_snapshot(snapshot)}


async def cancel(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    snapshot = await served.backend.cancel(
        _id(number),
        resume_data=bool(body.get("resume_data", False)),
        wait=bool(body.get("wait", True)),
    )
    return {"task": encode_snapshot(snapshot)}


async def suspend(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    snapshot = served.backend.suspend(_id(number))
    served.activity()
    return {"task": encode_snapshot(snapshot)}


async def resume(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    snapshot = served.backend.resume(_id(number))
    served.activity()
    return {"task": encode_snapshot(snapshot)}


async def wait(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    snapshot = await served.backend.wait(
        _id(number),
        hand_out=bool(body.get("hand_out", True)),
        stop_when_suspended=bool(body.get("stop_when_suspended", True)),
    )
    return {"task": encode_snapshot(snapshot)}


async def acknowledge(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    ):
        raise WireError("'ids' is not a list of task ids")
    if body.get("auto") is True:
        # What the client handed out under acknowledge="auto": as in-process,
        # forgotten with the journal's next commit, not one commit each (a
        # crash before it delivers them again: at least once).
        engine = served.backend.engine
        for task_id in ids:
            engine.acknowledge(task_id)
    else:
        await served.backend.acknowledge(ids)
    served.acknowledged(ids)
    return {}


async def answer_challenge(
    served: Served, body: dict[str, Any], number: int | None
) -> dict[str, Any]:
    """The application's answer to a question of its attach stream (the
    credentials go to the waiting task, in memory only)."""
    question_id = _id(number)
    if served.credentials is None:
        raise KeyError(
            f"session {served.identifier!r} asks no question: its Configuration.auth "
            "is not a provider"
        )
    served.credentials.answer(question_id, decode_answer(body))
    return {}


async def invalidate(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    served.backend.invalidate()
    return {}


async def events_delivered(
    served: Served, body: dict[str, Any], number: int | None
) -> dict[str, Any]:
    await served.backend.wait_events_delivered()
    return {}


async def flush(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    await served.backend.flush()
    return {}


async def task_metrics(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    metrics = await served.backend.task_metrics(_id(number))
    return {"metrics": encode_task_metrics(metrics)}


async def metrics(served: Served, body: dict[str, Any], number: int | None) -> dict[str, Any]:
    return {"metrics": encode_session_metrics(await served.backend.metrics())}


_TASK: Final = "/tasks/" + NUMBER

COMMANDS: Final[dict[str, Command]] = {
    "/tasks": submit,
    "/resumed": submit_resumed,
    "/uploads": submit_upload,
    _TASK + "/cancel": cancel,
    _TASK + "/suspend": suspend,
    _TASK + "/resume": resume,
    _TASK + "/wait": wait,
    "/acknowledge": acknowledge,
    "/challenges/" + NUMBER: answer_challenge,
    "/invalidate": invalidate,
    "/events-delivered": events_delivered,
    "/flush": flush,
    _TASK + "/metrics": task_metrics,
    "/metrics": metrics,
}
"""The routes below ``/v1/sessions/{identifier}`` that act on an attached session."""


async def run_command(
    command: Command, served: Served, body: dict[str, Any], number: int | None
) -> dict[str, Any]:
    """``command``'s answer with the session's statistics (every answer carries
    them: the client's ``statistics()`` reads no socket)."""
    answer = await command(served, body, number)
    answer["statistics"] = encode_statistics(served.backend.statistics())
    return answer
