"""Chunk encryption over HTTP (issue 16): encrypted HTTP stores, and ``chunk-server
--encryption*`` serving encrypted or plain upstream stores to encrypted or plain
clients (``remote.md`` §2, ``store.md`` §2.1). Real servers on 127.0.0.1."""

from __future__ import annotations

import http.client
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from store_http_support import ServerProcess, blob_chunk_ids, chunk_server_in_process

from desync_core.plugin_api import (
    SHA512_256,
    ChunkCodec,
    ChunkStore,
    Context,
    StoreOptions,
    compress,
    decompress,
    load_config,
)
from desync_core.testing import (
    ENCRYPTION_EXTENSIONS,
    ENCRYPTION_OPTION_SETS,
    OTHER_ENCRYPTION_KEY,
    TEST_ENCRYPTION_KEY,
    TEST_KEY_ID,
    LocalDirectoryRaw,
    WritableChunkStoreContract,
    open_chunk_store,
    write_store_options,
)
from desync_store_http.client import HTTPChunkStore

StartServer = Callable[..., ServerProcess]
AES_EXT = f".cacnk.aes-256-gcm-{TEST_KEY_ID}"
XCHACHA_EXT = f".cacnk.xchacha20-poly1305-{TEST_KEY_ID}"


def codec_of(entry: dict[str, object]) -> ChunkCodec:
    """The codec of a ``store-options`` entry."""
    return ChunkCodec.for_options(StoreOptions.from_json(entry, "test"))


def get(url: str, path: str) -> tuple[int, bytes]:
    """One plain GET (no client library in between)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class TestEncryptedHTTPChunkStore(LocalDirectoryRaw, WritableChunkStoreContract):
    """The contract through ``chunk-server -w`` whose wire format and upstream store are
    encrypted alike (so stored bytes pass through unchanged), for every option set."""

    @pytest.fixture(params=sorted(ENCRYPTION_OPTION_SETS))
    def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChunkStore]:
        entry = ENCRYPTION_OPTION_SETS[request.param]
        self.base = tmp_path / "enc"
        self.base.mkdir()
        config = write_store_options(tmp_path / "config.json", {
            str(self.base): entry, "http://127.0.0.1:*": entry})
        ctx = Context(config=load_config(str(config)))
        with chunk_server_in_process(ctx, stores=[str(self.base)], writable=True,
                                     codec=codec_of(entry)) as (url, _):
            store = open_chunk_store(url, ctx)
            assert isinstance(store, HTTPChunkStore)
            assert store.codec.extension == ENCRYPTION_EXTENSIONS[request.param]
            yield store
            store.close()

    def raw_base(self, store: ChunkStore) -> str:
        return str(self.base)

    def test_reopen_from_str(self, store: ChunkStore) -> None:
        # Reopening by name alone would lose the config file; check the codec instead.
        assert store.codec.encrypted


@pytest.fixture
def encrypted_store(cmd_testdata: Path, tmp_path: Path) -> tuple[Path, Path]:
    """blob1's chunks re-stored encrypted (xchacha20-poly1305, desync's test key), and
    the config that says so."""
    src = cmd_testdata / "blob1.store"
    store = tmp_path / "enc.store"
    entry = ENCRYPTION_OPTION_SETS["xchacha20-poly1305"]
    codec = codec_of(entry)
    for path in src.rglob("*.cacnk"):
        chunk_id = bytes.fromhex(path.name.removesuffix(".cacnk"))
        target = store / path.parent.name / (path.name.removesuffix(".cacnk") + XCHACHA_EXT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(codec.seal(path.read_bytes()))
        assert codec.decode(target.read_bytes(), chunk_id)  # sanity
    config = write_store_options(tmp_path / "server.json", {str(store): entry})
    return store, config


def test_encrypted_store_served_to_a_plain_client(
        start_server: StartServer, cmd_testdata: Path, tmp_path: Path,
        encrypted_store: tuple[Path, Path], desync: Callable[..., object]) -> None:
    """A plain chunk-server decrypts an encrypted upstream: a plain client extracts, and
    the wire bytes are casync's zstd bytes (only the encryption layer was removed)."""
    store, config = encrypted_store
    server = start_server("--config", str(config), "chunk-server", "-s", str(store))
    out = tmp_path / "blob1"
    desync("extract", "-s", server.url + "/", str(cmd_testdata / "blob1.caibx"), str(out))
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()
    chunk_id = blob_chunk_ids(cmd_testdata / "blob1.caibx")[0]
    h = chunk_id.hex()
    status, body = get(server.url, f"/{h[:4]}/{h}.cacnk")
    assert status == 200
    assert body == (cmd_testdata / "blob1.store" / h[:4] / f"{h}.cacnk").read_bytes()
    status, body = get(server.url, f"/{h[:4]}/{h}{XCHACHA_EXT}")
    assert status == 400
    assert b"invalid chunk extension, verify compression and encryption settings" in body


