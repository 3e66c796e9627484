"""Answering a 401: which credentials a request carries, and what a 401 leads to.

One :class:`Authenticator` per engine, shared by downloads and uploads. A
request to a task's URL carries credentials preemptively when some are known
for its origin: those a provider gave for it earlier (kept in memory only),
else the static ones of ``Configuration.auth``, else the ``.netrc`` entry of
its host. They are added as an ``Authorization`` header to the task's own
request only; the redirect rule drops it on the way to another origin.

On a 401 from the task's origin, :meth:`Authenticator.challenged` decides: a
provider is asked (with the parsed challenges); credentials that were already
tried for this task end it with :class:`~bgtransfer.AuthenticationError`; new
ones are remembered and the caller sends the request again. Without a provider,
a 401 to credentials sent is an ``AuthenticationError`` and one to none stands.

An :class:`AppProvider` (the daemon's, for a session whose application answers
challenges from its own process) is asked the same way, with one difference:
its answer may take as long as the application takes to come back, so the task
gives its connection slot back while it waits (:attr:`Authenticator.give_back`,
the engine's) and queues for one again only when the answer lets it go on.
"""

from __future__ import annotations

import abc
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import anyio

from .._core.auth import (
    AuthProvider,
    BasicAuth,
    BearerToken,
    Credentials,
    ProviderFailed,
    TaskInfo,
)
from .._core.challenge import Challenge, parse_challenges
from .._core.config import Configuration
from .._core.redirects import origin_of
from .._exceptions import AuthenticationError, HTTPStatusError, TransferError
from .._io.netrc import DEFAULT_ENTRY, read_netrc
from .._io.transfer import RedirectCheck

if TYPE_CHECKING:
    from .record import TaskRecord

__all__ = ["AppProvider", "AuthState", "Authenticator", "GiveBack", "redirect_check", "task_info"]

logger = logging.getLogger("bgtransfer")

_MAX_TRIES: Final = 4
"""Distinct credentials one request is sent with at most (a provider that
keeps answering new ones must not loop)."""


GiveBack = Callable[[int], Callable[[], Awaitable[None]]]
"""The engine's ``give_back(task_id)``: free the task's connection slot now; the
function it returns queues the task for a slot again and returns once granted."""


class AppProvider(abc.ABC):
    """A provider whose answer comes from the application, in another process
    (the daemon's, ``_daemon/credentials.py``): asked as any provider, but the
    task waits for it without holding a connection slot."""

    @abc.abstractmethod
    async def ask(
        self, task: TaskInfo, challenges: tuple[Challenge, ...]
    ) -> Credentials | ProviderFailed | None:
        """The application's answer (waits until it gives one)."""

    async def __call__(
        self, task: TaskInfo, challenges: tuple[Challenge, ...]
    ) -> Credentials | ProviderFailed | None:
        return await self.ask(task, challenges)


class AuthState:
    """One task's side: what its last request carried, what was refused."""

    __slots__ = ("answered", "sent", "tried")

    def __init__(self, url: str) -> None:
        self.sent: Credentials | None = None
        self.tried: list[Credentials] = []
        self.answered = url  # the URL that answered the last request (after redirects)


