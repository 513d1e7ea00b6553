"""Fixtures for desync-store-ssh's tests: a real sshd, an ssh wrapper, stores and peers.

The sshd (``desync_core.testing.servers``) runs on 127.0.0.1 with throwaway keys; the
"remote" side of every session is this machine, so the remote command can be casync,
this checkout's ``desync`` or a small misbehaving peer script.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_core.testing.fixtures import casync, cli, desync, ok  # noqa: F401
from desync_core.testing.servers import SSHServer, sshd  # noqa: F401

#: This environment's ``desync`` program, run on the remote side of the sessions.
DESYNC = str(Path(sys.executable).with_name("desync"))


@pytest.fixture(scope="session")
def ssh_wrapper(sshd: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    """A ``CASYNC_SSH_PATH`` script: ``ssh -F <the test ssh_config> "$@"``."""
    path = tmp_path_factory.mktemp("ssh-wrapper") / "ssh"
    path.write_text(f'#!/bin/sh\nexec ssh -F "{sshd.ssh_config}" "$@"\n')
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def ssh_env(ssh_wrapper: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """CASYNC_SSH_PATH set (in this process too) and CASYNC_REMOTE_PATH=our desync."""
    env = {"CASYNC_SSH_PATH": ssh_wrapper, "CASYNC_REMOTE_PATH": DESYNC}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def host(sshd: SSHServer) -> str:  # noqa: F811
    """The ssh_config alias of the test server."""
    return sshd.alias


def blob(size: int, seed: int = 1) -> bytes:
    """Half random, half repetitive data (compresses like real files)."""
    import random

    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(1 << 16)
        out += (b"desync ssh test line %d\n" % len(out)) * 2000
    return bytes(out[:size])


@pytest.fixture
def config_file(tmp_path: Path) -> Iterator[Path]:
    """A desync config path (written by the test) in a throwaway HOME-independent place."""
    path = tmp_path / "config.json"
    yield path
    if path.exists():
        os.unlink(path)
