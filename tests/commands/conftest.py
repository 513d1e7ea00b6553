"""Fixtures of the command tests.

Most tests run the CLI in-process (``desync_core.cli.run``: the same argument parsing,
error handling and exit codes as the ``desync`` program, without ~0.5 s of interpreter
start per command); ``test_subprocess.py`` checks the real program end to end.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable

import pytest
from cmd_util import Result


@pytest.fixture
def cli(capsysbinary: pytest.CaptureFixture[bytes],
        monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``cli("make", ..., input=b"...")`` runs a command and returns its Result."""
    from desync_core.cli import run

    def call(*args: str | os.PathLike[str], input: bytes | None = None) -> Result:
        if input is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(input)))
        capsysbinary.readouterr()
        code = run([str(a) for a in args])
        out, err = capsysbinary.readouterr()
        return Result(code, out, err.decode(errors="replace"))

    return call


@pytest.fixture
def ok(cli: Callable[..., Result]) -> Callable[..., Result]:
    """Like ``cli`` but the command must succeed."""

    def call(*args: str | os.PathLike[str], input: bytes | None = None) -> Result:
        result = cli(*args, input=input)
        assert result.code == 0, f"desync {' '.join(map(str, args))}: {result.err}"
        return result

    return call
