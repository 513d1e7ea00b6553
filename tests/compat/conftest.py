"""Fixtures for the casync compatibility tests.

``desync`` runs in-process here (``desync_core.cli.run``): the comparisons run dozens of
commands, and a subprocess per command would cost ~1 s each for interpreter start and
kernel loading. The CLI code path is the same; exit codes and stderr are checked with
real subprocesses in ``tests/commands`` and in the tests here that need stdin, stdout
or a device.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest
from compat_util import Casync


@pytest.fixture(scope="session")
def casync_run(casync: str) -> Casync:
    """The casync binary wrapped for convenience."""
    return Casync(casync)


@pytest.fixture
def desync_inproc() -> Callable[..., int]:
    """Run the desync CLI in this process; a non-zero exit fails the test."""
    from desync_core.cli import run

    def call(*args: str | os.PathLike[str], check: bool = True) -> int:
        rc = run([str(a) for a in args])
        if check:
            assert rc == 0, f"desync {' '.join(map(str, args))} exited with {rc}"
        return rc

    return call


@pytest.fixture
def desync_captured(
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run the desync CLI in this process and return what a subprocess run would: a
    CompletedProcess with the exit status and stderr (stdout is not captured)."""
    from desync_core.cli import run

    def call(*args: str | os.PathLike[str],
             check: bool = False) -> subprocess.CompletedProcess[bytes]:
        capsys.readouterr()
        argv = [str(a) for a in args]
        rc = run(argv)
        err = capsys.readouterr().err
        if check:
            assert rc == 0, err
        return subprocess.CompletedProcess(argv, rc, b"", err.encode())

    return call
