"""Connecting like OpenSSH: ssh config resolution, ssh-agent, default and encrypted keys.

Config files, keys and the agent are real (``ssh-keygen``, ``ssh-agent``, ``ssh-add``);
the server is the session's sshd.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_core.plugin_api import Chunk, StorePermissionError
from desync_core.testing import open_chunk_store, sample_chunk
from desync_core.testing.servers import SSHServer
from desync_store_sftp.sshconfig import SSHTarget, resolve

ALIAS = SSHServer.alias


def _write_config(home: Path, text: str) -> Path:
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "config").write_text(text)
    return ssh


def test_host_alias_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HostName, Port, User, IdentityFile (accumulating, ``~`` expanded),
    IdentitiesOnly, UserKnownHostsFile and HostKeyAlias come from ~/.ssh/config; the
    URL's user and port win over the config."""
    monkeypatch.setenv("HOME", str(tmp_path))
    ssh = _write_config(tmp_path, (
        "Host box\n  HostName 10.1.2.3\n  Port 2200\n  User alice\n"
        "  IdentityFile ~/.ssh/box_key\n  IdentitiesOnly yes\n  HostKeyAlias boxkey\n"
        "Host *\n  IdentityFile ~/.ssh/other\n"
        "  UserKnownHostsFile ~/.ssh/kh_a ~/.ssh/kh_b\n"))
    s = resolve(SSHTarget("box"))
    assert (s.hostname, s.port, s.user) == ("10.1.2.3", 2200, "alice")
    assert s.identity_files == [str(ssh / "box_key"), str(ssh / "other")]
    assert s.identities_only is True
    assert s.known_hosts[:2] == [str(ssh / "kh_a"), str(ssh / "kh_b")]
    assert s.host_key_name == "[boxkey]:2200"
    s = resolve(SSHTarget("box", user="bob", port=22))
    assert (s.user, s.port, s.host_key_name) == ("bob", 22, "boxkey")


def test_no_config_means_openssh_defaults(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a matching Host: the name as given, port 22, the local user, the
    default identity files and ~/.ssh/known_hosts."""
    monkeypatch.setenv("HOME", str(tmp_path))
    s = resolve(SSHTarget("plain.example"))
    assert (s.hostname, s.port, s.user) == ("plain.example", 22, getpass.getuser())
    assert str(tmp_path / ".ssh" / "id_ed25519") in s.identity_files
    assert s.identities_explicit is False
    assert s.known_hosts[0] == str(tmp_path / ".ssh" / "known_hosts")
    assert s.host_key_name == "plain.example"


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real ssh-agent on a temporary socket (SSH_AUTH_SOCK set), stopped by PID."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("ssh-agent did not start")
        time.sleep(0.01)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    try:
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


def _agent_add(key: Path) -> None:
    subprocess.run(["ssh-add", "-q", str(key)], check=True, capture_output=True, timeout=30)


def _home_without_keys(sshd: SSHServer, home: Path, extra: str = "") -> Path:
    """~/.ssh with known_hosts and the Host alias but no identity files at all."""
    ssh = sshd.write_user_files(home)
    (ssh / "id_ed25519").unlink()
    (ssh / "id_ed25519.pub").unlink()
    (ssh / "config").write_text(
        f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User root\n{extra}")
    return ssh


def _round_trip(url: str) -> None:
    store = open_chunk_store(url)
    chunk_id, data = sample_chunk(7)
    store.store_chunk(Chunk(chunk_id, data))
    assert bytes(store.get_chunk(chunk_id).data()) == data
    store.close()


def test_agent_key_is_used(agent: Path, sshd: SSHServer, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No key file anywhere, the key in ssh-agent: authentication through the agent."""
    _agent_add(sshd.client_key)
    home = tmp_path / "home"
    _home_without_keys(sshd, home)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "s").mkdir()
    _round_trip(f"sftp://{ALIAS}{tmp_path}/s")


def test_identities_only_ignores_other_agent_keys(agent: Path, sshd: SSHServer,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """IdentitiesOnly yes with an IdentityFile the server refuses: the accepted key
    in the agent is not offered, so the login fails (as with OpenSSH)."""
    _agent_add(sshd.client_key)
    home = tmp_path / "home"
    ssh = _home_without_keys(sshd, home, "  IdentitiesOnly yes\n  IdentityFile ~/.ssh/k\n")
    shutil.copy(sshd.wrong_key, ssh / "k")
    os.chmod(ssh / "k", 0o600)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "s").mkdir()
    store = open_chunk_store(f"sftp://{ALIAS}{tmp_path}/s")
    with pytest.raises(StorePermissionError, match="permission denied"):
        store.has_chunk(sample_chunk(1)[0])


def test_encrypted_identity_file_found_in_agent(agent: Path, sshd: SSHServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A passphrase-protected IdentityFile (no prompt: BatchMode) whose key the agent
    holds is used through the agent, even with IdentitiesOnly."""
    _agent_add(sshd.client_key)
    home = tmp_path / "home"
    ssh = _home_without_keys(sshd, home, "  IdentitiesOnly yes\n  IdentityFile ~/.ssh/locked\n")
    shutil.copy(sshd.client_key, ssh / "locked")
    shutil.copy(f"{sshd.client_key}.pub", ssh / "locked.pub")
    os.chmod(ssh / "locked", 0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "secret phrase", "-f",
                    str(ssh / "locked")], check=True, capture_output=True, timeout=30)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "s").mkdir()
    _round_trip(f"sftp://{ALIAS}{tmp_path}/s")


def test_encrypted_identity_file_without_agent(sshd: SSHServer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The same without an agent: a one-line refusal saying the key is encrypted."""
    home = tmp_path / "home"
    ssh = _home_without_keys(sshd, home, "  IdentitiesOnly yes\n  IdentityFile ~/.ssh/locked\n")
    shutil.copy(sshd.client_key, ssh / "locked")
    os.chmod(ssh / "locked", 0o600)
    subprocess.run(["ssh-keygen", "-q", "-p", "-P", "", "-N", "secret phrase", "-f",
                    str(ssh / "locked")], check=True, capture_output=True, timeout=30)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "s").mkdir()
    store = open_chunk_store(f"sftp://{ALIAS}{tmp_path}/s")
    with pytest.raises(StorePermissionError, match="is encrypted and not in ssh-agent"):
        store.has_chunk(sample_chunk(1)[0])


def test_location_parsing() -> None:
    """User, host (IPv6 in brackets), port and percent-decoded path of sftp:// URLs;
    the destination word is desync's ``[user@]host[:port]``."""
    from desync_core.plugin_api import parse_location
    from desync_store_sftp.store import parse_sftp_location

    target, path = parse_sftp_location(parse_location("sftp://al%40ice@[::1]:2222/a%20b/s"))
    assert (target.user, target.host, target.port, path) == ("al@ice", "::1", 2222, "/a b/s/")
    assert target.destination == "al@ice@[::1]:2222"
    target, path = parse_sftp_location(parse_location("sftp://box/srv/store/"))
    assert (target.user, target.host, target.port, path) == (None, "box", None, "/srv/store/")
    assert target.destination == "box"
