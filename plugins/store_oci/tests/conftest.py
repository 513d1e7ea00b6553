"""Fixtures for desync-store-oci's tests: real registries on 127.0.0.1 (helpers live in
``oci_support``), started once per session and stopped by PID."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest
from oci_support import REGISTRY, RegistryServer, TokenServer

from desync_core.testing.fixtures import cli, ok  # noqa: F401 - fixtures used by the tests

USERS = {"alice": "s3cret-alice"}
#: An OAuth2 identity token the token server exchanges for alice's tokens.
REFRESH_TOKEN = "identity-token-for-alice"

_repositories = itertools.count()


def _require_registry() -> None:
    if not os.access(REGISTRY, os.X_OK):
        pytest.fail(f"{REGISTRY} not found: install Debian's docker-registry "
                    "(plugins/store_oci/system-packages.txt)")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """An anonymous registry."""
    _require_registry()
    server = RegistryServer(tmp_path_factory.mktemp("registry-anon"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry behind htpasswd Basic auth (user alice)."""
    _require_registry()
    server = RegistryServer(tmp_path_factory.mktemp("registry-basic"), basic_users=USERS)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_server() -> Iterator[TokenServer]:
    """The token server of :func:`token_registry`."""
    server = TokenServer(USERS, {REFRESH_TOKEN: "alice"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory,
                   token_server: TokenServer) -> Iterator[RegistryServer]:
    """A registry behind token auth (Bearer tokens from :func:`token_server`)."""
    _require_registry()
    server = RegistryServer(tmp_path_factory.mktemp("registry-token"), token=token_server)
    yield server
    server.stop()


@pytest.fixture
def repository() -> Callable[[], str]:
    """Fresh repository names (``test/r<N>-<pid>``): tests never share one."""
    return lambda: f"test/r{next(_repositories)}-{os.getpid()}"


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
                   ) -> pytest.MonkeyPatch:
    """No credentials anywhere: no DESYNC_OCI_*, an empty Docker config dir, a HOME
    without a desync config file."""
    monkeypatch.delenv("DESYNC_OCI_USERNAME", raising=False)
    monkeypatch.delenv("DESYNC_OCI_PASSWORD", raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    return monkeypatch