class Authenticator:
    """An engine's credentials (see the module's docstring)."""

    def __init__(self, config: Configuration) -> None:
        auth = config.auth
        self._static: Credentials | None = (
            auth if isinstance(auth, BasicAuth | BearerToken) else None
        )
        self._provider: AuthProvider | None = (
            None if auth is None or isinstance(auth, BasicAuth | BearerToken) else auth
        )
        self._netrc = config.netrc
        self._netrc_entries: dict[str, BasicAuth] | None = None
        self._given: dict[tuple[str, str, int], Credentials] = {}  # by origin, from the provider
        self.active = auth is not None or config.netrc is not False
        self.give_back: GiveBack | None = None  # set by the engine (for an AppProvider)

    async def add_header(self, url: str, headers: dict[str, str], state: AuthState) -> None:
        """Add the ``Authorization`` header for a request to ``url`` to
        ``headers`` (unless they hold one already: the application's wins),
        noted in ``state`` as sent."""
        state.sent = None
        if any(name.lower() == "authorization" for name in headers):
            return
        value = await self.header(url, state)
        if value is not None:
            headers["Authorization"] = value

    async def header(self, url: str, state: AuthState) -> str | None:
        """The ``Authorization`` value for a request to ``url`` (None: none),
        noted in ``state`` as sent."""
        credentials = self._given.get(origin_of(url)) or self._static
        if credentials is None and self._netrc is not False:
            credentials = await self._from_netrc(url)
        state.sent = credentials
        return None if credentials is None else credentials.authorization()

    def challenge(self, error: TransferError) -> HTTPStatusError | None:
        """``error`` if it is a 401 for :meth:`challenged` to answer, else None."""
        if (
            self.active
            and isinstance(error, HTTPStatusError)
            and error.status == 401
            and not isinstance(error, AuthenticationError)
        ):
            return error
        return None

    async def challenged(self, error: HTTPStatusError, state: AuthState, info: TaskInfo) -> bool:
        """A request of the task ``info`` got the 401 ``error`` (from
        ``state.answered``, after redirects). True: make the request again (with
        the credentials :meth:`header` now gives); False: the 401 stands (the
        retry policy decides, as without credentials); raises
        :class:`AuthenticationError` (or a provider's failure) to end the task."""
        sent = state.sent
        if origin_of(state.answered) != origin_of(info.url):
            return False  # credentials never go there: the 401 stands
        if self._provider is None:
            if sent is None:
                return False
            raise _refused(error, sent)
        challenges = parse_challenges(error.www_authenticate)
        take_again = None
        result: object
        if isinstance(self._provider, AppProvider):
            if self.give_back is not None:  # waiting for the app holds no slot
                take_again = self.give_back(info.id)
            result = await self._provider.ask(info, challenges)
            if isinstance(result, ProviderFailed):
                raise TransferError(result.message, url=info.url)
        else:
            try:
                result = self._provider(info, challenges)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                raise TransferError(
                    f"the auth provider failed: {type(exc).__name__}", url=info.url
                ) from exc
        again = self._judge(result, error, state, info)
        if take_again is not None:
            await take_again()  # (given back while the app answered: the task goes on)
        return again

    def _judge(
        self, result: object, error: HTTPStatusError, state: AuthState, info: TaskInfo
    ) -> bool:
        """What a provider's answer leads to (see :meth:`challenged`)."""
        sent = state.sent
        if result is None:
            if sent is not None:
                raise _refused(error, sent)
            return False
        if not isinstance(result, BasicAuth | BearerToken):
            raise TransferError(
                "the auth provider returned a "
                f"{type(result).__name__}, not BasicAuth, BearerToken or None",
                url=info.url,
            )
        if sent is not None:
            state.tried.append(sent)
        if result in state.tried or len(state.tried) >= _MAX_TRIES:
            raise _refused(error, result)
        self._given[origin_of(info.url)] = result
        logger.debug(
            "task %d: 401 answered with new %s credentials from the provider",
            info.id,
            _scheme(result),
        )
        return True

    async def _from_netrc(self, url: str) -> BasicAuth | None:
        if self._netrc_entries is None:  # read once, when first needed
            self._netrc_entries = await anyio.to_thread.run_sync(read_netrc, self._netrc, url)
        entries = self._netrc_entries
        host = origin_of(url)[1]
        return entries.get(host) or entries.get(DEFAULT_ENTRY)


def _scheme(credentials: Credentials) -> str:
    return "Basic" if isinstance(credentials, BasicAuth) else "Bearer"


def _refused(error: HTTPStatusError, credentials: Credentials) -> AuthenticationError:
    return AuthenticationError(
        error.status,
        error.reason,
        url=error.url,
        retry_after=error.retry_after,
        www_authenticate=error.www_authenticate,
        scheme=_scheme(credentials),
    )


def task_info(record: TaskRecord) -> TaskInfo:
    """The frozen snapshot of ``record`` an application's callable is given."""
    return TaskInfo(id=record.id, url=record.url, description=record.description)


def redirect_check(config: Configuration, info: TaskInfo) -> RedirectCheck | None:
    """``Configuration.redirect_policy`` bound to the task ``info`` (None
    without one); what it returns is checked (a bool or a str)."""
    policy = config.redirect_policy
    if policy is None:
        return None

    async def check(status: int, url: str) -> str | bool:
        try:
            verdict = policy(info, status, url)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception as exc:
            raise TransferError(
                f"the redirect_policy failed: {type(exc).__name__}", url=info.url
            ) from exc
        if not isinstance(verdict, bool | str):
            raise TransferError(
                f"the redirect_policy returned a {type(verdict).__name__}, not a bool or a str",
                url=info.url,
            )
        return verdict

    return check
