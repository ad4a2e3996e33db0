"""The API's JSON shapes as dataclasses (protocol/api.ts in the Paddock repository has the wire types).

Field names are the wire names in snake_case (``leaseSeconds`` is ``lease_seconds``); times are
timezone-aware datetimes. Fields a newer server adds are kept in ``raw``, the JSON as it came.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Mapping, Union

ReservationState = Literal["queued", "allocated", "provisioning", "ready", "releasing", "released", "failed", "expired", "cancelled"]

END_STATES: tuple[str, ...] = ("released", "failed", "expired", "cancelled")


def is_over(state: str) -> bool:
    """True once a reservation can no longer become ready (ended, or being released)."""
    return state in END_STATES or state == "releasing"


@dataclass(frozen=True)
class MemberRequest:
    """One member of a reservation request: ``count`` machines matching ``spec`` under ``role``."""

    role: str
    spec: str
    count: int = 1
    image: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"role": self.role, "spec": self.spec, "count": self.count}
        if self.image is not None:
            body["image"] = self.image
        return body


@dataclass(frozen=True)
class MemberView:
    role: str
    spec: str
    count: int
    image: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemberView:
        return cls(role=data["role"], spec=data["spec"], count=int(data.get("count", 1)), image=data.get("image"))


@dataclass(frozen=True)
class AllocationFailure:
    """Why an allocation failed: ``code`` is stable (``image_corrupt``, ``boot_timeout``, …)."""

    code: str
    fault: str
    reason: str
    stage: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AllocationFailure:
        return cls(code=data["code"], fault=data.get("fault", ""), reason=data.get("reason", ""), stage=data.get("stage"))


@dataclass(frozen=True)
class AllocationView:
    """One machine of a member: where to log in once it is ready."""

    id: str
    role: str
    index: int
    machine: str
    state: str
    stages: dict[str, str] = field(default_factory=dict)
    host: str | None = None
    port: int | None = None
    user: str | None = None
    host_key: str | None = None
    failure: AllocationFailure | None = None
    image: str | None = None
    replaced_by: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AllocationView:
        failure = data.get("failure")
        return cls(
            id=data["id"],
            role=data["role"],
            index=int(data["index"]),
            machine=data.get("machine", ""),
            state=data["state"],
            stages=dict(data.get("stages") or {}),
            host=data.get("host"),
            port=data.get("port"),
            user=data.get("user"),
            host_key=data.get("hostKey"),
            failure=AllocationFailure.from_json(failure) if isinstance(failure, Mapping) else None,
            image=data.get("image"),
            replaced_by=data.get("replacedBy"),
            raw=data,
        )


@dataclass(frozen=True)
class ReservationView:
    """A reservation as the server last described it."""

    id: str
    owner: str
    state: str
    priority: int
    lease_seconds: int
    created_at: datetime
    updated_at: datetime
    members: list[MemberView]
    allocations: list[AllocationView]
    reason: str | None = None
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    hard_cap_at: datetime | None = None
    queue_deadline: datetime | None = None
    queue_position: int | None = None
    """1-based position in the queue while queued."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReservationView:
        return cls(
            id=data["id"],
            owner=data.get("owner", ""),
            state=data["state"],
            priority=int(data.get("priority", 0)),
            lease_seconds=int(data.get("leaseSeconds", 0)),
            created_at=_time(data["createdAt"]),
            updated_at=_time(data["updatedAt"]),
            members=[MemberView.from_json(member) for member in data.get("members", [])],
            allocations=[AllocationView.from_json(allocation) for allocation in data.get("allocations", [])],
            reason=data.get("reason"),
            granted_at=_optional_time(data.get("grantedAt")),
            expires_at=_optional_time(data.get("expiresAt")),
            hard_cap_at=_optional_time(data.get("hardCapAt")),
            queue_deadline=_optional_time(data.get("queueDeadline")),
            queue_position=data.get("queuePosition"),
            raw=data,
        )


@dataclass(frozen=True)
class EventView:
    """Something that happened to a reservation: a state change, a machine's stage, a member's state, an action."""

    id: int
    reservation_id: str
    at: datetime
    type: str
    """``state``, ``stage``, ``allocation`` or ``action``."""
    to: str
    from_: str | None = None
    machine: str | None = None
    reason: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EventView:
        return cls(
            id=int(data["id"]),
            reservation_id=data["reservationId"],
            at=_time(data["at"]),
            type=data["type"],
            to=data["to"],
            from_=data.get("from"),
            machine=data.get("machine"),
            reason=data.get("reason"),
        )


