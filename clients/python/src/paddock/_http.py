"""HTTP to the Paddock API with requests: the token in a header, typed errors, paginated lists,
long-polls and the server-sent event stream.

One requests.Session per thread (the background renewal and the event stream run in threads of
their own, and a Session is not meant to be shared between threads).
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ._version import __version__
from .errors import PaddockConnectionError, PaddockError, error_from_body

Params = Mapping[str, "str | int"]

#: Ordinary requests give up after this many seconds; long-polls add the time they asked the server to wait.
REQUEST_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0


class Http:
    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = "" if "@" in url else f" {url!r}"  # it may hold a password
            raise PaddockError(f"not an http(s) URL:{shown} (PADDOCK_URL is like http://127.0.0.1:7300)", "configuration")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        #: The server's address as it may appear in messages (no user:password part).
        self.where = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self._base = url.rstrip("/")
        self._token = token
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"Authorization": f"Bearer {self._token}", "User-Agent": f"paddock-python/{__version__}"})
            # Reads and releases are idempotent, so a dropped connection is retried; creating is not
            # (a retried POST /v1/reservations is safe only with an idempotency key, the caller's choice).
            retry = Retry(total=2, connect=2, read=2, status=0, allowed_methods=frozenset({"GET", "DELETE"}), backoff_factor=0.2, raise_on_status=False)
            adapter = HTTPAdapter(max_retries=retry)
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

    def post(self, path: str, body: Any = None) -> Any:
        return self._json(self._request("POST", path, json_body={} if body is None else body))

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
    ) -> requests.Response:
        url = f"{self._base}/{path}"
        timeout = (CONNECT_TIMEOUT, read_timeout if read_timeout is not None else REQUEST_TIMEOUT + wait)
        try:
            response = self._session().request(
                method,
                url,
                params=dict(params) if params else None,
                json=json_body,
                headers=dict(headers) if headers else None,
                timeout=timeout,
                stream=stream,
            )
        except requests.RequestException as error:
            # The exception's text names the URL and can hold a password from it: name the kind only.
            reason = type(error).__name__
            raise PaddockConnectionError(f"cannot reach Paddock at {self.where}: {reason}", "connection_failed", None, {"reason": reason}) from None
        if response.status_code >= 400:
            try:
                body = response.content
            except requests.RequestException:
                body = b""
            raise error_from_body(response.status_code, body, [self._token])
        return response

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
