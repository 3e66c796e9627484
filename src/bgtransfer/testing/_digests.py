"""The integrity knobs' effect on a response: RFC 9530 digest fields, a corrupted body."""

from __future__ import annotations

import base64
import hashlib
from typing import Literal

__all__ = ["DigestKnob", "corrupted", "digest_fields"]

DigestKnob = Literal["right", "wrong", "malformed"]
"""What a digest field says: the true sha-256, a wrong one, or something unparsable."""


def _field(knob: DigestKnob, data: bytes | memoryview) -> str:
    if knob == "malformed":
        return "sha-256=not a byte sequence"
    digest = hashlib.sha256(data).digest()
    if knob == "wrong":
        digest = bytes([digest[0] ^ 0xFF]) + digest[1:]
    return f"sha-256=:{base64.b64encode(digest).decode()}:"


def digest_fields(
    *,
    repr_digest: DigestKnob | None,
    content_digest: DigestKnob | None,
    representation: bytes,
    body: memoryview,
) -> dict[str, str]:
    """``Repr-Digest`` over the whole representation and ``Content-Digest``
    over this response's body (a 206's range), as the knobs ask (the true
    bytes: a corrupted body is not what they describe)."""
    fields: dict[str, str] = {}
    if repr_digest is not None:
        fields["Repr-Digest"] = _field(repr_digest, representation)
    if content_digest is not None:
        fields["Content-Digest"] = _field(content_digest, body)
    return fields


def corrupted(body: memoryview) -> memoryview:
    """``body`` with its middle byte flipped (same length: the framing stays right)."""
    if not body:
        return body
    damaged = bytearray(body)
    damaged[len(damaged) // 2] ^= 0xFF
    return memoryview(bytes(damaged))
