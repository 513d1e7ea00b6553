"""Fixtures of desync-store-gcs's tests: one storage emulator per session, a fresh bucket
per test, and the core's CLI fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gcs_support import Bucket, Emulator, new_bucket_name

from desync_core.testing.fixtures import cli, cmd_testdata, ok, testdata  # noqa: F401


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """gcp-storage-emulator on 127.0.0.1 (in memory), stopped by PID at the end."""
    server = Emulator.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_client(emulator: Emulator) -> object:
    """A google-cloud-storage client of the emulator, for arranging and checking."""
    return emulator.client()


@pytest.fixture(autouse=True)
def _emulator_environment(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every process it starts) talks to the emulator, never to Google."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("API_ENDPOINT_OVERRIDE", raising=False)


@pytest.fixture
def bucket(gcs_client: object) -> Bucket:
    """A new, empty bucket (the emulator's memory is thrown away at the end)."""
    name = new_bucket_name()
    handle = gcs_client.create_bucket(name)  # type: ignore[attr-defined]
    return Bucket(name, handle)
