"""Registration, the cheap entry point, locations, refusals, and the store contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from desync_core.plugin_api import (
    ChunkMissingError,
    ConfigError,
    Context,
    StoreOptions,
    UsageError,
    VerifyingStore,
    chunk_key,
    compress,
    get_registries,
    parse_location,
)
from desync_core.testing import (
    ChunkStoreContract,
    LocalDirectoryRaw,
    open_chunk_store,
    sample_chunk,
)
from desync_core.testing.fixtures import assert_one_line_error
from desync_store_ssh.client import SSHChunkStore, shell_quote

HEAVY = ("desync_store_ssh.client", "desync_store_ssh.server", "desync_store_ssh.protocol",
         "subprocess", "tempfile")


def test_entry_point_import_is_light() -> None:
    code = ("import json, sys, desync_store_ssh.plugin; "
            f"print(json.dumps([m for m in {HEAVY[:3]!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert json.loads(out.stdout) == []


def test_registrations() -> None:
    regs = get_registries()
    assert regs.chunk_stores.get("ssh").plugin == "store_ssh"
    assert regs.commands.commands["pull"].plugin == "store_ssh"
    assert regs.index_stores.refusals()["ssh"] == \
        "Index storage is not supported by ssh remote stores"
    store = Context().open_chunk_store("ssh://desync@example.invalid:2222/srv/store")
    assert type(store).__name__ == "SSHChunkStore"


def test_index_locations_refused_with_desyncs_words(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("extract", "-s", tmp_path, "ssh://host/srv/index.caibx", tmp_path / "out")
    assert_one_line_error(result, 2, "Index storage is not supported by ssh remote stores")


def test_not_writable(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "in").write_bytes(b"x" * 1000)
    result = cli("make", "-s", "ssh://host/srv/store", tmp_path / "i.caibx", tmp_path / "in")
    assert_one_line_error(result, 4, "store 'ssh://host/srv/store' does not support writing")


@pytest.mark.parametrize("options", [
    StoreOptions(encryption=True, encryption_key="00" * 32),
    StoreOptions(encryption_key="00" * 32),
    StoreOptions(encryption_algorithm="aes-256-gcm"),
])
def test_encryption_refused_with_desyncs_words(options: StoreOptions) -> None:
    """desync: 'encryption is not supported by casync protocol (ssh://) stores'."""
    with pytest.raises(ConfigError, match=r"encryption is not supported by casync protocol "
                                          r"\(ssh://\) stores"):
        SSHChunkStore(parse_location("ssh://host/srv/store"), options)


def test_encryption_in_the_config_is_one_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Through the CLI (the core validates the options before the store sees them)."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {"ssh://host/srv/store": {
        "encryption": True, "encryption-key": "00" * 32}}}))
    (tmp_path / "in").write_bytes(b"x" * 1000)
    assert cli("make", tmp_path / "i.caibx", tmp_path / "in").code == 0
    result = cli("extract", "--config", config, "-s", "ssh://host/srv/store",
                 tmp_path / "i.caibx", tmp_path / "out")
    assert_one_line_error(result, 2, "encryption is not supported by casync protocol "
                          "(ssh://) stores")


@pytest.mark.parametrize(("location", "command"), [
    ("ssh://host/srv/store", ["--", "host", "casync pull - - - '/srv/store'"]),
    ("ssh://me@Alias:2222/srv/st%20ore",
     ["-p", "2222", "--", "me@Alias", "casync pull - - - '/srv/st ore'"]),
    ("ssh://host/it's", ["--", "host", "casync pull - - - '/it'\\''s'"]),
    ("ssh://[::1]:22/s", ["-p", "22", "--", "::1", "casync pull - - - '/s'"]),
])
def test_command_line(location: str, command: list[str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CASYNC_SSH_PATH", raising=False)
    monkeypatch.delenv("CASYNC_REMOTE_PATH", raising=False)
    store = SSHChunkStore(parse_location(location))
    assert store.command() == ["ssh", *command]
    monkeypatch.setenv("CASYNC_SSH_PATH", "/opt/ssh")
    monkeypatch.setenv("CASYNC_REMOTE_PATH", "/usr/local/bin/desync")
    assert store.command()[0] == "/opt/ssh"
    assert store.command()[-1].startswith("/usr/local/bin/desync pull - - - '")
    assert not store.peer_is_casync()


@pytest.mark.parametrize(("location", "fragment"), [
    ("ssh://-oProxyCommand=x/srv", "must not begin with '-'"),
    ("ssh://host", "no store path"),
    ("ssh:///srv/store", "no host"),
])
def test_bad_locations(location: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        SSHChunkStore(parse_location(location))


def test_shell_quote() -> None:
    assert shell_quote("a b") == "'a b'"
    assert shell_quote("'; rm -rf /; '") == "''\\''; rm -rf /; '\\'''"


class TestSSHContractOverDesyncPull(LocalDirectoryRaw, ChunkStoreContract):
    """The read contract, through a real sshd and a remote ``desync pull``."""

    @pytest.fixture
    def store(self, ssh_env, host, tmp_path):  # type: ignore[no-untyped-def]
        (tmp_path / "store").mkdir()
        s = open_chunk_store(f"ssh://{host}{tmp_path / 'store'}")
        yield s
        s.close()

    def raw_base(self, store):  # type: ignore[no-untyped-def]
        return store.path


@pytest.mark.casync
class TestSSHContractOverCasync(TestSSHContractOverDesyncPull):
    """The same against casync's server. casync's server checks chunks itself: on a
    corrupt one it quits ("Failed to query store"), which is one error naming the store
    (not retried) instead of an integrity error."""

    def test_corrupt_chunk_detected_by_verifying_store(self, store) -> None:  # type: ignore[no-untyped-def]
        from desync_core.plugin_api import SHA512_256, StoreConnectionError, StoreError

        chunk_id, _ = sample_chunk(4)
        _, other = sample_chunk(5)
        self.put_raw(store, chunk_key(chunk_id, ".cacnk"), compress(other))
        with pytest.raises(StoreError, match="Failed to query store") as info:
            VerifyingStore(store, SHA512_256).get_chunk(chunk_id)
        assert not isinstance(info.value, StoreConnectionError)

    def test_garbage_chunk_detected(self, store) -> None:  # type: ignore[no-untyped-def]
        from desync_core.plugin_api import SHA512_256, StoreError

        chunk_id, _ = sample_chunk(6)
        self.put_raw(store, chunk_key(chunk_id, ".cacnk"), b"\x28\xb5\x2f\xfdgarbage")
        with pytest.raises(StoreError, match="Failed to query store"):
            VerifyingStore(store, SHA512_256).get_chunk(chunk_id)

    @pytest.fixture
    def store(self, ssh_env, host, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
        monkeypatch.setenv("CASYNC_REMOTE_PATH", "casync")
        (tmp_path / "store").mkdir()
        s = open_chunk_store(f"ssh://{host}{tmp_path / 'store'}")
        yield s
        s.close()


@pytest.mark.casync
def test_casync_is_never_asked_twice_on_one_session(ssh_env, host, tmp_path,  # type: ignore[no-untyped-def]
                                                     monkeypatch) -> None:
    """casync's server ignores a second request for an id on one session: with one
    session allowed, asking again retires it and starts a fresh one (no timeout)."""
    monkeypatch.setenv("CASYNC_REMOTE_PATH", "casync")
    from desync_core.plugin_api import SHA512_256, chunk_key, compress

    data = b"asked twice " * 500
    cid = SHA512_256.sum(data)
    path = tmp_path / "store" / chunk_key(cid, ".cacnk")
    path.parent.mkdir(parents=True)
    path.write_bytes(compress(data))
    absent = SHA512_256.sum(b"absent")
    store = SSHChunkStore(parse_location(f"ssh://{host}{tmp_path / 'store'}"),
                          StoreOptions(n=1, timeout=20))
    try:
        for _ in range(3):
            assert bytes(store.get_chunk(cid).data()) == data
            with pytest.raises(ChunkMissingError):
                store.get_chunk(absent)
        got = list(store.get_chunks([cid, absent, cid]))
        assert [c for c, _ in got] == [cid, absent, cid]
        assert got[1][1] is None
        assert bytes(got[2][1].data()) == data  # type: ignore[union-attr]
    finally:
        store.close()
