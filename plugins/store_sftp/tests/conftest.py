"""Fixtures for desync-store-sftp's tests: a real sshd on 127.0.0.1 and an OpenSSH user
setup for it in a temporary ``HOME`` (``~/.ssh/config`` with the ``desync-test`` Host
alias, ``known_hosts``, the client key).

Every test runs with ``HOME`` pointing there and without ``SSH_AUTH_SOCK`` or
``CASYNC_SSH_PATH`` from the caller's environment, so the developer's own keys and
config never take part.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_core.testing.fixtures import cli, ok  # noqa: F401
from desync_core.testing.servers import SSHServer, sshd  # noqa: F401

ALIAS = SSHServer.alias


@pytest.fixture(scope="session")
def ssh_home(sshd: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A HOME whose ``~/.ssh`` reaches the session's sshd through the Host alias."""
    home = tmp_path_factory.mktemp("home")
    sshd.write_user_files(home)
    return home


@pytest.fixture(autouse=True)
def _ssh_environment(ssh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(ssh_home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("CASYNC_SSH_PATH", raising=False)


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, str]:
    """A fresh store directory and its ``sftp://`` URL through the Host alias."""
    base = tmp_path / "store"
    base.mkdir()
    return base, f"sftp://{ALIAS}{base}"


@pytest.fixture
def own_sshd(tmp_path_factory: pytest.TempPathFactory,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[SSHServer]:
    """A server of the test's own (to stop or cut), with HOME set up for it."""
    server = SSHServer(tmp_path_factory.mktemp("sshd"))
    home = tmp_path_factory.mktemp("home")
    server.write_user_files(home)
    monkeypatch.setenv("HOME", str(home))
    try:
        yield server
    finally:
        server.stop_all()
