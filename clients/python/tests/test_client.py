"""The Python client as a job script uses it, against a real server and real machines (see conftest.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import paddock
from paddock import ssh as paddock_ssh
from paddock import (
    CommandResult,
    EventView,
    ForbiddenError,
    HostKeyMismatchError,
    InvalidRequestError,
    InvalidSpecError,
    Member,
    MemberRequest,
    NoMatchError,
    NotFoundError,
    Paddock,
    PaddockConnectionError,
    PaddockError,
    Progress,
    ReservationView,
    SshError,
    UnauthorizedError,
)


def test_the_installed_package_is_typed() -> None:
    assert (Path(paddock.__file__).parent / "py.typed").is_file()


def test_a_gang_of_two_ready_with_progress_in_order(client: Paddock, spec: str) -> None:
    key = f"py-{uuid.uuid4()}"
    members: list[Member] = [MemberRequest("build", spec), {"role": "test", "spec": spec}]
    progress: list[Progress] = []
    with client.reserve(members, lease="2m", priority=5, idempotency_key=key) as reservation:
        assert reservation.view.priority == 5
        assert reservation.view.lease_seconds == 120
        assert [(member.role, member.count) for member in reservation.view.members] == [("build", 1), ("test", 1)]
        again = client.reserve(members, lease="2m", priority=5, idempotency_key=key, renew=False)
        assert again.id == reservation.id, "the same idempotency key gives back the same reservation"

        assert reservation.ready(timeout=120, on_progress=progress.append) is reservation
        assert reservation.state == "ready"
        events = [update for update in progress if isinstance(update, EventView)]
        ids = [event.id for event in events]
        assert ids == sorted(set(ids)), "each event once, in order"
        assert ids == [event.id for event in reservation.events()], "every event so far, none missed"
        states = [event.to for event in events if event.type == "state"]
        assert states[0] == "queued" and states[-1] == "ready", states
        machines = {allocation.role: allocation.machine for allocation in reservation.view.allocations}
        assert sorted(machines) == ["build", "test"] and len(set(machines.values())) == 2
        ready_at = next(event.id for event in events if event.type == "state" and event.to == "ready")
        for machine in machines.values():
            assert any(event.type == "stage" and event.to == "sshReady" and event.machine == machine and event.id < ready_at for event in events)
        views = [update for update in progress if isinstance(update, ReservationView)]
        assert views and views[-1].state == "ready"

        # Both members at once, each on its own connection.
        with ThreadPoolExecutor(2) as pool:
            build, test = pool.map(lambda target: reservation.run(target, "echo out-$(id -un); echo err >&2; exit 3"), ["build", "test[0]"])
        for result, role in ((build, "build"), (test, "test")):
            allocation = next(each for each in reservation.view.allocations if each.role == role)
            assert result == CommandResult(stdout=f"out-{allocation.user}\n", stderr="err\n", code=3)
        assert build.stdout != test.stdout, "two machines, two logins"

        with pytest.raises(PaddockError, match="no ready member nobody") as caught:
            reservation.run("nobody", "true")
        assert caught.value.code == "invalid_target"
    assert client.reservation(reservation.id).state in ("releasing", "released")
    assert not reservation.renewing


@pytest.mark.parametrize("way", ["sftp", "cat"])
def test_copy_both_ways(client: Paddock, spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str) -> None:
    if way == "cat":
        monkeypatch.setattr(paddock_ssh, "_sftp", lambda transport: None)  # as on a guest without an SFTP server
    data = os.urandom(300_000) + bytes(range(256))
    digest = hashlib.sha256(data).hexdigest()
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    with client.reserve([MemberRequest("build", spec), MemberRequest("test", spec)], lease="2m") as reservation:
        reservation.ready(timeout=120)
        reservation.copy_to("build", local, "artifact.bin")  # relative: in the login's home
        assert reservation.run("build", "sha256sum artifact.bin").stdout.split()[0] == digest
        back = tmp_path / "back.bin"
        reservation.copy_from("build.0", "artifact.bin", back)
        assert back.read_bytes() == data
        reservation.copy_to("test", str(back), "copied.bin")
        assert reservation.run("test", "sha256sum copied.bin; rm -f copied.bin").stdout.split()[0] == digest
        reservation.run("build", "rm -f artifact.bin")
        with pytest.raises(SshError) as caught:
            reservation.copy_from("build", "no/such/file", tmp_path / "never.bin")
        assert caught.value.code == "copy_failed"


def test_a_wrong_pinned_host_key_is_refused(client: Paddock, spec: str) -> None:
    with client.reserve([MemberRequest("build", spec), MemberRequest("test", spec)], lease="2m") as reservation:
        reservation.ready(timeout=120)
        build, test = reservation.target("build"), reservation.target("test")
        assert build.host_key != test.host_key
        forged = dataclasses.replace(build, host_key=test.host_key)  # as if someone else answered at build's address
        with pytest.raises(HostKeyMismatchError) as caught:
            paddock_ssh.run_command(forged, "touch refused-login-ran")
        assert caught.value.code == "host_key_mismatch"
        assert "refusing" in str(caught.value) and "AAAA" not in str(caught.value)
        assert reservation.run("build", "test -e refused-login-ran && echo ran || echo never").stdout == "never\n"


def test_the_lease_is_renewed_in_the_background(client: Paddock, spec: str) -> None:
    # A 6 s lease is renewed every 2 s: two heartbeats may be late on a loaded machine.
    with client.reserve([MemberRequest("main", spec)], lease=6) as reservation:
        reservation.ready(timeout=120)
        granted = reservation.view.expires_at
        assert granted is not None
        unrenewed = client.reserve([MemberRequest("main", spec)], lease=2, renew=False)
        assert not unrenewed.renewing
        time.sleep(13)
        view = reservation.refresh()
        assert view.state == "ready", "still held after twice its lease"
        assert view.expires_at is not None and view.expires_at > granted
        assert reservation.renewing
        renewed = reservation.renew()
        assert renewed.expires_at is not None and renewed.expires_at >= view.expires_at
        deadline = time.monotonic() + 60
        while unrenewed.refresh().state != "expired" and time.monotonic() < deadline:
            time.sleep(0.25)
        assert unrenewed.state == "expired"
        assert unrenewed.view.reason == "lease expired"


def test_the_context_manager_releases_on_an_exception(client: Paddock, spec: str) -> None:
    with pytest.raises(RuntimeError, match="the job broke"):
        with client.reserve([MemberRequest("main", spec)], lease="2m") as reservation:
            reservation.ready(timeout=120)
            assert reservation.renewing
            raise RuntimeError("the job broke")
    assert client.reservation(reservation.id).state in ("releasing", "released")
    assert not reservation.renewing
    assert reservation.release().state in ("releasing", "released"), "release is idempotent"


def test_another_users_reservation_is_refused(client: Paddock, other: Paddock, spec: str) -> None:
    with client.reserve([MemberRequest("main", spec)], lease="2m") as reservation:
        with pytest.raises((ForbiddenError, NotFoundError)) as caught:
            other.reservation(reservation.id)
        assert (caught.value.status, caught.value.code) in ((403, "forbidden"), (404, "not_found"))
        with pytest.raises((ForbiddenError, NotFoundError)):
            other.http.get(f"v1/reservations/{reservation.id}/credentials")
        assert reservation.refresh().state not in ("releasing", "released")


def test_typed_errors_for_bad_requests(client: Paddock, spec: str) -> None:
    with pytest.raises(InvalidSpecError) as bad_spec:
        client.reserve([MemberRequest("main", "ram>=")])
    assert (bad_spec.value.code, bad_spec.value.status, bad_spec.value.position) == ("invalid_spec", 400, 5)
    with pytest.raises(InvalidRequestError) as bad_lease:
        client.reserve([MemberRequest("main", spec)], lease="soon")
    assert (bad_lease.value.code, bad_lease.value.status) == ("invalid_request", 400)
    with pytest.raises(NoMatchError) as no_match:
        client.reserve([MemberRequest("board", "arch=armv7")])
    assert no_match.value.status == 422 and no_match.value.reasons[0]["role"] == "board"


def test_typed_errors_for_a_wrong_token_and_no_server(url: str) -> None:
    stranger = Paddock(url, "pdk_wrong-token-value")
    with pytest.raises(UnauthorizedError) as caught:
        stranger.whoami()
    assert (caught.value.code, caught.value.status) == ("unauthorized", 401)
    assert "wrong-token-value" not in str(caught.value)
    with pytest.raises(PaddockError) as unset:
        Paddock(url, "")
    assert unset.value.code == "configuration"
    with pytest.raises(PaddockConnectionError) as unreachable:
        Paddock("http://user:secret@127.0.0.1:9", "pdk_x").whoami()
    assert isinstance(unreachable.value, ConnectionError)
    assert "secret" not in str(unreachable.value)
