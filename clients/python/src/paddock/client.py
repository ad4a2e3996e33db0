"""The Paddock client: reserve machines, wait until they are ready (with progress), run commands and
copy files over SSH with the pinned host key, and release, by hand or when a ``with`` block ends.
While a reservation is held, its lease is renewed in a background thread.

    paddock = Paddock()  # PADDOCK_URL, PADDOCK_TOKEN
    with paddock.reserve([MemberRequest("build", "arch=x86_64")], lease="20m") as reservation:
        reservation.ready(on_progress=print)
        print(reservation.run("build", "uname -a").stdout)
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import threading
import time
import warnings
from types import TracebackType
from typing import Any, Callable, Mapping, Sequence, Union
from urllib.parse import quote

from . import ssh
from ._http import Http
from .errors import (
    ForbiddenError,
    LeaseExpiredError,
    NotFoundError,
    PaddockError,
    PaddockTimeoutError,
    ReservationFailedError,
    UnauthorizedError,
)
from .views import (
    Caller,
    CommandResult,
    CredentialsView,
    EventView,
    ExplainView,
    MachineView,
    MemberRequest,
    NewToken,
    Progress,
    ReservationView,
    ServerHealth,
    SshTarget,
    _time,
    is_over,
)

Duration = Union[int, str]
"""Seconds, or a string such as ``90s``, ``10m``, ``2h``, ``1d``."""

Member = Union[MemberRequest, Mapping[str, Any]]
"""A MemberRequest, or the same as a dict: ``{"role": "build", "spec": "arch=x86_64", "count": 2}``."""

_TARGET = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)(?:\.(\d+)|\[(\d+)\])?$")


def _reservation_path(reservation_id: str) -> str:
    return f"v1/reservations/{quote(reservation_id, safe='')}"


class Paddock:
    """A connection to a Paddock server, speaking for one token.

    ``url`` defaults to ``$PADDOCK_URL`` (e.g. ``http://127.0.0.1:7300``), ``token`` to ``$PADDOCK_TOKEN``.
    ``url`` may list several API servers of one Paddock, comma-separated (``http://a:7300,http://b:7300``):
    requests go to the leader and move to another server when one stops answering, for up to
    ``failover_timeout`` seconds.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, failover_timeout: float = 60.0) -> None:
        url = url if url is not None else os.environ.get("PADDOCK_URL")
        token = token if token is not None else os.environ.get("PADDOCK_TOKEN")
        if not url:
            raise PaddockError("no Paddock server: set PADDOCK_URL (e.g. http://127.0.0.1:7300) or pass url=", "configuration")
        if not token:
            raise PaddockError("no token: set PADDOCK_TOKEN or pass token=", "configuration")
        self.http = Http(url, token, failover_timeout)

    def __enter__(self) -> Paddock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes this thread's HTTP connections (reservations stay as they are)."""
        self.http.close()

    def reserve(
        self,
        members: Sequence[Member],
        *,
        lease: Duration | None = None,
        priority: int | None = None,
        queue_timeout: Duration | None = None,
        idempotency_key: str | None = None,
        renew: bool = True,
    ) -> Reservation:
        """Requests machines: every member is granted together, or the request queues.

        The answer comes at once (queued or allocated): call ``ready()`` to wait. A retried request
        with the same ``idempotency_key`` gives back the reservation the first one made. Unless
        ``renew=False``, the lease is renewed in the background until ``release()``.
        """
        body: dict[str, Any] = {"members": [_member_json(member) for member in members]}
        if lease is not None:
            body["lease"] = lease
        if priority is not None:
            body["priority"] = priority
        if queue_timeout is not None:
            body["queueTimeout"] = queue_timeout
        if idempotency_key is not None:
            body["idempotencyKey"] = idempotency_key
        # With an idempotency key, a request sent twice (its answer lost to a server that died) makes one reservation.
        view = ReservationView.from_json(self.http.post("v1/reservations", body, replayable=idempotency_key is not None))
        return Reservation(self.http, view, renew=renew)

    def reservation(self, reservation_id: str, *, renew: bool = False) -> Reservation:
        """An existing reservation; its lease is not renewed unless ``renew=True``."""
        view = ReservationView.from_json(self.http.get(_reservation_path(reservation_id)))
        return Reservation(self.http, view, renew=renew)

    def reservations(self, *, all: bool = False, ended: bool = False) -> list[ReservationView]:
        """Your live reservations; ``all`` (admins): everyone's; ``ended``: the finished ones too."""
        params: dict[str, str | int] = {}
        if all:
            params["all"] = 1
        if ended:
            params["ended"] = 1
        return [ReservationView.from_json(item) for item in self.http.get_all("v1/reservations", params)]

    def machines(self, *, retired: bool = False) -> list[MachineView]:
        """The machines in service with their states and health scores; ``retired``: the retired ones instead."""
        return [MachineView.from_json(item) for item in self.http.get_all("v1/machines", {"retired": 1} if retired else None)]

    def explain(self, spec: str) -> ExplainView:
        """Which machines a spec matches (and why those not free now are not), and why the others fail it."""
        return ExplainView.from_json(self.http.post("v1/explain", {"spec": spec}, replayable=True))

    def whoami(self) -> Caller:
        data = self.http.get("v1/whoami")
        return Caller(name=data["name"], role=data["role"])

    def servers(self) -> list[ServerHealth]:
        """Each server of the list on its own: which leads, which follow (and whom), which do not answer. Never raises for a server."""
        return [ServerHealth(**each) for each in self.http.health()]

    def create_token(self, name: str, role: str = "user") -> NewToken:
        """Makes a token (admins). The answer is the only place the token is ever shown."""
        data = self.http.post("v1/tokens", {"name": name, "role": role})
        return NewToken(name=data["name"], role=data["role"], created_at=_time(data["createdAt"]), token=data["token"])


class Reservation:
    """A reservation held by this process. Use it as a context manager to release it on exit."""

    def __init__(self, http: Http, view: ReservationView, *, renew: bool) -> None:
        self._http = http
        self._view = view
        self._lock = threading.Lock()
        self._released = False
        self._credentials: CredentialsView | None = None
        self._credentials_for: tuple[Any, ...] = ()
        self._renewer: _Renewer | None = None
        if renew and not is_over(view.state):
            self._renewer = _Renewer(self)
            self._renewer.start()

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self._released:
            return
        if error is None:
            self.release()
            return
        # The block failed: release all the same, and let the block's error be the one that shows.
        try:
            self.release()
        except Exception as release_error:  # noqa: BLE001 - reported on the error in flight
            note = f"paddock: releasing {self.id} failed too ({release_error}); its lease will run out"
            if hasattr(error, "add_note"):  # Python 3.11 and later
                error.add_note(note)
            else:
                warnings.warn(note, RuntimeWarning, stacklevel=2)

    @property
    def id(self) -> str:
        return self._view.id

    @property
    def view(self) -> ReservationView:
        """The last ReservationView the server sent."""
        return self._view

    @property
    def state(self) -> str:
        return self._view.state

    def refresh(self) -> ReservationView:
        return self._adopt(ReservationView.from_json(self._http.get(self._path())))

    def ready(self, *, timeout: float = 3600, on_progress: Callable[[Progress], object] | None = None) -> Reservation:
        """Waits until every machine is ready; returns the reservation.

        ``on_progress`` is called in this thread with every event (state changes, stages) once and in
        order, as they happen (from the server's event stream, or by polling where there is none),
        and with the ReservationView whenever its state or queue position changed. Raises
        ReservationFailedError if the reservation ends instead, PaddockTimeoutError after
        ``timeout`` seconds (the reservation lives on).
        """
        deadline = time.monotonic() + timeout
        feed = _ProgressFeed(self._http, self._path(), on_progress) if on_progress else None
        try:
            view = self._view
            while True:
                if feed:
                    feed.catch_up(view)
                # Ready, with no member in the middle of a power action or re-deploy.
                if view.state == "ready" and not any(allocation.state == "provisioning" for allocation in view.allocations):
                    return self
                if is_over(view.state):
                    raise ReservationFailedError(view)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PaddockTimeoutError(
                        f"reservation {self.id} was not ready in time (it is {view.state})", "timeout", None, {"id": self.id, "state": view.state}
                    )
                if feed:
                    feed.wait(min(left, 10.0))
                    view = self.refresh()
                else:
                    wait = min(math.ceil(left), 60)
                    view = self._adopt(ReservationView.from_json(self._http.get(self._path(), {"wait": "ready", "timeout": wait}, wait=wait)))
        finally:
            if feed:
                feed.stop()

    def events(self) -> list[EventView]:
        """Every event so far, oldest first."""
        return [EventView.from_json(item) for item in self._http.get_all(f"{self._path()}/events")]

    def credentials(self) -> CredentialsView:
        """The private key and the pinned host keys (the owner only).

        Cached once every member is in it, for as long as the last view shows the members where they
        were (a re-deploy may give a member another address or host key).
        """
        with self._lock:
            if self._credentials is not None and self._credentials_for == _logins(self._view):
                return self._credentials
        credentials = CredentialsView.from_json(self._http.get(f"{self._path()}/credentials"))
        with self._lock:
            self._credentials = None
            current = [allocation for allocation in self._view.allocations if allocation.replaced_by is None]
            if current and len(credentials.machines) >= len(current):
                self._credentials = credentials
                self._credentials_for = _logins(self._view)
        return credentials

    def target(self, target: str) -> SshTarget:
        """Where to reach a member: ``role`` (its first machine), ``role.N`` or ``role[N]``."""
        role, index = _member(target)
        credentials = self.credentials()
        machine = next((each for each in credentials.machines if each.role == role and each.index == index), None)
        if machine is None and self._credentials is not None:
            with self._lock:
                self._credentials = None  # a member may have become ready since
            credentials = self.credentials()
            machine = next((each for each in credentials.machines if each.role == role and each.index == index), None)
        if machine is None:
            raise PaddockError(f"reservation {self.id} has no ready member {role}[{index}]", "invalid_target")
        return SshTarget(
            host=machine.host,
            port=machine.port,
            user=machine.user,
            host_key=machine.host_key,
            private_key=credentials.private_key,
            machine=machine.machine,
            via=machine.via,
        )

    def run(self, target: str, command: str, *, timeout: float | None = None) -> CommandResult:
        """Runs a shell command on a member: stdout, stderr and exit code (a non-zero code is no error).

        Safe to call from several threads at once (each call has its own SSH connection).
        """
        return ssh.run_command(self.target(target), command, timeout=timeout)

    def copy_to(self, target: str, local_path: str | os.PathLike[str], remote_path: str) -> None:
        """Copies a local file to a member (SFTP, or ``cat`` where the machine has no SFTP server)."""
        ssh.upload_file(self.target(target), os.fspath(local_path), remote_path)

    def copy_from(self, target: str, remote_path: str, local_path: str | os.PathLike[str]) -> None:
        """Copies a file from a member to a local path."""
        ssh.download_file(self.target(target), remote_path, os.fspath(local_path))

    def renew(self) -> ReservationView:
        """Extends the lease by its duration, up to the hard cap; LeaseExpiredError once it has ended."""
        # Sent again after a broken connection: a renewal counts from its arrival, so two are one.
        return self._adopt(ReservationView.from_json(self._http.post(f"{self._path()}/renew", replayable=True)))

    def release(self) -> ReservationView:
        """Gives the machines back (a queued request is cancelled). Safe to call more than once."""
        self.stop_renewing()
        view = self._adopt(ReservationView.from_json(self._http.delete(self._path())))
        self._released = True
        return view

    def stop_renewing(self) -> None:
        """Stops the background renewal: the lease runs out unless renewed or released."""
        renewer = self._renewer
        if renewer is not None:
            renewer.stop()

    @property
    def renewing(self) -> bool:
        """Whether the lease is being renewed in the background."""
        return self._renewer is not None and self._renewer.is_alive() and not self._renewer.stopped.is_set()

    def _adopt(self, view: ReservationView) -> ReservationView:
        """Keeps the newer of two views, so a slow renewal answer never hides a fresher state."""
        with self._lock:
            if view.updated_at >= self._view.updated_at:
                self._view = view
        return view

    def _path(self) -> str:
        return _reservation_path(self.id)

    def __repr__(self) -> str:
        return f"<Reservation {self.id} {self.state}>"


def _member_json(member: Member) -> dict[str, Any]:
    if isinstance(member, MemberRequest):
        return member.to_json()
    return dict(member)


def _member(target: str) -> tuple[str, int]:
    match = _TARGET.match(target.strip())
    if not match:
        raise PaddockError(f'not a member: "{target}" (use ROLE, ROLE.N or ROLE[N])', "invalid_target")
    return match.group(1), int(match.group(2) or match.group(3) or 0)


def _logins(view: ReservationView) -> tuple[Any, ...]:
    """Where each member is logged in to, as a view shows it: what the cached credentials depend on."""
    return tuple((allocation.state, allocation.host, allocation.port, allocation.host_key) for allocation in view.allocations)


class _Renewer(threading.Thread):
    """Renews the lease about every third of it, so two heartbeats may fail before it runs out.

    A daemon thread: it never keeps the process alive, so a script that ends lets its lease lapse.
    """

    def __init__(self, reservation: Reservation) -> None:
        super().__init__(name=f"paddock-renew-{reservation.id}", daemon=True)
        self._reservation = reservation
        self.stopped = threading.Event()

    def interval(self) -> float:
        return float(min(max(self._reservation.view.lease_seconds / 3, 1.0), 3600.0))

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        delay = self.interval()
        try:
            while not self.stopped.wait(delay):
                try:
                    view = self._reservation.renew()
                    if is_over(view.state):
                        break
                    delay = self.interval()
                except (LeaseExpiredError, NotFoundError, UnauthorizedError, ForbiddenError):
                    break
                except Exception:  # noqa: BLE001 - a blip: try again soon
                    delay = min(self.interval(), 5.0)
        finally:
            self.stopped.set()
            self._reservation._http.close()  # this thread's connections


class _ProgressFeed:
    """Progress for ``ready()``: follows the server-sent event stream in a thread, and hands each event
    to the caller's thread once, in order; polls the event list where the stream is unavailable."""

    def __init__(self, http: Http, path: str, report: Callable[[Progress], object]) -> None:
        self._http = http
        self._path = path
        self._report = report
        self._seen: set[int] = set()
        self._last_view: tuple[str, int | None] | None = None
        self._events: queue.Queue[EventView | None] = queue.Queue()
        self._stopped = threading.Event()
        self._streaming = True
        self._thread = threading.Thread(target=self._follow, name="paddock-events", daemon=True)
        self._thread.start()

    def catch_up(self, view: ReservationView) -> None:
        """Reports every event not reported yet, then the view if its state or queue position changed."""
        self._drain()
        for item in self._http.get_all(f"{self._path}/events"):
            self._deliver(EventView.from_json(item))
        summary = (view.state, view.queue_position)
        if summary != self._last_view:
            self._last_view = summary
            self._report(view)

    def wait(self, seconds: float) -> None:
        """Reports streamed events as they come, until one changes the reservation or a member, or ``seconds`` pass."""
        deadline = time.monotonic() + seconds
        if not self._streaming:
            time.sleep(min(seconds, 2.0))
            return
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                event = self._events.get(timeout=left)
            except queue.Empty:
                return
            if event is None:
                self._streaming = False  # the stream ended or broke: poll from now on
                return
            self._deliver(event)
            if event.type in ("state", "allocation"):
                self._drain()
                return

    def stop(self) -> None:
        self._stopped.set()

    def _drain(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if event is None:
                self._streaming = False
                return
            self._deliver(event)

    def _follow(self) -> None:
        try:
            for data in self._http.server_sent_events(f"{self._path}/events", self._stopped):
                self._events.put(EventView.from_json(json.loads(data)))
        except Exception:  # noqa: BLE001 - no stream (an old server, a proxy): the caller polls
            pass
        finally:
            self._events.put(None)
            self._http.close()

    def _deliver(self, event: EventView) -> None:
        if event.id in self._seen:
            return
        self._seen.add(event.id)
        self._report(event)
