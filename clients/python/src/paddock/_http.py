"""HTTP to the Paddock API with requests: the token in a header, typed errors, paginated lists,
long-polls and the server-sent event stream.

One requests.Session per thread (the background renewal and the event stream run in threads of
their own, and a Session is not meant to be shared between threads).

The URL may list several API servers of one Paddock (``http://a:7300,http://b:7300``), one of them
the leader. A follower answers 307 with ``Paddock-Leader``: the request is sent there with the token
(requests drops it on a redirect to another host) and the leader is remembered. A server that does
not answer, a 503 ``no_leader`` or a proxy's 502/504 sends the request to the next server, round
robin, with a short growing pause, until the failover time runs out. Reads and deletes may be sent
again after a broken connection; a POST only when it is idempotent (a reservation with an
idempotency key); a request that never reached a server always.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Iterator, Mapping
from urllib.parse import SplitResult, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from ._version import __version__
from .errors import PaddockConnectionError, PaddockError, error_from_body

Params = Mapping[str, "str | int"]

#: Ordinary requests give up after this many seconds; long-polls add the time they asked the server to wait.
REQUEST_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0


#: How long a request keeps trying the servers of a list before PaddockConnectionError, by default.
FAILOVER_TIMEOUT = 60.0
#: Redirects to the leader followed in a row; more means the followers point at each other.
MAX_REDIRECTS = 4
#: With a single URL, a server that does not answer is tried this many times (a blip), as before lists.
SINGLE_SERVER_ATTEMPTS = 3


def _shown(parts: Any) -> str:
    """A URL as it may appear in a message: no user:password, no trailing slash."""
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return str(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")))


def _http_url(text: str) -> SplitResult | None:
    """``text`` split, when it is an http(s) URL with a host and a port that is a number; else None."""
    try:
        parts = urlsplit(text)
        parts.port  # raises on a port that is no number
    except ValueError:
        return None
    return parts if parts.scheme in ("http", "https") and parts.hostname else None


def _printable(text: str) -> str:
    """Words from a server that may not be Paddock, fit for a terminal: no control characters, 200 at most."""
    return "".join("?" if ord(char) < 32 or 127 <= ord(char) < 160 else char for char in text[:200])


def _reason(error: requests.RequestException) -> str:
    """Why a server did not answer, in a word where one is known (ECONNREFUSED, a timeout)."""
    if isinstance(error, requests.Timeout):
        return "timed out"
    if _caused_by(error, (ConnectionRefusedError,)):
        return "ECONNREFUSED"
    return type(error).__name__


def parse_server_urls(text: str) -> list[str]:
    """The servers of a comma-separated list, each an http(s) URL; never echoed when it may hold a password."""
    urls = [each.strip() for each in text.split(",") if each.strip()]
    if not urls:
        raise PaddockError("PADDOCK_URL names no server (it is like http://127.0.0.1:7300, or several: http://a:7300,http://b:7300)", "configuration")
    for url in urls:
        if _http_url(url) is None:
            shown = "" if "@" in url else f" {url!r}"  # it may hold a password
            raise PaddockError(f"not an http(s) URL:{shown} (PADDOCK_URL is like http://127.0.0.1:7300, or several: http://a:7300,http://b:7300)", "configuration")
    return [url.rstrip("/") for url in urls]


def _caused_by(error: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``error`` or what it wraps (requests wraps urllib3 wraps the socket's error) is one of ``kinds``."""
    seen: set[int] = set()
    pending: list[object] = [error]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kinds):
            return True
        pending.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])
    return False


def _never_sent(error: requests.RequestException) -> bool:
    """A failure before the request could reach a server (refused, no route, no such host, connect timeout)."""
    return isinstance(error, requests.ConnectTimeout) or _caused_by(error, (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError))


def _no_leader(response: requests.Response) -> bool:
    try:
        body = json.loads(response.content)
    except (ValueError, requests.RequestException):
        return False
    return isinstance(body, dict) and body.get("code") == "no_leader"


