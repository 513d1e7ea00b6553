"""Fixtures for desync-store-http's tests (helpers live in ``store_http_support``).

Golden vectors come from ``../shared/testdata`` (``DESYNC_TESTDATA`` overrides), reached
from the repository's location as the core's tests do.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from store_http_support import CMD_TESTDATA, ServerProcess

from desync_core.testing.fixtures import run_desync


@pytest.fixture(scope="session")
def cmd_testdata() -> Path:
    """``shared/testdata/desync/cmd/desync/testdata`` (blobs, stores, certificates)."""
    if not CMD_TESTDATA.is_dir():
        pytest.fail(f"golden test data not found at {CMD_TESTDATA} (set DESYNC_TESTDATA)")
    return CMD_TESTDATA


@pytest.fixture(scope="session")
def certs(cmd_testdata: Path) -> dict[str, str]:
    """The test CA, server and client certificates and keys (by file name)."""
    names = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    return {name: str(cmd_testdata / name) for name in names}


@pytest.fixture
def desync() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run the CLI: ``desync("extract", …)`` returns the CompletedProcess."""
    return run_desync


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start CLI servers: ``start_server("chunk-server", "-s", store)``; all are stopped
    at the end of the test."""
    servers: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(list(args), env)
        servers.append(server)
        return server

    yield start
    for server in servers:  # signal all first: they shut down in parallel
        if server.proc.poll() is None:
            server.send_signal(signal.SIGTERM)
    for server in servers:
        server.stop()