def test_encrypted_store_served_to_an_encrypted_client(
        start_server: StartServer, cmd_testdata: Path, tmp_path: Path,
        encrypted_store: tuple[Path, Path], desync: Callable[..., object]) -> None:
    """``--encryption-key K --encryption-algorithm aes-256-gcm`` re-encrypts an
    xchacha20-poly1305 upstream for aes-256-gcm clients; the wire bytes decrypt to
    casync's zstd bytes; clients with another key or none get an error, never data."""
    store, config = encrypted_store
    server = start_server("--config", str(config), "chunk-server", "-s", str(store),
                          "--encryption-key", TEST_ENCRYPTION_KEY,
                          "--encryption-algorithm", "aes-256-gcm")
    client_entry = ENCRYPTION_OPTION_SETS["aes-256-gcm"]
    client_cfg = write_store_options(tmp_path / "client.json",
                                     {"http://127.0.0.1:*": client_entry})
    index = str(cmd_testdata / "blob1.caibx")
    out = tmp_path / "blob1"
    desync("--config", str(client_cfg), "extract", "-s", server.url, index, str(out))
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()

    chunk_id = blob_chunk_ids(cmd_testdata / "blob1.caibx")[0]
    h = chunk_id.hex()
    status, body = get(server.url, f"/{h[:4]}/{h}{AES_EXT}")
    assert status == 200
    plain_layer = (cmd_testdata / "blob1.store" / h[:4] / f"{h}.cacnk").read_bytes()
    assert codec_of(client_entry).unseal(body, chunk_id) == plain_layer
    assert len(body) == 12 + len(plain_layer) + 16

    # A plain client asks for .cacnk, which this server does not serve.
    proc = desync("extract", "-s", server.url, index, str(tmp_path / "o1"), check=False)
    assert proc.returncode == 4  # type: ignore[attr-defined]
    err = proc.stderr.decode()  # type: ignore[attr-defined]
    assert err.startswith("Error: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert "verify compression and encryption settings" in err
    # A client with another key asks for another extension.
    other_cfg = write_store_options(tmp_path / "other.json", {"http://127.0.0.1:*": {
        "encryption": True, "encryption-key": OTHER_ENCRYPTION_KEY,
        "encryption-algorithm": "aes-256-gcm"}})
    proc = desync("--config", str(other_cfg), "extract", "-s", server.url, index,
                  str(tmp_path / "o2"), check=False)
    assert proc.returncode == 4  # type: ignore[attr-defined]
    assert not (tmp_path / "o1").exists()
    assert not (tmp_path / "o2").exists()


def test_plain_store_served_encrypted_with_the_env_key(
        start_server: StartServer, cmd_testdata: Path, tmp_path: Path,
        desync: Callable[..., object]) -> None:
    """``--encryption`` takes the key from $DESYNC_ENCRYPTION_KEY; the variable alone
    leaves the wire format plain."""
    env = {"DESYNC_ENCRYPTION_KEY": TEST_ENCRYPTION_KEY}
    plain_store = str(cmd_testdata / "blob1.store")
    encrypted = start_server("chunk-server", "-s", plain_store, "--encryption", env=env)
    plain = start_server("chunk-server", "-s", plain_store, env=env)
    index = str(cmd_testdata / "blob1.caibx")
    client_cfg = write_store_options(tmp_path / "client.json", {
        encrypted.url: ENCRYPTION_OPTION_SETS["xchacha20-poly1305"]})
    out = tmp_path / "enc"
    desync("--config", str(client_cfg), "extract", "-s", encrypted.url, index, str(out))
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()
    out = tmp_path / "plain"
    desync("extract", "-s", plain.url, index, str(out), env=env)
    assert out.read_bytes() == (cmd_testdata / "blob1").read_bytes()
    h = blob_chunk_ids(cmd_testdata / "blob1.caibx")[0].hex()
    assert get(plain.url, f"/{h[:4]}/{h}.cacnk")[0] == 200
    assert get(encrypted.url, f"/{h[:4]}/{h}{XCHACHA_EXT}")[0] == 200
    assert get(encrypted.url, f"/{h[:4]}/{h}.cacnk")[0] == 400


def test_encrypted_uploads_stored_in_the_upstream_format(
        start_server: StartServer, cmd_testdata: Path, tmp_path: Path,
        desync: Callable[..., object]) -> None:
    """An encrypted client writes through ``chunk-server -w --encryption-key``; the plain
    upstream gets casync's plain files; an upload that does not decrypt is refused."""
    upstream = tmp_path / "plain"
    upstream.mkdir()
    server = start_server("chunk-server", "-w", "-s", str(upstream),
                          "--encryption-key", TEST_ENCRYPTION_KEY)
    client_cfg = write_store_options(tmp_path / "client.json", {
        "http://127.0.0.1:*": ENCRYPTION_OPTION_SETS["xchacha20-poly1305"]})
    desync("--config", str(client_cfg), "chop", "-s", server.url,
           str(cmd_testdata / "blob1.caibx"), str(cmd_testdata / "blob1"))
    ids = blob_chunk_ids(cmd_testdata / "blob1.caibx")
    files = sorted(p for p in upstream.rglob("*") if p.is_file())
    assert sorted(p.name for p in files) == sorted(i.hex() + ".cacnk" for i in ids)
    for path in files:
        chunk_id = bytes.fromhex(path.name.removesuffix(".cacnk"))
        assert SHA512_256.sum(decompress(path.read_bytes(), chunk_id)) == chunk_id
        assert path.read_bytes() == compress(decompress(path.read_bytes(), chunk_id))

    # A plain zstd body under the encrypted name: refused with the ChunkInvalid text.
    chunk_id = ids[0]
    h = chunk_id.hex()
    (upstream / h[:4] / f"{h}.cacnk").unlink()
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        body = (cmd_testdata / "blob1.store" / h[:4] / f"{h}.cacnk").read_bytes()
        conn.request("PUT", f"/{h[:4]}/{h}{XCHACHA_EXT}", body=body)
        resp = conn.getresponse()
        assert resp.status == 400
        assert f"invalid chunk {h}".encode() in resp.read()
    finally:
        conn.close()
    assert not (upstream / h[:4] / f"{h}.cacnk").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--encryption"], "no encryption key configured"),
    (["--encryption-algorithm", "aes-256-gcm"], "no encryption key configured"),
    (["--encryption-key", "xyz"], "invalid encryption key, expected hex-encoded 256-bit key"),
    (["--encryption-key", "abcd"], "encryption key must be 32 bytes, got 2"),
    (["--encryption-key", TEST_ENCRYPTION_KEY, "--encryption-algorithm", "rot13"],
     'unsupported encryption algorithm "rot13"'),
])
def test_chunk_server_encryption_flag_errors(cmd_testdata: Path, tmp_path: Path,
                                             flags: list[str], message: str,
                                             desync: Callable[..., object]) -> None:
    """Invalid encryption flags fail at start-up: one line, exit 2, key never shown."""
    proc = desync("chunk-server", "-s", str(cmd_testdata / "blob1.store"),
                  "-l", "127.0.0.1:0", *flags, check=False, env={"DESYNC_ENCRYPTION_KEY": ""})
    err = proc.stderr.decode()  # type: ignore[attr-defined]
    assert proc.returncode == 2, err  # type: ignore[attr-defined]
    assert err == f"Error: {message}\n"