Progress = Union[EventView, ReservationView]
"""What ``Reservation.ready(on_progress=…)`` reports: new events, and the reservation when it changed."""


@dataclass(frozen=True)
class CredentialMachine:
    role: str
    index: int
    machine: str
    host: str
    port: int
    user: str
    host_key: str
    via: str = "direct"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CredentialMachine:
        return cls(
            role=data["role"],
            index=int(data["index"]),
            machine=data["machine"],
            host=data["host"],
            port=int(data["port"]),
            user=data["user"],
            host_key=data["hostKey"],
            via=data.get("via") or "direct",
        )


@dataclass(frozen=True)
class CredentialsView:
    """The reservation's private key and the pinned host keys of its ready machines (the owner only)."""

    reservation_id: str
    private_key: str = field(repr=False)
    public_key: str
    known_hosts: str
    machines: list[CredentialMachine]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CredentialsView:
        return cls(
            reservation_id=data["reservationId"],
            private_key=data["privateKey"],
            public_key=data.get("publicKey", ""),
            known_hosts=data.get("knownHosts", ""),
            machines=[CredentialMachine.from_json(machine) for machine in data.get("machines", [])],
        )


@dataclass(frozen=True)
class SshTarget:
    """Where to reach a member, and the keys to do it with."""

    host: str
    port: int
    user: str
    host_key: str
    """``ssh-ed25519 AAAA…``: the host key Paddock captured at readiness; any other is refused."""
    private_key: str = field(repr=False)
    machine: str = ""
    via: str = "direct"


@dataclass(frozen=True)
class CommandResult:
    """A command's output and exit status (a non-zero status is no error by itself)."""

    stdout: str
    stderr: str
    code: int | None
    """The exit status; None when the command died of a signal or the connection gave none."""


@dataclass(frozen=True)
class MachineView:
    name: str
    kind: str
    lab_host: str
    state: str
    labels: dict[str, str]
    capacities: dict[str, float]
    health: float
    reservation_id: str | None = None
    reason: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MachineView:
        return cls(
            name=data["name"],
            kind=data.get("kind", ""),
            lab_host=data.get("labHost", ""),
            state=data["state"],
            labels=dict(data.get("labels") or {}),
            capacities=dict(data.get("capacities") or {}),
            health=float(data.get("health", 1)),
            reservation_id=data.get("reservationId"),
            reason=data.get("reason"),
            raw=data,
        )


@dataclass(frozen=True)
class RejectedMachine:
    machine: str
    term: str
    reason: str


@dataclass(frozen=True)
class UnavailableMachine:
    machine: str
    state: str
    reason: str


@dataclass(frozen=True)
class ExplainView:
    """Which machines a spec matches, why those not free now are not, and why the others fail it."""

    spec: str
    matches: list[str]
    rejected: list[RejectedMachine]
    unavailable: list[UnavailableMachine]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExplainView:
        return cls(
            spec=data["spec"],
            matches=list(data.get("matches", [])),
            rejected=[RejectedMachine(each["machine"], each["term"], each["reason"]) for each in data.get("rejected", [])],
            unavailable=[UnavailableMachine(each["machine"], each["state"], each["reason"]) for each in data.get("unavailable", [])],
        )


@dataclass(frozen=True)
class Caller:
    """Who a token speaks for."""

    name: str
    role: str


@dataclass(frozen=True)
class ServerHealth:
    """What one API server of the list said it is at /healthz (``Paddock.servers()``).

    ``role``: leader, follower, failing (it answers 503: its database refuses writes, or no server
    leads yet), unreachable, or not_paddock (something else answered). ``url`` has no user:password.
    """

    url: str
    role: str
    version: str | None = None
    database: str | None = None
    #: The leader a follower names (it may know it by another address than the list's).
    leader: str | None = None
    #: Why it is not a leader or a follower.
    reason: str | None = None


@dataclass(frozen=True)
class NewToken:
    """A token just made: the only time ``token`` is ever shown."""

    name: str
    role: str
    created_at: datetime
    token: str = field(repr=False)


def _time(text: str) -> datetime:
    # Python before 3.11 does not read a trailing Z.
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def _optional_time(text: Any) -> datetime | None:
    return _time(text) if isinstance(text, str) and text else None
