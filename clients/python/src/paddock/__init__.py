"""Paddock's Python client: reserve machines for a job, wait until they are ready, run commands and
copy files on them over SSH with the pinned host key, and give them back.

    from paddock import MemberRequest, Paddock

    paddock = Paddock()  # PADDOCK_URL, PADDOCK_TOKEN
    with paddock.reserve([MemberRequest("build", "arch=x86_64", image="debian:ci-123")], lease="20m") as reservation:
        reservation.ready(on_progress=print)
        result = reservation.run("build", "uname -a")
        print(result.stdout, result.code)
"""

from ._version import __version__
from .client import Duration, Member, Paddock, Reservation
from .errors import (
    ForbiddenError,
    HostKeyMismatchError,
    IllegalTransitionError,
    InvalidRequestError,
    InvalidSpecError,
    LeaseExpiredError,
    MemberBusyError,
    NoMatchError,
    NotFoundError,
    PaddockConnectionError,
    PaddockError,
    PaddockTimeoutError,
    PowerNotSupportedError,
    QuotaExceededError,
    ReservationFailedError,
    SshError,
    UnauthorizedError,
)
from .views import (
    AllocationFailure,
    AllocationView,
    Caller,
    CommandResult,
    CredentialMachine,
    CredentialsView,
    EventView,
    ExplainView,
    MachineView,
    MemberRequest,
    MemberView,
    NewToken,
    Progress,
    ReservationView,
    ServerHealth,
    SshTarget,
)

__all__ = [
    "__version__",
    "AllocationFailure",
    "AllocationView",
    "Caller",
    "CommandResult",
    "CredentialMachine",
    "CredentialsView",
    "Duration",
    "EventView",
    "ExplainView",
    "ForbiddenError",
    "HostKeyMismatchError",
    "IllegalTransitionError",
    "InvalidRequestError",
    "InvalidSpecError",
    "LeaseExpiredError",
    "MachineView",
    "Member",
    "MemberBusyError",
    "MemberRequest",
    "MemberView",
    "NewToken",
    "NoMatchError",
    "NotFoundError",
    "Paddock",
    "PaddockConnectionError",
    "PaddockError",
    "PaddockTimeoutError",
    "PowerNotSupportedError",
    "Progress",
    "QuotaExceededError",
    "Reservation",
    "ReservationFailedError",
    "ReservationView",
    "ServerHealth",
    "SshError",
    "SshTarget",
    "UnauthorizedError",
]
