"""The client given several API servers (a comma list): a dead one is passed over, a follower's
redirect is followed with the token and its leader kept, an election (503 no_leader) is waited out,
a failover time that runs out names the servers tried, and only what is safe is sent twice.

The leader is the real server of PADDOCK_URL. The followers, the electing and the dying servers are
stand-ins on loopback speaking the protocol Paddock's API servers will speak, until a real
follower runs in these tests.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from paddock import MemberRequest, Paddock, PaddockConnectionError, PaddockError

class StandIn:
    """A loopback HTTP server answering with ``reply(method, path, index)``: ``(status, headers, body)``, or
    ``"reset"`` (the request taken, then the server died). It records what it was sent."""

    def __init__(self, reply: Callable[[str, str, int], Any]) -> None:
        self.seen: list[tuple[str, str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                stand_in.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
                outcome = reply(self.command, self.path, len(stand_in.seen) - 1)
                if outcome == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                status, headers, body = outcome
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = answer

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a reset connection is the point

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self) -> list[str]:
        return [f"{method} {path}" for method, path, _ in self.seen]


def follower(leader: str, named: str | None = None) -> Callable[[str, str, int], Any]:
    """A follower of ``leader``: /healthz says so, everything else is redirected there."""
    named = leader if named is None else named

    def reply(method: str, path: str, index: int) -> Any:
        if path == "/healthz":
            return 200, {}, {"status": "ok", "role": "follower"}
        body = {"code": "not_leader", "message": f"this server follows; the leader is {named}", "details": {"leader": named}}
        return 307, {"Location": f"{leader}{path}", "Paddock-Leader": named}, body

    return reply


ELECTING = (503, {"Retry-After": "1"}, {"code": "no_leader", "message": "no leader elected yet"})


@pytest.fixture
def stand_ins() -> Iterator[Callable[[Callable[[str, str, int], Any]], StandIn]]:
    started: list[StandIn] = []

    def start(reply: Callable[[str, str, int], Any]) -> StandIn:
        started.append(StandIn(reply))
        return started[-1]

    yield start
    for each in started:
        each.close()


def closed_port() -> str:
    """A loopback port that was free a moment ago: connecting is refused, for real (a dead server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def token() -> str:
    return os.environ["PADDOCK_TOKEN"]


def test_a_dead_first_server_is_passed_over_and_the_live_one_kept(url: str, client: Paddock) -> None:
    dead = closed_port()
    listed = Paddock(f"{dead},{url}", token())
    assert listed.whoami().name == client.whoami().name
    assert listed.http.current == url.rstrip("/")
    assert listed.http.where == f"{dead}, {url.rstrip('/')}"


def test_a_followers_redirect_is_followed_with_the_token_and_the_leader_kept(url: str, client: Paddock, stand_ins: Any) -> None:
    follows = stand_ins(follower(url.rstrip("/")))
    listed = Paddock(follows.url, token())
    assert listed.whoami().name == client.whoami().name  # a 401 had the token been dropped
    assert follows.requests() == ["GET /v1/whoami"]
    assert follows.seen[0][2] == f"Bearer {token()}"
    listed.machines()
    assert len(follows.seen) == 1, "later requests go straight to the leader"


def test_an_election_is_waited_out(url: str, client: Paddock, stand_ins: Any) -> None:
    redirect = follower(url.rstrip("/"))
    server = stand_ins(lambda method, path, index: ELECTING if index < 3 else redirect(method, path, index))
    assert Paddock(server.url, token()).whoami().name == client.whoami().name
    assert len(server.seen) == 4


def test_a_failover_time_that_runs_out_names_the_servers_and_no_password() -> None:
    first, second = closed_port(), closed_port()
    listed = Paddock(f"{first},{second.replace('http://', 'http://paddock:hunter2@')}", "pdk_c2VjcmV0LWZhaWxvdmVy", failover_timeout=1)
    with pytest.raises(PaddockConnectionError) as caught:
        listed.whoami()
    assert caught.value.code == "connection_failed"
    assert str(caught.value).startswith(f"cannot reach Paddock at {first}, {second}: ")
    assert "hunter2" not in repr(caught.value.__dict__) + str(caught.value)
    assert "pdk_c2VjcmV0LWZhaWxvdmVy" not in str(caught.value)


def test_only_what_is_safe_is_sent_again_after_a_reset(url: str, client: Paddock, spec: str, stand_ins: Any) -> None:
    dying = stand_ins(lambda method, path, index: "reset")
    listed = Paddock(f"{dying.url},{url}", token())
    before = {view.id for view in client.reservations(ended=True)}
    with pytest.raises(PaddockConnectionError):
        listed.reserve([MemberRequest("main", spec)], renew=False)
    assert dying.requests() == ["POST /v1/reservations"]
    assert {view.id for view in client.reservations(ended=True)} == before, "no reservation made: it was not sent again"
    # With an idempotency key it is sent on to the next server, and made once.
    key = f"failover-{uuid.uuid4()}"
    reservation = listed.reserve([MemberRequest("main", spec)], idempotency_key=key, renew=False)
    try:
        assert dying.requests() == ["POST /v1/reservations", "POST /v1/reservations"]
        assert client.reserve([MemberRequest("main", spec)], idempotency_key=key, renew=False).id == reservation.id
        assert len({view.id for view in client.reservations(ended=True)} - before) == 1
    finally:
        reservation.release()


def test_a_renewal_whose_connection_broke_is_sent_again(url: str, client: Paddock, spec: str, stand_ins: Any) -> None:
    held = client.reserve([MemberRequest("main", spec)], renew=False)
    try:
        held.ready()
        before = held.view.expires_at
        assert before is not None
        asked = urllib.request.Request(f"{url.rstrip('/')}/v1/reservations/{held.id}", headers={"Authorization": f"Bearer {token()}"})
        shown = json.loads(urllib.request.urlopen(asked).read())
        # A server that shows the reservation, then dies while the renewal is on its way: a renewal
        # counts from its arrival, so the live server is sent it too.
        dying = stand_ins(lambda method, path, index: (200, {}, shown) if method == "GET" else "reset")
        listed = Paddock(f"{dying.url},{url}", token())
        reservation = listed.reservation(held.id)
        time.sleep(1.1)
        renewed = reservation.renew()
        assert dying.requests() == [f"GET /v1/reservations/{held.id}", f"POST /v1/reservations/{held.id}/renew"]
        assert renewed.expires_at is not None and renewed.expires_at > before
    finally:
        held.release()


def test_hostile_leaders_and_redirect_loops_are_refused(url: str, stand_ins: Any) -> None:
    for named in ("file:///etc/passwd", "not a url", "http://[bad"):
        follows = stand_ins(follower(url.rstrip("/"), named))
        with pytest.raises(PaddockError) as caught:
            Paddock(follows.url, token()).whoami()
        assert caught.value.code == "invalid_redirect", named
    peer: dict[str, str] = {}
    first = stand_ins(lambda method, path, index: follower(peer["url"])(method, path, index))
    second = stand_ins(follower(first.url))
    peer["url"] = second.url
    with pytest.raises(PaddockError) as loop:
        Paddock(first.url, token()).whoami()
    assert loop.value.code == "invalid_redirect" and "redirect loop" in str(loop.value)
    assert len(first.seen) + len(second.seen) == 5


def test_a_bad_list_is_refused_without_echoing_a_password() -> None:
    for bad in ("http://127.0.0.1:7300,ftp://b", "http://127.0.0.1:7300,nonsense", " , ", "http://u:hunter2@127.0.0.1:x,http://a"):
        with pytest.raises(PaddockError) as caught:
            Paddock(bad, "pdk_x")
        assert caught.value.code == "configuration"
        assert "hunter2" not in str(caught.value)


def test_servers_asks_each_server_on_its_own_without_the_token(url: str, stand_ins: Any) -> None:
    live = url.rstrip("/")
    follows = stand_ins(lambda method, path, index: (200, {}, {"ok": True, "role": "follower", "leader": live, "version": "0.1.0"}))
    lying = stand_ins(lambda method, path, index: (200, {}, {"role": "follower", "leader": "javascript:alert(1)", "version": "\x1b]0;owned\x07"}))
    failing = stand_ins(lambda method, path, index: (503, {}, {"code": "store_failing", "message": "the database refuses writes"}))
    older = stand_ins(lambda method, path, index: (200, {}, {"ok": True, "version": "0.0.9"}))  # before roles: it leads
    dead = closed_port()
    listed = Paddock(f"{follows.url},{dead},{live},{lying.url},{failing.url},{older.url}", token())
    servers = listed.servers()
    assert [each.role for each in servers] == ["follower", "unreachable", "leader", "follower", "failing", "leader"]
    assert servers[5].version == "0.0.9"
    assert servers[0].leader == live and servers[0].version == "0.1.0"
    assert servers[1].url == dead and servers[1].reason == "ECONNREFUSED"
    assert servers[2].url == live and servers[2].database == "sqlite"
    assert servers[3].leader is None and servers[3].reason == "names a leader that is not a URL: javascript:alert(1)"
    assert servers[3].version == "?]0;owned?", "no control character comes through"
    assert servers[4].reason == "the database refuses writes (store_failing)"
    for stand_in in (follows, lying, failing):
        assert stand_in.requests() == ["GET /healthz"]
        assert stand_in.seen[0][2] == "", "no token sent"
