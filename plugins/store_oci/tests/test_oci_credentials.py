"""Credentials on real registries behind htpasswd Basic auth and token auth: every
source (environment, oci-credentials, Docker's auths, credential helpers, identity
tokens), wrong and absent credentials (one line naming the store, no secret printed)."""

from __future__ import annotations

import base64
import json
import random
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import REFRESH_TOKEN, USERS
from oci_support import RegistryServer, TokenServer

from desync_core.testing.fixtures import CliResult, assert_one_line_error

Cli = Callable[..., CliResult]
PASSWORD = USERS["alice"]
WRONG = "not-the-password-0451"


def _round_trip(tmp_path: Path, ok: Cli, loc: str, *flags: str) -> None:
    """make -s into ``loc`` and extract back, byte-identical."""
    data = random.Random(7).randbytes(400_000)
    (tmp_path / "in.bin").write_bytes(data)
    ok(*flags, "make", "-s", loc, tmp_path / "x.caibx", tmp_path / "in.bin")
    ok(*flags, "extract", "-s", loc, tmp_path / "x.caibx", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data


def _extract_fails(tmp_path: Path, ok: Cli, cli: Cli, loc: str, *flags: str) -> str:
    """An extract from ``loc`` that must fail with a one-line store error naming the
    store and never showing a secret; returns the line."""
    (tmp_path / "in.bin").write_bytes(random.Random(8).randbytes(50_000))
    ok("make", tmp_path / "x.caibx", tmp_path / "in.bin")
    result = cli(*flags, "extract", "-s", loc, tmp_path / "x.caibx", tmp_path / "out.bin")
    line = assert_one_line_error(result, 4, loc)
    assert PASSWORD not in result.err
    assert WRONG not in result.err
    assert REFRESH_TOKEN not in result.err
    assert not (tmp_path / "out.bin").exists()
    return line


def _docker_config(no_credentials: pytest.MonkeyPatch, doc: dict[str, object]) -> Path:
    import os

    directory = Path(os.environ["DOCKER_CONFIG"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))
    return directory


def _helper(tmp_path: Path, no_credentials: pytest.MonkeyPatch, name: str,
            username: str, secret: str) -> Path:
    """A real ``docker-credential-<name>`` program on PATH answering ``get``; it logs
    the server it was asked about."""
    import os

    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    program = bindir / f"docker-credential-{name}"
    answer = json.dumps({"ServerURL": "x", "Username": username, "Secret": secret})
    program.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 1\n'
        f'read server; echo "$server" >> {tmp_path}/helper.log\n'
        f"echo '{answer}'\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    no_credentials.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return tmp_path / "helper.log"


# -- Basic auth (htpasswd) ----------------------------------------------------------------


def test_basic_auth_with_environment_credentials(
        tmp_path: Path, basic_registry: RegistryServer, repository: Callable[[], str],
        ok: Cli, no_credentials: pytest.MonkeyPatch) -> None:
    no_credentials.setenv("DESYNC_OCI_USERNAME", "alice")
    no_credentials.setenv("DESYNC_OCI_PASSWORD", PASSWORD)
    _round_trip(tmp_path, ok, basic_registry.location(repository()))


def test_basic_auth_wrong_password(tmp_path: Path, basic_registry: RegistryServer,
                                   repository: Callable[[], str], ok: Cli, cli: Cli,
                                   no_credentials: pytest.MonkeyPatch) -> None:
    no_credentials.setenv("DESYNC_OCI_USERNAME", "alice")
    no_credentials.setenv("DESYNC_OCI_PASSWORD", WRONG)
    line = _extract_fails(tmp_path, ok, cli, basic_registry.location(repository()))
    assert "authentication failed as 'alice' (DESYNC_OCI_USERNAME)" in line


def test_basic_auth_without_credentials(tmp_path: Path, basic_registry: RegistryServer,
                                        repository: Callable[[], str], ok: Cli, cli: Cli,
                                        no_credentials: pytest.MonkeyPatch) -> None:
    line = _extract_fails(tmp_path, ok, cli, basic_registry.location(repository()))
    assert "the registry requires credentials" in line


# -- token auth ---------------------------------------------------------------------------


def test_token_auth_with_config_file_glob(tmp_path: Path, token_registry: RegistryServer,
                                          repository: Callable[[], str], ok: Cli,
                                          no_credentials: pytest.MonkeyPatch) -> None:
    """oci-credentials keyed by a glob, from the file named by --config."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"oci-credentials": {
        f"oci+http://127.0.0.1:{token_registry.port}/test/*":
            {"username": "alice", "secret": PASSWORD}}}))
    _round_trip(tmp_path, ok, token_registry.location(repository()), "--config", str(config))


def test_token_auth_with_default_config_file(tmp_path: Path, token_registry: RegistryServer,
                                             repository: Callable[[], str], ok: Cli,
                                             no_credentials: pytest.MonkeyPatch) -> None:
    """$HOME/.config/desync/config.json is read when --config is not given."""
    import os

    config = Path(os.environ["HOME"]) / ".config" / "desync" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"oci-credentials": {
        f"oci+http://127.0.0.1:{token_registry.port}/*/*":
            {"username": "alice", "secret": PASSWORD}}}))
    _round_trip(tmp_path, ok, token_registry.location(repository()))


def test_token_auth_wrong_secret_in_config(tmp_path: Path, token_registry: RegistryServer,
                                           repository: Callable[[], str], ok: Cli, cli: Cli,
                                           no_credentials: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"oci-credentials": {
        f"oci+http://127.0.0.1:{token_registry.port}/test/*":
            {"username": "alice", "secret": WRONG}}}))
    line = _extract_fails(tmp_path, ok, cli, token_registry.location(repository()),
                          "--config", str(config))
    assert "authentication failed as 'alice' (oci-credentials)" in line
    assert "token server" in line


def test_token_auth_anonymous_is_refused(tmp_path: Path, token_registry: RegistryServer,
                                         repository: Callable[[], str], ok: Cli, cli: Cli,
                                         no_credentials: pytest.MonkeyPatch) -> None:
    """Anonymous tokens carry no access: the registry refuses them."""
    line = _extract_fails(tmp_path, ok, cli, token_registry.location(repository()))
    assert "the registry requires credentials" in line


def test_environment_beats_config(tmp_path: Path, token_registry: RegistryServer,
                                  repository: Callable[[], str], ok: Cli, cli: Cli,
                                  no_credentials: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"oci-credentials": {
        f"oci+http://127.0.0.1:{token_registry.port}/test/*":
            {"username": "alice", "secret": PASSWORD}}}))
    no_credentials.setenv("DESYNC_OCI_USERNAME", "alice")
    no_credentials.setenv("DESYNC_OCI_PASSWORD", WRONG)
    _extract_fails(tmp_path, ok, cli, token_registry.location(repository()),
                   "--config", str(config))


def test_docker_config_auths(tmp_path: Path, token_registry: RegistryServer,
                             repository: Callable[[], str], ok: Cli,
                             no_credentials: pytest.MonkeyPatch) -> None:
    """What ``docker login`` writes: base64 user:password under the host."""
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    _docker_config(no_credentials, {"auths": {f"127.0.0.1:{token_registry.port}":
                                              {"auth": auth}}})
    _round_trip(tmp_path, ok, token_registry.location(repository()))


def test_docker_credential_helper(tmp_path: Path, token_registry: RegistryServer,
                                  repository: Callable[[], str], ok: Cli,
                                  no_credentials: pytest.MonkeyPatch) -> None:
    """credHelpers names a helper for the host; it is asked with the host on stdin."""
    host = f"127.0.0.1:{token_registry.port}"
    log = _helper(tmp_path, no_credentials, "testhelper", "alice", PASSWORD)
    _docker_config(no_credentials, {"auths": {host: {"auth": "d3Jvbmc6d3Jvbmc="}},
                                    "credHelpers": {host: "testhelper"}})
    _round_trip(tmp_path, ok, token_registry.location(repository()))
    assert log.read_text().split()
    assert set(log.read_text().split()) == {host}


def test_docker_credentials_store_identity_token(
        tmp_path: Path, token_registry: RegistryServer, token_server: TokenServer,
        repository: Callable[[], str], ok: Cli, no_credentials: pytest.MonkeyPatch) -> None:
    """credsStore for every host; a ``<token>`` username is an identity token,
    exchanged with an OAuth2 refresh_token grant."""
    _helper(tmp_path, no_credentials, "teststore", "<token>", REFRESH_TOKEN)
    _docker_config(no_credentials, {"credsStore": "teststore"})
    _round_trip(tmp_path, ok, token_registry.location(repository()))


def test_missing_credential_helper(tmp_path: Path, token_registry: RegistryServer,
                                   repository: Callable[[], str], ok: Cli, cli: Cli,
                                   no_credentials: pytest.MonkeyPatch) -> None:
    _docker_config(no_credentials, {"credsStore": "nosuchhelper"})
    line = _extract_fails(tmp_path, ok, cli, token_registry.location(repository()))
    assert "docker-credential-nosuchhelper not found" in line


# -- configuration errors -----------------------------------------------------------------


def test_password_without_username(tmp_path: Path, registry: RegistryServer, ok: Cli,
                                   cli: Cli, no_credentials: pytest.MonkeyPatch) -> None:
    no_credentials.setenv("DESYNC_OCI_PASSWORD", PASSWORD)
    (tmp_path / "in.bin").write_bytes(b"x" * 1000)
    ok("make", tmp_path / "x.caibx", tmp_path / "in.bin")
    result = cli("extract", "-s", registry.location("test/p"), tmp_path / "x.caibx",
                 tmp_path / "out")
    assert_one_line_error(result, 2, "DESYNC_OCI_PASSWORD is set without DESYNC_OCI_USERNAME")
    assert PASSWORD not in result.err


def test_malformed_docker_config(tmp_path: Path, registry: RegistryServer, ok: Cli,
                                 cli: Cli, no_credentials: pytest.MonkeyPatch) -> None:
    directory = _docker_config(no_credentials, {})
    (directory / "config.json").write_text("{not json")
    (tmp_path / "in.bin").write_bytes(b"x" * 1000)
    ok("make", tmp_path / "x.caibx", tmp_path / "in.bin")
    result = cli("extract", "-s", registry.location("test/p"), tmp_path / "x.caibx",
                 tmp_path / "out")
    assert_one_line_error(result, 2, "failed to load docker credential config")


def test_several_matching_config_keys(tmp_path: Path, registry: RegistryServer, ok: Cli,
                                      cli: Cli, no_credentials: pytest.MonkeyPatch) -> None:
    loc = registry.location("test/p")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"oci-credentials": {
        loc: {"username": "a", "secret": "b"}, f"{loc}/": {"username": "a", "secret": "b"}}}))
    (tmp_path / "in.bin").write_bytes(b"x" * 1000)
    ok("make", tmp_path / "x.caibx", tmp_path / "in.bin")
    result = cli("--config", config, "extract", "-s", loc, tmp_path / "x.caibx",
                 tmp_path / "out")
    assert_one_line_error(result, 2, "multiple oci-credentials entries match")


def test_invalid_config_entry(tmp_path: Path, registry: RegistryServer, ok: Cli, cli: Cli,
                              no_credentials: pytest.MonkeyPatch) -> None:
    loc = registry.location("test/p")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"oci-credentials": {loc: {"username": 5}}}))
    (tmp_path / "in.bin").write_bytes(b"x" * 1000)
    ok("make", tmp_path / "x.caibx", tmp_path / "in.bin")
    result = cli("--config", config, "extract", "-s", loc, tmp_path / "x.caibx",
                 tmp_path / "out")
    assert_one_line_error(result, 2, "'username' must be a string")


def test_config_command_shows_the_section(tmp_path: Path, ok: Cli) -> None:
    config = tmp_path / "config.json"
    entry = {"oci+https://ghcr.io/me/*": {"username": "u", "secret": "s"}}
    config.write_text(json.dumps({"oci-credentials": entry}))
    shown = json.loads(ok("--config", config, "config").text)
    assert shown["oci-credentials"] == entry
