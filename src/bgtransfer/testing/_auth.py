"""The authentication knob: a path that answers 401 until a request carries
the credentials it requires (:meth:`TestServer.require_auth
<bgtransfer.testing.TestServer.require_auth>`).

A request whose ``Authorization`` matches one of the requirement's credentials
(Basic ``user:password``, or a bearer token) is served as usual (a file, an
upload); any other is answered ``401 Unauthorized`` with one
``WWW-Authenticate`` header per scheme accepted (``realm``, and a bearer
challenge's ``error="invalid_token"`` when a token was sent). An upload's
body is read (and dropped) before the 401, so the client sees the answer.
"""

from __future__ import annotations

import base64
from typing import Final

import attrs
from aiohttp import web

__all__ = ["AuthRequirement", "unauthorized"]

_READ_BYTES: Final = 64 * 1024


def _basic(_instance: object, _attribute: object, value: tuple[str, str] | None) -> None:
    if value is not None and (len(value) != 2 or ":" in value[0]):
        raise ValueError(f"AuthRequirement.basic must be (user, password), got {value!r}")


@attrs.frozen(kw_only=True)
class AuthRequirement:
    """What a path requires. With neither ``basic`` nor ``bearer`` nothing is
    accepted (every request is answered 401)."""

    basic: tuple[str, str] | None = attrs.field(default=None, validator=_basic)
    """``(user, password)`` accepted as ``Authorization: Basic``."""
    bearer: str | None = None
    """A token accepted as ``Authorization: Bearer``."""
    realm: str = "bgtransfer-test"
    """The ``realm`` of the challenges."""

    def accepts(self, authorization: str | None) -> bool:
        """Whether a request with this ``Authorization`` value is let through."""
        if authorization is None:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "basic" and self.basic is not None:
            try:
                decoded = base64.b64decode(credentials, validate=True).decode()
            except ValueError:
                return False
            return decoded == f"{self.basic[0]}:{self.basic[1]}"
        return scheme == "bearer" and self.bearer is not None and credentials == self.bearer

    def challenges(self, authorization: str | None) -> list[str]:
        """The ``WWW-Authenticate`` values of a 401 to ``authorization``."""
        values = []
        if self.basic is not None or self.bearer is None:
            values.append(f'Basic realm="{self.realm}", charset="UTF-8"')
        if self.bearer is not None:
            sent = authorization is not None and authorization.lower().startswith("bearer ")
            error = ', error="invalid_token"' if sent else ""
            values.append(f'Bearer realm="{self.realm}"{error}')
        return values


async def unauthorized(request: web.BaseRequest, requirement: AuthRequirement) -> web.Response:
    """The 401 answer to ``request`` (its body, if any, read and dropped first)."""
    if request.can_read_body:
        while await request.content.read(_READ_BYTES):
            pass
    response = web.Response(status=401, text="401: Unauthorized\n")
    for value in requirement.challenges(request.headers.get("Authorization")):
        response.headers.add("WWW-Authenticate", value)
    return response