def test_encrypted_upstream_with_a_wrong_key_is_not_served(
        start_server: StartServer, cmd_testdata: Path, tmp_path: Path,
        encrypted_store: tuple[Path, Path], desync: Callable[..., object]) -> None:
    """An upstream chunk that does not decrypt (a file renamed from another key) is a
    server error, not data; the client reports it and writes no output."""
    store, _ = encrypted_store
    index = cmd_testdata / "blob1.caibx"
    chunk_id = blob_chunk_ids(index)[0]
    h = chunk_id.hex()
    wrong = codec_of({"encryption": True, "encryption-key": OTHER_ENCRYPTION_KEY})
    wrong_ext = wrong.extension
    other = tmp_path / "other.store"
    shutil.copytree(store, other)
    for path in other.rglob("*"):
        if path.is_file():
            path.rename(path.with_name(path.name.replace(XCHACHA_EXT, wrong_ext)))
    cfg = write_store_options(tmp_path / "wrong.json", {str(other): {
        "encryption": True, "encryption-key": OTHER_ENCRYPTION_KEY}})
    server = start_server("--config", str(cfg), "chunk-server", "-s", str(other))
    assert get(server.url, f"/{h[:4]}/{h}.cacnk")[0] == 500
    assert server.wait_for_stderr(f"invalid chunk {h}")
    assert OTHER_ENCRYPTION_KEY not in server.stderr()
    out = tmp_path / "out"
    proc = desync("extract", "-s", server.url, str(index), str(out), check=False)
    assert proc.returncode == 4  # type: ignore[attr-defined]
    assert not out.exists()
