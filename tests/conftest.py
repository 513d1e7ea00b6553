"""Shared fixtures for the core's tests.

Golden vectors are read from ``../shared/testdata`` (never copied into the repo).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTDATA = Path(os.environ.get("DESYNC_TESTDATA", REPO.parent / "shared" / "testdata")) / "desync"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """``shared/testdata/desync``: desync's test vectors."""
    if not TESTDATA.is_dir():
        pytest.fail(f"golden test data not found at {TESTDATA} (set DESYNC_TESTDATA)")
    return TESTDATA


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


def run_desync(*args: str, input: bytes | None = None, check: bool = True,
               cwd: str | os.PathLike[str] | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the installed ``desync`` CLI (``python -m desync_core``) as a subprocess."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "desync_core", *args], input=input, capture_output=True,
        cwd=cwd, env=full_env, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"desync {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stderr.decode(errors='replace')}"
        )
    return proc


@pytest.fixture
def desync():  # type: ignore[no-untyped-def]
    """Run the CLI: ``desync("make", ...)`` returns the CompletedProcess."""
    return run_desync


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory that is also the working directory."""
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