class Http:
    def __init__(self, url: str, token: str, failover_timeout: float = FAILOVER_TIMEOUT) -> None:
        self._urls = parse_server_urls(url)
        #: The servers as they may appear in messages (no user:password part).
        self.where = ", ".join(_shown(urlsplit(each)) for each in self._urls)
        self._token = token
        self._failover_timeout = failover_timeout
        self._local = threading.local()
        # Which server leads, shared by the threads: the list's current one, or one a follower named.
        self._lock = threading.Lock()
        self._index = 0
        self._leader: str | None = None

    @property
    def current(self) -> str:
        """Where the next request goes: the leader as last known, else the current server of the list."""
        with self._lock:
            return self._leader or self._urls[self._index]

    def _follow_leader(self, response: requests.Response) -> None:
        value = response.headers.get("Paddock-Leader", "")
        parts = _http_url(value)
        if parts is None:
            shown = "a leader that is not a URL" if "@" in value else repr(value[:200])
            raise PaddockError(f"a follower named a leader that is not an http(s) URL: {shown}", "invalid_redirect", response.status_code)
        origin = (parts.scheme, parts.hostname, parts.port)
        with self._lock:
            for index, url in enumerate(self._urls):
                own = urlsplit(url)
                if (own.scheme, own.hostname, own.port) == origin:
                    self._index, self._leader = index, None
                    return
            self._leader = value.rstrip("/")

    def _failed(self, base: str) -> None:
        """The server at ``base`` failed: the next one of the list is tried (a leader learnt elsewhere is forgotten)."""
        with self._lock:
            if base != (self._leader or self._urls[self._index]):
                return  # another thread moved on already
            if self._leader is not None:
                self._leader = None
            else:
                self._index = (self._index + 1) % len(self._urls)

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"Authorization": f"Bearer {self._token}", "User-Agent": f"paddock-python/{__version__}"})
            # Retries and redirects are _request's: requests would follow a follower's 307 without
            # the token (another host) and retry on the same server only.
            adapter = HTTPAdapter(max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def close(self) -> None:
        """Closes this thread's connections."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    def health(self) -> list[dict[str, str]]:
        """What each server of the list says it is at GET /healthz, asked on its own: no failover, no
        redirect followed, no token (it needs none, and the list may name a server that is not ours)."""
        return [self._health(url) for url in self._urls]

    def _health(self, base: str) -> dict[str, str]:
        shown = _shown(urlsplit(base))
        try:
            response = requests.get(
                f"{base}/healthz",
                timeout=(5.0, 10.0),
                allow_redirects=False,
                headers={"User-Agent": f"paddock-python/{__version__}"},
            )
        except requests.RequestException as error:
            return {"url": shown, "role": "unreachable", "reason": _reason(error)}
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return {"url": shown, "role": "not_paddock", "reason": f"HTTP {response.status_code}, not JSON"}
        said = {key: _printable(body[key]) for key in ("role", "version", "database", "leader", "code", "message") if isinstance(body.get(key), str)}
        facts = {key: said[key] for key in ("version", "database") if key in said}
        # A Paddock from before several servers says "ok" and no role: it is the only one, so it leads.
        if response.status_code == 200 and (said.get("role") == "leader" or ("role" not in body and body.get("ok") is True)):
            return {"url": shown, "role": "leader", **facts}
        if response.status_code == 200 and said.get("role") == "follower":
            leader = said.get("leader")
            if leader is None:
                return {"url": shown, "role": "follower", **facts}
            parts = _http_url(leader)
            if parts is not None:
                return {"url": shown, "role": "follower", **facts, "leader": _shown(parts)}
            return {"url": shown, "role": "follower", **facts, "reason": f"names a leader that is not a URL: {leader}"}
        reason = f"{said['message']} ({said.get('code', response.status_code)})" if "message" in said else f"HTTP {response.status_code}"
        return {"url": shown, "role": "failing" if response.status_code == 503 else "not_paddock", **facts, "reason": reason}

    def get(self, path: str, params: Params | None = None, wait: float = 0) -> Any:
        """GET; ``wait`` is how long the server was asked to hold the answer (a long-poll)."""
        return self._json(self._request("GET", path, params=params, wait=wait))

    def get_all(self, path: str, params: Params | None = None) -> list[Any]:
        """Every item of a paginated list, following the server's ``Paddock-Next-Cursor``."""
        items: list[Any] = []
        cursor = ""
        while True:
            query: dict[str, str | int] = {"limit": 1000, **(params or {})}
            if cursor:
                query["cursor"] = cursor
            response = self._request("GET", path, params=query)
            page = self._json(response)
            if not isinstance(page, list):
                raise PaddockError(f"{self.where}/{path} answered with something that is not a list", "invalid_response", response.status_code)
            items.extend(page)
            cursor = response.headers.get("Paddock-Next-Cursor", "")
            if not cursor:
                return items

    def post(self, path: str, body: Any = None, *, replayable: bool = False) -> Any:
        """POST; ``replayable``: it may be sent again after a connection broke once it was sent, because
        doing it twice does what doing it once does (a reservation with an idempotency key, a question)."""
        return self._json(self._request("POST", path, json_body={} if body is None else body, replayable=replayable))

    def delete(self, path: str) -> Any:
        return self._json(self._request("DELETE", path))

    def server_sent_events(self, path: str, stop: threading.Event) -> Iterator[str]:
        """The ``data`` of each event of a ``text/event-stream`` answer, until the server ends it or ``stop`` is set.

        A failure to connect or an error status raises a typed error; so does a stream that stays
        silent for longer than the server's keep-alive allows.
        """
        response = self._request("GET", path, headers={"Accept": "text/event-stream"}, stream=True, read_timeout=45.0)
        closer = threading.Thread(target=_close_when, args=(stop, response), daemon=True)
        closer.start()
        buffer = ""
        try:
            for chunk in response.iter_content(chunk_size=None):
                if stop.is_set():
                    return
                buffer += chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
                buffer = buffer.replace("\r\n", "\n")
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    data = [line[5:].lstrip(" ") if line.startswith("data:") else "" for line in block.split("\n") if line.startswith("data")]
                    if data:
                        yield "\n".join(data)
        except (requests.RequestException, OSError, ValueError) as error:
            if stop.is_set():
                return
            raise PaddockConnectionError(f"the event stream from {self.where} broke: {type(error).__name__}", "connection_failed") from None
        finally:
            stop.set()  # ends the closer thread
            response.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        wait: float = 0,
        stream: bool = False,
        read_timeout: float | None = None,
        replayable: bool | None = None,
    ) -> requests.Response:
        if replayable is None:
            replayable = method in ("GET", "HEAD", "DELETE")
        timeout = (CONNECT_TIMEOUT, read_timeout if read_timeout is not None else REQUEST_TIMEOUT + wait)
        deadline = time.monotonic() + self._failover_timeout
        tried: list[str] = []
        redirects = failures = attempts = 0
        while True:
            base = self.current
            shown = _shown(urlsplit(base))
            if shown not in tried:
                tried.append(shown)
            attempts += 1
            try:
                response = self._session().request(
                    method,
                    f"{base}/{path}",
                    params=dict(params) if params else None,
                    json=json_body,
                    headers=dict(headers) if headers else None,
                    timeout=timeout,
                    stream=stream,
                    allow_redirects=False,
                )
            except requests.RequestException as error:
                # The exception's text names the URL and can hold a password from it: name the kind only.
                reason = type(error).__name__
                never_sent = _never_sent(error)
                broken = isinstance(error, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError))
                single = len(self._urls) == 1 and self._leader is None
                if not broken or (not never_sent and not replayable) or (single and (not replayable or attempts >= SINGLE_SERVER_ATTEMPTS)):
                    raise PaddockConnectionError(f"cannot reach Paddock at {shown}: {reason}", "connection_failed", None, {"reason": reason}) from None
            else:
                status = response.status_code
                if status == 307 and "Paddock-Leader" in response.headers:
                    response.close()
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise PaddockError(
                            f"the Paddock servers redirected {MAX_REDIRECTS} times in a row ({' -> '.join(tried)}): a redirect loop", "invalid_redirect", status
                        )
                    self._follow_leader(response)
                    continue  # the follower did nothing: straight on to the leader
                if not ((status == 503 and _no_leader(response)) or (status in (502, 504) and replayable)):
                    if status >= 300:  # a redirect that is not a follower's is not followed
                        try:
                            body = response.content
                        except requests.RequestException:
                            body = b""
                        raise error_from_body(status, body, [self._token])
                    return response
                reason = "no leader elected (HTTP 503)" if status == 503 else f"HTTP {status}"
                response.close()
            redirects = 0
            self._failed(base)
            failures += 1
            pause = min(2.0, 0.2 * 2 ** (failures - 1))
            if time.monotonic() + pause > deadline:
                raise PaddockConnectionError(
                    f"cannot reach Paddock at {', '.join(tried)}: {reason}", "connection_failed", None, {"reason": reason, "tried": tried}
                )
            time.sleep(pause)

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise PaddockError(
                f"{self.where} answered with something that is not JSON; is it a Paddock server?", "invalid_response", response.status_code
            ) from None


def _close_when(stop: threading.Event, response: requests.Response) -> None:
    """Ends a streamed answer once ``stop`` is set, waking a thread blocked reading it."""
    stop.wait()
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    response.close()
