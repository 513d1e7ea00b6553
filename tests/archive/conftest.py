"""Fixtures of the archive tests (tar, untar, mtree, catar, safe extraction).

The CLI runs in-process (``desync_core.cli.run``: same parsing, errors and exit codes
as the program, without interpreter start-up per command); a few tests use real
subprocesses where stdin/stdout or the plugin environment matter.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    """What one in-process CLI run produced."""

    code: int
    out: bytes
    err: str


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
