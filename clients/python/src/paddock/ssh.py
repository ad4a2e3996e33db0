"""Commands and file copies on a reserved machine over SSH (paramiko), with the reservation's key and
the host key Paddock captured at readiness pinned.

Only the pinned key's algorithm is offered to the server, and a server presenting any other key is
refused right after the key exchange, before authentication, so the private key is never used
against an impostor. Errors name user@host:port, never a key.
"""

from __future__ import annotations

import base64
import binascii
import io
import shlex
import socket
import threading
from typing import Any, Callable, TypeVar

import paramiko

from .errors import HostKeyMismatchError, SshError
from .views import CommandResult, SshTarget

CONNECT_TIMEOUT = 20.0
_CHUNK = 32768

T = TypeVar("T")

#: The host key algorithms a key type may sign with (an RSA key with the SHA-2 ones too).
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def _where(target: SshTarget) -> str:
    return f"{target.user}@{target.host}:{target.port}"


def _pinned(target: SshTarget) -> tuple[str, bytes]:
    """The pinned key's type and blob from its OpenSSH line (``ssh-ed25519 AAAA… [comment]``)."""
    fields = (target.host_key or "").split()
    if len(fields) >= 2:
        try:
            return fields[0], base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            pass
    raise SshError(f"no usable host key for {_where(target)}; is the member ready?", "host_key_missing")


def _private_key(text: str) -> Any:
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise SshError("the reservation's private key is of a kind this client cannot read", "ssh_failed")


def connect(target: SshTarget, timeout: float = CONNECT_TIMEOUT) -> Any:
    """An authenticated paramiko Transport to the member, its host key checked; the caller closes it.

    Raises HostKeyMismatchError when the server shows another host key than the pinned one, and
    SshError (``ssh_failed``) when it cannot be reached or refuses the reservation's key.
    """
    if target.via != "direct":
        raise SshError(
            f"{target.machine or _where(target)} is reached through Paddock's tunnel (via {target.via}), which this client does not open; "
            "use `paddock tunnel` or the TypeScript client",
            "tunnel_unsupported",
        )
    key_type, blob = _pinned(target)
    key = _private_key(target.private_key)
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except OSError as error:
        raise SshError(f"cannot reach {_where(target)}: {error.strerror or error}", "ssh_failed") from None
    transport = paramiko.Transport(sock)
    try:
        options = transport.get_security_options()
        wanted = [name for name in _ALGORITHMS.get(key_type, (key_type,)) if name in options.key_types]
        if not wanted:
            raise SshError(f"the host key of {_where(target)} is of type {key_type}, which paramiko cannot check", "host_key_unsupported")
        options.key_types = wanted
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise SshError(f"cannot open SSH to {_where(target)}: {error}", "ssh_failed") from None
        presented = transport.get_remote_server_key()
        if presented is None or presented.asbytes() != blob:
            raise HostKeyMismatchError(
                f"{_where(target)} presented a host key other than the one Paddock pinned; refusing to connect", "host_key_mismatch"
            )
        try:
            transport.auth_publickey(target.user, key)
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise SshError(f"cannot log in to {_where(target)}: {error}", "ssh_failed") from None
        return transport
    except BaseException:
        transport.close()
        raise


def _with_connection(target: SshTarget, work: Callable[[Any], T]) -> T:
    transport = connect(target)
    try:
        return work(transport)
    except (paramiko.SSHException, EOFError, socket.timeout) as error:
        raise SshError(f"the SSH connection to {_where(target)} failed: {error}", "ssh_failed") from None
    finally:
        transport.close()


def run_command(target: SshTarget, command: str, timeout: float | None = None) -> CommandResult:
    """Runs a shell command on the member (its standard input empty): its output and exit status.

    ``timeout``: seconds without any output after which the command is given up (SshError).
    """

    def work(transport: Any) -> CommandResult:
        channel = transport.open_session(timeout=CONNECT_TIMEOUT)
        channel.settimeout(timeout)
        channel.exec_command(command)
        channel.shutdown_write()
        stderr: list[bytes] = []
        failure: list[BaseException] = []

        def read_stderr() -> None:
            try:
                while chunk := channel.recv_stderr(_CHUNK):
                    stderr.append(chunk)
            except BaseException as error:  # handed to the caller's thread
                failure.append(error)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        stdout: list[bytes] = []
        while chunk := channel.recv(_CHUNK):
            stdout.append(chunk)
        reader.join()
        if failure:
            raise failure[0]
        status = channel.recv_exit_status()
        return CommandResult(
            stdout=b"".join(stdout).decode("utf-8", "replace"),
            stderr=b"".join(stderr).decode("utf-8", "replace"),
            code=status if status >= 0 else None,
        )

    return _with_connection(target, work)


def upload_file(target: SshTarget, local_path: str, remote_path: str) -> None:
    """Copies a local file to the member: SFTP, or ``cat`` where the machine has no SFTP server."""

    def work(transport: Any) -> None:
        what = f"copy of {local_path} to {_where(target)}:{remote_path}"
        sftp = _sftp(transport)
        if sftp is None:
            with open(local_path, "rb") as source:
                _cat(transport, f"cat > {shlex.quote(remote_path)}", what, source=source)
            return
        try:
            sftp.put(local_path, remote_path)
        except (OSError, paramiko.SSHException) as error:
            raise SshError(f"{what} failed: {error}", "copy_failed") from None
        finally:
            sftp.close()

    _with_connection(target, work)


def download_file(target: SshTarget, remote_path: str, local_path: str) -> None:
    """Copies a file from the member to a local path: SFTP, or ``cat`` where there is no SFTP server."""

    def work(transport: Any) -> None:
        what = f"copy of {_where(target)}:{remote_path} to {local_path}"
        sftp = _sftp(transport)
        if sftp is None:
            with open(local_path, "wb") as sink:
                _cat(transport, f"cat {shlex.quote(remote_path)}", what, sink=sink)
            return
        try:
            sftp.get(remote_path, local_path)
        except (OSError, paramiko.SSHException) as error:
            raise SshError(f"{what} failed: {error}", "copy_failed") from None
        finally:
            sftp.close()

    _with_connection(target, work)


def _sftp(transport: Any) -> Any:
    try:
        return paramiko.SFTPClient.from_transport(transport)
    except (paramiko.SSHException, EOFError):
        return None  # small guests (dropbear images) have no SFTP server


def _cat(transport: Any, command: str, what: str, source: io.BufferedReader | None = None, sink: io.BufferedWriter | None = None) -> None:
    """A copy through a shell command: the local file into its stdin, or its stdout into the local file."""
    channel = transport.open_session(timeout=CONNECT_TIMEOUT)
    channel.exec_command(command)
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: _drain(channel.recv_stderr, stderr.append), daemon=True)
    reader.start()
    try:
        if source is not None:
            while chunk := source.read(_CHUNK):
                channel.sendall(chunk)
            channel.shutdown_write()
            _drain(channel.recv, lambda _chunk: None)
        elif sink is not None:
            channel.shutdown_write()
            _drain(channel.recv, sink.write)
    except OSError as error:
        raise SshError(f"{what} failed: {error}", "copy_failed") from None
    reader.join()
    status = channel.recv_exit_status()
    if status != 0:
        reason = b"".join(stderr).decode("utf-8", "replace").strip() or f"exit status {status}"
        raise SshError(f"{what} failed: {reason}", "copy_failed")


def _drain(receive: Callable[[int], bytes], keep: Callable[[bytes], Any]) -> None:
    while chunk := receive(_CHUNK):
        keep(chunk)


__all__ = ["connect", "run_command", "upload_file", "download_file"]
