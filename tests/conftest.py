"""Shared fixtures for the core's tests (defined in :mod:`desync_core.testing.fixtures`,
which plugins use too). Golden vectors are read from ``../shared/testdata``, never
copied into the repository."""

from __future__ import annotations

import os
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


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory that is also the working directory."""
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
