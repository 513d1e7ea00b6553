"""Shared fixtures for the core's tests (defined in :mod:`desync_core.testing.fixtures`,
which plugins use too). Golden vectors are read from ``../shared/testdata``, never
copied into the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_core.testing.fixtures import (  # noqa: F401 - fixtures used by the tests
    casync,
    cli,
    cmd_testdata,
    desync,
    ok,
    run_desync,
    testdata,
)

REPO = Path(__file__).resolve().parent.parent

WARM_UP = """
from desync_core.chunker import warm_up
from desync_core.batchhash import native_kernel
warm_up()
native_kernel()
"""


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> None:
    """Compile and cache the numba kernels once, before any test runs a command.

    The first use on a machine compiles them (several seconds); without this, whichever
    test comes first pays that inside its own time limits. A subprocess does it, so
    numba is never loaded into the test process.
    """
    subprocess.run([sys.executable, "-c", WARM_UP], check=True, timeout=600)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory that is also the working directory."""
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
