"""Fixtures of desync-format-tar's tests (helpers live in ``format_tar_util``).

The CLI runs in-process (``desync_core.cli.run``) with the plugin loaded from its
installed entry point, exactly as ``desync`` would; golden vectors come from
``../shared/testdata`` (``DESYNC_TESTDATA`` overrides), as in the core's tests.
"""

from __future__ import annotations

import shutil

import pytest

from desync_core.testing.fixtures import cli, cmd_testdata, ok, testdata  # noqa: F401


@pytest.fixture(scope="session")
def gnu_tar() -> str:
    """GNU tar (part of every Debian system)."""
    path = shutil.which("tar")
    if path is None:
        pytest.fail("GNU tar is not installed")
    return path
