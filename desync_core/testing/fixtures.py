"""pytest fixtures shared by the core's tests and the plugins' tests.

Import the ones a test directory needs into its ``conftest.py``::

    from desync_core.testing.fixtures import casync, cli, cmd_testdata, ok, testdata

* ``testdata`` / ``cmd_testdata``: desync's golden vectors (``shared/testdata/desync``
  next to the repository, or ``$DESYNC_TESTDATA``); never copied into the repository.
* ``casync``: Debian's casync binary (the reference implementation).
* ``cli`` / ``ok``: run a ``desync`` command in-process (same parsing, errors and exit
  codes as the program, without interpreter start-up); ``ok`` requires success.
* ``desync``: run the real program in a subprocess (:func:`run_desync`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def find_testdata() -> Path:
    """``shared/testdata/desync``: ``$DESYNC_TESTDATA/desync``, else the first
    ``shared/testdata/desync`` found beside the working directory or its ancestors."""
    env = os.environ.get("DESYNC_TESTDATA")
    if env:
        return Path(env) / "desync"
    here = Path.cwd().resolve()
    for base in (here, *here.parents):
        candidate = base / "shared" / "testdata" / "desync"
        if candidate.is_dir():
            return candidate
    return here.parent / "shared" / "testdata" / "desync"


@dataclass
class CliResult:
    """What one in-process CLI run produced."""

    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        """stdout as text."""
        return self.out.decode()

    @property
    def stats(self) -> Any:
        """stdout parsed as JSON (``--print-stats``, ``info``…)."""
        return json.loads(self.out)


def assert_one_line_error(result: CliResult, code: int, *fragments: str) -> str:
    """The run failed with ``code`` and printed exactly one ``Error:`` line (no
    traceback) containing every fragment; returns that line."""
    assert "Traceback" not in result.err, result.err
    assert result.code == code, result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("Error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], result.err
    return lines[0]


def run_desync(*args: str | os.PathLike[str], input: bytes | None = None,
               check: bool = True, cwd: str | os.PathLike[str] | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the installed program (``python -m desync_core ARGS``) as a subprocess."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "desync_core", *map(str, args)], input=input,
        capture_output=True, cwd=cwd, env=full_env, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"desync {' '.join(map(str, args))} failed ({proc.returncode}):\n"
            f"{proc.stderr.decode(errors='replace')}"
        )
    return proc


@pytest.fixture(scope="session")
def testdata() -> Path:
    """``shared/testdata/desync``: desync's test vectors."""
    path = find_testdata()
    if not path.is_dir():
        pytest.fail(f"golden test data not found at {path} (set DESYNC_TESTDATA)")
    return path


@pytest.fixture(scope="session")
def cmd_testdata(testdata: Path) -> Path:
    """``shared/testdata/desync/cmd/desync/testdata``."""
    return testdata / "cmd" / "desync" / "testdata"


@pytest.fixture(scope="session")
def casync() -> str:
    """Path of Debian's casync binary (installed by the test setup)."""
    path = shutil.which("casync")
    if path is None:
        pytest.fail("casync is not installed; run the README's test command (.ci/run)")
    return path


@pytest.fixture
def desync() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run the real program: ``desync("make", ...)`` returns the CompletedProcess."""
    return run_desync


@pytest.fixture
def cli(capsysbinary: pytest.CaptureFixture[bytes],
        monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """``cli("make", ..., input=b"...")`` runs a command in-process: a CliResult."""
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
    """Like ``cli``, but the command must succeed."""

    def call(*args: str | os.PathLike[str], input: bytes | None = None) -> CliResult:
        result = cli(*args, input=input)
        assert result.code == 0, f"desync {' '.join(map(str, args))}: {result.err}"
        return result

    return call


__all__ = [
    "CliResult",
    "assert_one_line_error",
    "casync",
    "cli",
    "cmd_testdata",
    "desync",
    "find_testdata",
    "ok",
    "run_desync",
    "testdata",
]
