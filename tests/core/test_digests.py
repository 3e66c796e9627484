"""The sans-IO integrity rules: checksum arguments and RFC 9530 digest fields."""

from __future__ import annotations

import base64
import hashlib

import pytest

from bgtransfer._core.digests import Checksum, Integrity, parse_checksum, parse_digest_field

SHA256 = hashlib.sha256(b"hello").digest()
SHA512 = hashlib.sha512(b"hello").digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("text", "algorithm", "size"),
    [("sha256", "sha256", 32), ("SHA512", "sha512", 64), ("blake2b", "blake2b", 64),
     ("md5", "md5", 16), ("sha1", "sha1", 20)],
)  # fmt: skip
def test_parse_checksum(text: str, algorithm: str, size: int) -> None:
    assert parse_checksum(f"{text}:{'AB' * size}") == Checksum(algorithm, "ab" * size)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("md4:" + "0" * 32, "unknown checksum algorithm"),
        ("sha256:" + "0" * 62, "64 hexadecimal"),
        ("md5:" + "g" * 32, "32 hexadecimal"),
        ("sha256", "algorithm:hex"),
    ],
)
def test_parse_checksum_refuses(value: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_checksum(value)


def test_parse_checksum_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        parse_checksum(b"sha256:00")


def test_integrity_json_round_trip() -> None:
    integrity = Integrity(Checksum("md5", "0" * 32), 12)
    assert Integrity.from_json(integrity.to_json()) == integrity
    assert Integrity.of(None, None) is None
    with pytest.raises(ValueError, match="not JSON"):
        Integrity.from_json("{")
    with pytest.raises(ValueError, match="expected_size"):
        Integrity.from_dict({"expected_size": "12"})


def test_digest_field_known_algorithms() -> None:
    value = f"sha-256=:{_b64(SHA256)}:, sha-512=:{_b64(SHA512)}:;p=1, unixsum=:AAAA:"
    assert parse_digest_field(value) == {"sha256": SHA256, "sha512": SHA512}


def test_digest_field_unknown_and_wrong_sized_are_left_out() -> None:
    assert parse_digest_field(f"md5=:{_b64(b'x' * 16)}:, sha-256=:{_b64(b'short')}:") == {}


@pytest.mark.parametrize(
    "value",
    ["sha-256=abc", "sha-256", "SHA-256=:AAAA:", "sha-256=:not base64!:", "=:AAAA:", ""],
)
def test_a_malformed_digest_field_is_none(value: str) -> None:
    assert parse_digest_field(value) is None
