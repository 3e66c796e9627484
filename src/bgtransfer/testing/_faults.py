"""Fault knobs (:class:`Faults`) and the per-path schedule that applies them."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from ._digests import DigestKnob

__all__ = ["FaultSchedule", "Faults"]


def _non_negative(
    _instance: Any, attribute: attrs.Attribute[Any], value: int | float | None
) -> None:
    if value is not None and value < 0:
        raise ValueError(f"Faults.{attribute.name} must be >= 0, got {value!r}")


def _no_line_breaks(_instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and ("\r" in value or "\n" in value or not value.strip()):
        raise ValueError(
            f"Faults.{attribute.name} must be a non-empty single-line string, got {value!r}"
        )


def _status(_instance: Any, _attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 200 <= value <= 599:
        raise ValueError(f"Faults.status must be between 200 and 599, got {value!r}")


def _drip(
    _instance: Any, _attribute: attrs.Attribute[Any], value: tuple[int, float] | None
) -> None:
    if value is None:
        return
    if len(value) != 2:
        raise ValueError(f"Faults.drip must be (bytes_per_chunk, seconds), got {value!r}")
    bytes_per_chunk, seconds = value
    if isinstance(bytes_per_chunk, bool) or not isinstance(bytes_per_chunk, int):
        raise TypeError(f"Faults.drip bytes_per_chunk must be an int, got {bytes_per_chunk!r}")
    if not isinstance(seconds, int | float):
        raise TypeError(f"Faults.drip seconds must be a number, got {seconds!r}")
    if bytes_per_chunk <= 0:
        raise ValueError(f"Faults.drip bytes_per_chunk must be > 0, got {bytes_per_chunk}")
    if seconds < 0:
        raise ValueError(f"Faults.drip seconds must be >= 0, got {seconds!r}")


def _redirect(_instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    _no_line_breaks(_instance, attribute, value)
    if value is not None and not value.startswith(("/", "http://", "https://")):
        raise ValueError(
            f"Faults.redirect_to must be a path starting with '/' or an http(s) URL, got {value!r}"
        )


_OPTIONAL_INT = attrs.validators.optional(attrs.validators.instance_of(int))
_OPTIONAL_NUMBER = attrs.validators.optional(attrs.validators.instance_of((int, float)))
_BOOL = attrs.validators.instance_of(bool)
_DIGEST_KNOB = attrs.validators.optional(attrs.validators.in_(("right", "wrong", "malformed")))


@attrs.frozen(kw_only=True)
class Faults:
    """How the server misbehaves for one path.  Every knob defaults to "off".

    Byte counts refer to body bytes, counted after the response headers.  Knobs
    combine where that makes sense (e.g. ``drip`` with ``reset_after``); the ones
    that cannot be combined raise :class:`ValueError` on construction.
    """

    status: int | None = attrs.field(default=None, validator=[_OPTIONAL_INT, _status])
    """Answer with this status (200-599) and a short ``text/plain`` body."""
    retry_after: str | None = attrs.field(default=None, validator=_no_line_breaks)
    """``Retry-After`` value sent with :attr:`status` (e.g. ``"3"`` or an HTTP-date)."""
    chunked: bool = attrs.field(default=False, validator=_BOOL)
    """Omit Content-Length and use chunked transfer coding."""
    drip: tuple[int, float] | None = attrs.field(default=None, validator=_drip)
    """``(bytes_per_chunk, seconds)``: send that many bytes, then sleep, repeatedly."""
    reset_after: int | None = attrs.field(default=None, validator=[_OPTIONAL_INT, _non_negative])
    """Abort the TCP connection (RST) after this many body bytes."""
    close_after: int | None = attrs.field(default=None, validator=[_OPTIONAL_INT, _non_negative])
    """Cleanly close the connection (FIN) after this many body bytes."""
    headers_delay: float | None = attrs.field(
        default=None, validator=[_OPTIONAL_NUMBER, _non_negative]
    )
    """Seconds to wait before sending the status line."""
    hold_after: int | None = attrs.field(default=None, validator=[_OPTIONAL_INT, _non_negative])
    """Wait on the path's gate after the headers and this many body bytes.

    See :meth:`TestServer.wait_held <bgtransfer.testing.TestServer.wait_held>` and
    :meth:`TestServer.release <bgtransfer.testing.TestServer.release>`.
    """
    redirect_to: str | None = attrs.field(default=None, validator=_redirect)
    """Answer ``302 Found`` with this ``Location`` (a path or an absolute URL)."""
    ignore_range: bool = attrs.field(default=False, validator=_BOOL)
    """Ignore ``Range`` and ``If-Range``: every GET gets ``200`` and the full body."""
    etag: Literal["strong", "weak", "none"] = attrs.field(
        default="strong", validator=attrs.validators.in_(("strong", "weak", "none"))
    )
    """Which ``ETag`` to send: the strong tag, its weak form ``W/"..."``, or none."""
    last_modified: bool = attrs.field(default=True, validator=_BOOL)
    """Whether to send ``Last-Modified``."""
    gzip: bool = attrs.field(default=False, validator=_BOOL)
    """Send ``Content-Encoding: gzip`` and a gzipped body whatever the client accepts.

    The representation is then the gzipped bytes: Content-Length and any range
    refer to them.
    """
    content_range_start_offset: int = attrs.field(
        default=0, validator=attrs.validators.instance_of(int)
    )
    """Shift the range announced in a 206's ``Content-Range`` by this many bytes.

    Both ends move, so the announced length still matches the body; only the
    position is wrong.
    """
    short_206: bool = attrs.field(default=False, validator=_BOOL)
    """Send only half of a 206's announced body, then close the connection cleanly."""
    repr_digest: DigestKnob | None = attrs.field(default=None, validator=_DIGEST_KNOB)
    """Send ``Repr-Digest`` (RFC 9530, ``sha-256``) of the whole representation:
    ``"right"``, ``"wrong"`` (one bit off) or ``"malformed"`` (does not parse)."""
    content_digest: DigestKnob | None = attrs.field(default=None, validator=_DIGEST_KNOB)
    """Send ``Content-Digest`` of this response's body (a 206's range only), as
    :attr:`repr_digest` says."""
    corrupt: bool = attrs.field(default=False, validator=_BOOL)
    """Flip the middle byte of the body sent (same length, same validators and
    digest fields: a body damaged on the way)."""

    def __attrs_post_init__(self) -> None:
        if self.retry_after is not None and self.status is None:
            raise ValueError("Faults.retry_after needs Faults.status")
        if self.reset_after is not None and self.close_after is not None:
            raise ValueError("Faults.reset_after and Faults.close_after are mutually exclusive")
        if self.status is not None and self.redirect_to is not None:
            raise ValueError("Faults.status and Faults.redirect_to are mutually exclusive")


NO_FAULTS = Faults()


@attrs.define
class _Override:
    faults: Faults
    remaining: int


class FaultSchedule:
    """The faults of one path: a standing setting plus counted one-shot overrides.

    The most recent override applies first; when its count is used up the
    schedule falls back to whatever applied before it.
    """

    def __init__(self) -> None:
        self._standing = NO_FAULTS
        self._overrides: list[_Override] = []

    def set(self, faults: Faults, times: int | None) -> None:
        """Apply ``faults`` to the next ``times`` requests, or until changed when ``None``."""
        if not isinstance(faults, Faults):
            raise TypeError(f"faults must be a Faults instance, got {faults!r}")
        if times is None:
            self._standing = faults
            self._overrides.clear()
            return
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be a positive int or None, got {times!r}")
        self._overrides.append(_Override(faults, times))

    def take(self) -> Faults:
        """The faults for the request now starting, consuming one use of an override."""
        if not self._overrides:
            return self._standing
        override = self._overrides[-1]
        override.remaining -= 1
        if override.remaining == 0:
            self._overrides.pop()
        return override.faults
