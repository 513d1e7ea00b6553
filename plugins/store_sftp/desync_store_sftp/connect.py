"""Opening SFTP sessions the way OpenSSH users expect (``remote.md`` §5).

Two ways in:

* **paramiko** (default): ``~/.ssh/config`` (and ``/etc/ssh/ssh_config``) decide the
  real host name, port, user, identity files, known_hosts files and ``ProxyCommand`` of
  a ``Host`` alias; keys come from ssh-agent and the identity files (OpenSSH's default
  keys when none is configured; only the configured ones with ``IdentitiesOnly yes``).
  Host keys are checked strictly against known_hosts: an unknown or changed key is an
  error that names the host and how to trust it, never accepted silently. The TCP
  socket has ``TCP_NODELAY`` (without it every small SFTP request waits for a delayed
  ACK, ``TEST-SERVERS.md``).
* **``CASYNC_SSH_PATH``** (when set): the session runs over the stdin/stdout of
  ``$CASYNC_SSH_PATH -s -- [user@]host[:port] sftp``, exactly as desync starts ssh, so
  every OpenSSH feature (ProxyJump, certificates, ControlMaster…) is available.

Errors are the core's: a refused or dropped connection is a :class:`ConnectionError`
(the store turns it into a retried ``StoreConnectionError``), a host key or
authentication problem a :class:`StoreError` / :class:`StorePermissionError` (not
retried: trying again cannot fix them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import socket
import subprocess
from typing import Any

import paramiko

from desync_core.plugin_api import StoreError
from desync_store_sftp.sshconfig import SSHSettings, SSHTarget, resolve
from desync_store_sftp.trust import (
    authenticate,
    check_host_key,
    known_keys,
    prefer_known_key_types,
)
from desync_store_sftp.wire import BatchingSFTPClient

# paramiko logs a dropped connection from its transport thread ("Socket exception:
# Connection reset by peer"); without a handler Python would print that on stderr next
# to the one-line error the store raises. Configured logging still receives it.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: Preferred first: AEAD ciphers need no separate MAC, whose check paramiko does in
#: Python for every packet (measured ~20% less client CPU per chunk than aes128-ctr).
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


# -- sessions -------------------------------------------------------------------------------


class Session:
    """One SFTP session: an ``SFTPClient`` and what carries it."""

    def __init__(self, sftp: paramiko.SFTPClient, closer: Any) -> None:
        self.sftp = sftp
        self._closer = closer

    def alive(self) -> bool:
        """Whether the connection still works (after an error: was it the link?)."""
        channel = self.sftp.sock
        if isinstance(channel, paramiko.Channel) and (channel.closed or channel.eof_received):
            return False
        check = getattr(self._closer, "is_active", None)
        return bool(check()) if check is not None else False

    def close(self) -> None:
        """Close the session and its connection; errors are ignored."""
        with contextlib.suppress(Exception):
            self.sftp.close()
        with contextlib.suppress(Exception):
            self._closer.close()


def _tcp_socket(settings: SSHSettings, timeout: float | None) -> Any:
    if settings.proxy_jump:
        raise StoreError(
            f"ssh config for {settings.hostname}: ProxyJump is not supported by the built-in "
            "client; set CASYNC_SSH_PATH=ssh to connect through OpenSSH")
    if settings.proxy_command:
        return paramiko.ProxyCommand(settings.proxy_command)
    try:
        sock = socket.create_connection((settings.hostname, settings.port), timeout=timeout)
    except socket.gaierror as exc:
        raise StoreError(f"ssh: could not resolve hostname {settings.hostname}: "
                         f"{exc.strerror}") from None
    except OSError as exc:
        raise ConnectionError(f"ssh: connect to host {settings.hostname} port "
                              f"{settings.port}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def open_paramiko_session(target: SSHTarget, timeout: float | None) -> Session:
    """Connect, check the host key, authenticate and start the ``sftp`` subsystem."""
    settings = resolve(target)
    connect_timeout = settings.connect_timeout or timeout
    sock = _tcp_socket(settings, connect_timeout)
    transport = paramiko.Transport(sock)
    try:
        prefer_known_key_types(transport, known_keys(settings))
        options = transport.get_security_options()
        fast = [c for c in _FAST_CIPHERS if c in options.ciphers]
        options.ciphers = [*fast, *(c for c in options.ciphers if c not in fast)]
        try:
            transport.start_client(timeout=connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionError(f"ssh {settings.hostname} port {settings.port}: "
                                  f"handshake failed: {exc}") from None
        check_host_key(transport, settings)
        authenticate(transport, settings)
        try:
            channel = transport.open_session(timeout=connect_timeout)
            channel.invoke_subsystem("sftp")
            channel.settimeout(timeout)
            sftp = BatchingSFTPClient(channel)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectionError(f"ssh {settings.hostname}: cannot start the sftp "
                                  f"subsystem: {exc}") from None
    except BaseException:
        transport.close()
        raise
    return Session(sftp, transport)


class _PipeChannel:
    """The socket-like object paramiko's SFTP client needs, over a child's pipes."""

    def __init__(self, argv: list[str], timeout: float | None) -> None:
        self.argv = argv
        self.timeout = timeout
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         bufsize=0)
        except OSError as exc:
            raise StoreError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self._out = self.proc.stdin.fileno()
        self._in = self.proc.stdout.fileno()

    def send(self, data: bytes) -> int:
        return os.write(self._out, data)

    def recv(self, size: int) -> bytes:
        if self.timeout is not None:
            ready, _, _ = select.select([self._in], [], [], self.timeout)
            if not ready:
                raise TimeoutError(f"no answer from {self.argv[0]} within {self.timeout:g} s")
        return os.read(self._in, size)

    def get_name(self) -> str:
        return shlex.join(self.argv)

    def is_active(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def open_command_session(ssh: str, target: SSHTarget, timeout: float | None) -> Session:
    """An SFTP session over ``$CASYNC_SSH_PATH -s -- [user@]host sftp`` (desync's argv)."""
    destination = target.destination
    if destination.startswith("-"):
        raise StoreError(f"invalid ssh destination {destination!r}: must not begin with '-'")
    channel = _PipeChannel([ssh, "-s", "--", destination, "sftp"], timeout)
    try:
        sftp = BatchingSFTPClient(channel)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        try:  # the command's exit status says more than the EOF it caused
            status: int | None = channel.proc.wait(2)
        except subprocess.TimeoutExpired:
            status = None
        channel.close()
        how = f"exited with status {status}" if status is not None else exc
        raise ConnectionError(f"{channel.get_name()}: no sftp session ({how})") from None
    return Session(sftp, channel)


def open_session(target: SSHTarget, timeout: float | None) -> Session:
    """A new SFTP session to ``target``: through ``CASYNC_SSH_PATH`` if set, else paramiko."""
    ssh = os.environ.get("CASYNC_SSH_PATH", "")
    if ssh:
        return open_command_session(ssh, target, timeout)
    return open_paramiko_session(target, timeout)


__all__ = ["SSHSettings", "SSHTarget", "Session", "open_session", "resolve"]
