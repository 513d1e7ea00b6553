"""Fixtures of desync-format-tar's tests (helpers live in ``format_tar_util``).

The CLI runs in-process (``desync_core.cli.run``) with the plugin loaded from its
installed entry point, exactly as ``desync`` would; golden vectors come from
``../shared/testdata`` (``DESYNC_TESTDATA`` overrides), as in the core's tests.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from format_tar_util import TESTDATA, CliResult


@pytest.fixture(scope="session")
def testdata() -> Path:
    """``shared/testdata/desync``."""
    if not TESTDATA.is_dir():
        pytest.fail(f"golden test data not found at {TESTDATA} (set DESYNC_TESTDATA)")
    return TESTDATA


@pytest.fixture(scope="session")
def cmd_testdata(testdata: Path) -> Path:
    """``shared/testdata/desync/cmd/desync/testdata``."""
    return testdata / "cmd" / "desync" / "testdata"


@pytest.fixture(scope="session")
def gnu_tar() -> str:
    """GNU tar (part of every Debian system)."""
    path = shutil.which("tar")
    if path is None:
        pytest.fail("GNU tar is not installed")
    return path


@pytest.fixture
def cli(capsysbinary: pytest.CaptureFixture[bytes],
        monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """``cli("tar", ..., input=b"...")`` runs a command and returns its CliResult."""
    from desync_core.cli import run

    def call(*args: str | os.PathLike[str], input: bytes | None = None) -> CliResult:
        if input is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(input)))
        capsysbinary.readouterr()
        code = run([str(a) for a in args])
        out, err = capsysbinary.readouterr()
        return CliResult(code, out, err.decode(errors="replace"))

    return call


@pytest.fixture
def ok(cli: Callable[..., CliResult]) -> Callable[..., CliResult]:
    """Like ``cli`` but the command must succeed."""

    def call(*args: str | os.PathLike[str], input: bytes | None = None) -> CliResult:
        result = cli(*args, input=input)
        assert result.code == 0, f"desync {' '.join(map(str, args))}: {result.err}"
        return result

    return call
