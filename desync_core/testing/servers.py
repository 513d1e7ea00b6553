"""Real servers for plugin tests, started on 127.0.0.1 and stopped by PID.

* :class:`SSHServer` / the ``sshd`` fixture: OpenSSH's sshd with throwaway host and
  client keys, publickey auth only, ``internal-sftp``; plus an ssh config file with a
  ``Host`` alias and a known_hosts file, the way an OpenSSH user would have them.
* :func:`free_port`, :func:`wait_for_port`: for any other server a test starts.

Import the fixtures a test directory needs into its ``conftest.py``::

    from desync_core.testing.servers import sshd  # noqa: F401
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, proc: subprocess.Popen[bytes] | None = None,
                  timeout: float = 30.0, what: str = "server") -> None:
    """Wait until 127.0.0.1:``port`` accepts connections (or ``proc`` died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> None:
    """Stop a server by PID: ``sig``, then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SSHServer:
    """A real sshd on 127.0.0.1 with temporary keys (``TEST-SERVERS.md`` recipe).

    Attributes:
        directory: holds keys, sshd_config, known_hosts and ssh_config.
        port: the listening port.
        client_key: private key accepted by the server (``root`` login).
        known_hosts: a known_hosts file with the server's host key.
        ssh_config: an OpenSSH client config with ``Host <alias>`` for the server.
        alias: the Host alias (``desync-test``).
    """

    alias = "desync-test"

    def __init__(self, directory: Path) -> None:
        if not os.path.exists(SSHD):
            raise RuntimeError(f"{SSHD} is not installed (scripts/setup.sh installs it)")
        self.directory = directory
        self.port = free_port()
        d = directory
        for name in ("host_ed25519", "client_ed25519", "other_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                           check=True)
        self.client_key = d / "client_ed25519"
        #: a key the server does not accept
        self.wrong_key = d / "other_ed25519"
        shutil.copy(d / "client_ed25519.pub", d / "authorized_keys")
        os.chmod(d / "authorized_keys", 0o600)
        host_pub = " ".join((d / "host_ed25519.pub").read_text().split()[:2])
        self.host_public_key = host_pub
        self.known_hosts = d / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        (d / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {d / 'host_ed25519'}\n"
            f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            "AuthenticationMethods publickey\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
            "MaxStartups 100:30:200\nMaxSessions 100\n"
            # the environment tests pass to remote commands (CASYNC_* and PATH-like)
            "AcceptEnv CASYNC_* DESYNC_*\n"
            "Subsystem sftp internal-sftp\n")
        self.ssh_config = d / "ssh_config"
        self.ssh_config.write_text(
            f"Host {self.alias}\n  HostName 127.0.0.1\n  Port {self.port}\n  User root\n"
            f"  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n")
        os.makedirs("/run/sshd", exist_ok=True)
        self.log = open(d / "sshd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(self.port, proc=self.proc, what="sshd")
        except BaseException:
            self.stop()
            raise

    def ssh_command(self) -> list[str]:
        """``ssh`` with this server's key, known_hosts and port (no user config)."""
        return ["ssh", "-F", str(self.ssh_config), self.alias]

    def stop(self) -> None:
        """Stop sshd (SIGTERM, by PID) and the sessions it started."""
        stop_process(self.proc)
        self.log.close()

    def restart(self) -> None:
        """Start sshd again on the same port and keys (after :meth:`stop`)."""
        self.log = open(self.directory / "sshd.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.directory / "sshd_config")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, proc=self.proc, what="sshd")

    # -- added for the SFTP plugin's tests ----------------------------------------------

    def session_pids(self) -> list[int]:
        """PIDs of the processes serving this server's connections: the per-connection
        sshd processes (they ``setsid`` and outlive :meth:`stop`), found as the owners of
        TCP sockets whose *local* port is this server's port (clients have the remote
        one)."""
        inodes: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    lines = f.readlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == self.port:
                    inodes.add(f"socket:[{fields[9]}]")
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in (os.getpid(), self.proc.pid):
                continue
            try:
                fds = os.listdir(f"/proc/{entry}/fd")
                if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                    pids.append(int(entry))
            except OSError:
                continue  # exited meanwhile, or not ours to look at
        return pids

    def kill_sessions(self) -> int:
        """SIGKILL every connection this server is serving (the clients see the link
        drop); returns how many processes were killed."""
        killed = 0
        for pid in self.session_pids():
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        return killed

    def stop_all(self) -> None:
        """Stop sshd and drop every connection it serves (:meth:`stop` alone leaves
        established sessions running)."""
        self.stop()
        self.kill_sessions()

    def write_user_files(self, home: Path) -> Path:
        """Give ``home`` an OpenSSH user setup for this server: ``~/.ssh/config`` (the
        ``Host`` alias, without UserKnownHostsFile so ``~/.ssh/known_hosts`` is used),
        ``~/.ssh/known_hosts`` and the client key as ``~/.ssh/id_ed25519``. Returns the
        ``.ssh`` directory. Tests run clients with ``HOME=home``."""
        ssh = home / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        os.chmod(ssh, 0o700)
        shutil.copy(self.client_key, ssh / "id_ed25519")
        shutil.copy(f"{self.client_key}.pub", ssh / "id_ed25519.pub")
        os.chmod(ssh / "id_ed25519", 0o600)
        shutil.copy(self.known_hosts, ssh / "known_hosts")
        (ssh / "config").write_text(
            f"Host {self.alias}\n  HostName 127.0.0.1\n  Port {self.port}\n  User root\n"
            f"  IdentityFile {ssh / 'id_ed25519'}\n  IdentitiesOnly yes\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n")
        return ssh


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    """A real sshd for the whole session (stopped at the end)."""
    with tempfile.TemporaryDirectory(prefix="desync-sshd-") as tmp:
        server = SSHServer(Path(tmp))
        try:
            yield server
        finally:
            server.stop()


__all__ = ["SSHServer", "free_port", "sshd", "stop_process", "wait_for_port"]
