"""Typed errors rebuilt from the API's stable codes.

Every error is a :class:`PaddockError` with a ``code`` (stable, for programs), an HTTP ``status``
when the server answered, and the server's ``details``. Messages never carry a secret: the server
puts none in them, and the client scrubs its own token and anything shaped like a Paddock token.
"""

from __future__ import annotations

import builtins
import json
import re
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from .views import ReservationView


class PaddockError(Exception):
    """Any error of the client: ``code`` is stable, ``status`` the HTTP status when there was one."""

    def __init__(self, message: str, code: str, status: int | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = details

    def __str__(self) -> str:
        return self.message


class UnauthorizedError(PaddockError):
    """The token is unknown or revoked (HTTP 401)."""


class ForbiddenError(PaddockError):
    """The token may not do this, e.g. another user's reservation (HTTP 403)."""


class NotFoundError(PaddockError):
    """No such reservation, machine or route (HTTP 404)."""


class InvalidRequestError(PaddockError):
    """The request itself was malformed: a field out of range, bad JSON, a body too large."""


class InvalidSpecError(PaddockError):
    """A spec that does not parse; ``position`` is the 0-based offset of the problem in ``spec``."""

    @property
    def position(self) -> int | None:
        return _field_int(self.details, "position")

    @property
    def spec(self) -> str | None:
        return _field_str(self.details, "spec")

    @property
    def role(self) -> str | None:
        """The member whose spec is wrong, when the request had several."""
        return _field_str(self.details, "role")


class NoMatchError(PaddockError):
    """No machine in the inventory could ever satisfy the request (HTTP 422 ``unsatisfiable``)."""

    @property
    def reasons(self) -> list[dict[str, str]]:
        """Why, per member: ``[{"role": "board", "reason": "no machine has arch=armv7"}]``."""
        members = self.details.get("members") if isinstance(self.details, dict) else None
        if not isinstance(members, list):
            return []
        return [
            {"role": str(member.get("role", "")), "reason": str(member.get("reason", ""))}
            for member in members
            if isinstance(member, dict)
        ]


class IllegalTransitionError(PaddockError):
    """The reservation cannot go from its state to the one asked for (HTTP 409)."""


class LeaseExpiredError(PaddockError):
    """The reservation has ended: its lease can no longer be renewed, its credentials are gone."""


class QuotaExceededError(PaddockError):
    """Over one of the caller's quotas (HTTP 429): nothing was made."""

    @property
    def quota(self) -> str | None:
        return _field_str(self.details, "quota")

    @property
    def limit(self) -> int | None:
        return _field_int(self.details, "limit")


class MemberBusyError(PaddockError):
    """The member is busy with a power action or re-deploy (HTTP 409 ``member_busy``)."""


class PowerNotSupportedError(PaddockError):
    """The member's machine cannot be powered or booted again during a lease (a static host)."""


class ReservationFailedError(PaddockError):
    """The reservation ended (failed, expired, cancelled, released) while the client waited for it."""

    def __init__(self, view: ReservationView) -> None:
        failure = next((allocation.failure for allocation in view.allocations if allocation.failure), None)
        super().__init__(
            f"reservation {view.id} is {view.state}: {view.reason or 'no reason given'}",
            "reservation_failed",
            None,
            {"id": view.id, "state": view.state, "reason": view.reason, "code": failure.code if failure else None},
        )
        self.view = view

    @property
    def state(self) -> str:
        return self.view.state

    @property
    def reason(self) -> str | None:
        return self.view.reason

    @property
    def failure_code(self) -> str | None:
        """The stable code of the first failed machine (``image_corrupt``, ``boot_timeout``, …)."""
        return _field_str(self.details, "code")


class PaddockTimeoutError(PaddockError, builtins.TimeoutError):
    """The client gave up waiting (``ready(timeout=…)``); the reservation itself lives on."""


class PaddockConnectionError(PaddockError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke."""


class SshError(PaddockError):
    """A command or a copy over SSH failed (``ssh_failed``, ``copy_failed``, ``host_key_missing``)."""


class HostKeyMismatchError(SshError):
    """The machine presented a host key other than the one Paddock pinned: refused before logging in."""


_BY_CODE: Mapping[str, type[PaddockError]] = {
    "unauthorized": UnauthorizedError,
    "token_expired": UnauthorizedError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "invalid_json": InvalidRequestError,
    "invalid_request": InvalidRequestError,
    "invalid_parameter": InvalidRequestError,
    "unsupported_media_type": InvalidRequestError,
    "payload_too_large": InvalidRequestError,
    "invalid_spec": InvalidSpecError,
    "unsatisfiable": NoMatchError,
    "illegal_transition": IllegalTransitionError,
    "lease_expired": LeaseExpiredError,
    "member_busy": MemberBusyError,
    "power_not_supported": PowerNotSupportedError,
    "quota_exceeded": QuotaExceededError,
}

_TOKEN_PATTERN = re.compile(r"pdk_[A-Za-z0-9_-]{8,}")


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with every given secret and anything shaped like a Paddock token replaced."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _TOKEN_PATTERN.sub("pdk_[redacted]", text)


def error_from_body(status: int, body: Any, secrets: Sequence[str] = ()) -> PaddockError:
    """The typed error for an API error answer (``{code, message, details?}`` with a 4xx/5xx status).

    ``body`` may be parsed JSON, text or bytes. An unknown code gives a plain PaddockError; a body
    that is not an API error (a proxy's HTML page) gives code ``http_error``.
    """
    value = body
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    code = value.get("code") if isinstance(value, dict) else None
    if not isinstance(value, dict) or not isinstance(code, str) or not code:
        return PaddockError(f"the server answered HTTP {status} without a Paddock error body", "http_error", status)
    message = value.get("message")
    text = message if isinstance(message, str) and message else code
    error_class = _BY_CODE.get(code, PaddockError)
    return error_class(redact(text, secrets), code, status, value.get("details"))


def _field_str(details: Any, key: str) -> str | None:
    value = details.get(key) if isinstance(details, dict) else None
    return value if isinstance(value, str) else None


def _field_int(details: Any, key: str) -> int | None:
    value = details.get(key) if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
