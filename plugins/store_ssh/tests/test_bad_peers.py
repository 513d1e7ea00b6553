"""Our client against remotes that are not casync, or break the protocol (real sshd).

Each failure is one ``Error:`` line naming the store, exit status 4, within the store's
``timeout`` (never a hang). The peers are ``peers.py`` modes run as the remote command.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import blob

import desync_core.testing.fixtures as fx
from desync_core.plugin_api import StoreOptions, StoreTimeoutError, parse_location
from desync_core.testing.fixtures import assert_one_line_error
from desync_store_ssh.client import SSHChunkStore
from desync_store_ssh.protocol import READABLE_STORE, hello

PEERS = Path(__file__).with_name("peers.py")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    """A desync-made store and index of a small blob."""
    d = tmp_path_factory.mktemp("made")
    data = blob(300_000, seed=7)
    (d / "in.bin").write_bytes(data)
    fx.run_desync("make", "-s", d / "store", d / "in.caibx", d / "in.bin")
    return d / "store", d / "in.caibx", data


def extract_with(cli, monkeypatch, tmp_path, host, made, remote: str,  # type: ignore[no-untyped-def]
                 *, timeout_s: float = 30, retries: int = 1):
    """``extract`` from the store with CASYNC_REMOTE_PATH=remote; the CliResult."""
    store, index, _ = made
    location = f"ssh://{host}{store}"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {location: {
        "timeout": int(timeout_s * 1e9), "error-retry": retries,
        "error-retry-base-interval": 10_000_000}}}))
    monkeypatch.setenv("CASYNC_REMOTE_PATH", remote)
    return cli("extract", "--config", config, "-n", "1", "-s", location, index,
               tmp_path / "out"), location


def peer(mode: str) -> str:
    return f"{sys.executable} {PEERS} {mode}"


@pytest.mark.parametrize(("mode", "fragment"), [
    ("text", "is not a casync server: message size"),
    ("no-chunks", "server not offering chunks (HELLO flags 0x4)"),
    ("truncated", "the ssh session ended (exit status 0): the peer closed the connection "
                  "inside a CHUNK message (156 of 1056 bytes)"),
    ("oversized", "message size 33554432 outside 16…16777216"),
    ("abort", "the server aborted the session: the disk is on fire (Input/output error)"),
    ("wrong-id", "answer for chunk " + "00" * 32 + ", which was not requested"),
    ("bad-flags", "CHUNK with unknown flags 0x6"),
    ("quits", "the ssh session ended (exit status 3)"),
])
def test_broken_peer_is_one_line(cli, ssh_env, host, made, tmp_path, monkeypatch,  # type: ignore[no-untyped-def]
                                 mode, fragment) -> None:
    result, location = extract_with(cli, monkeypatch, tmp_path, host, made, peer(mode))
    assert_one_line_error(result, 4, f"store {location}", fragment)
    assert not (tmp_path / "out").exists()


def test_remote_command_not_found(cli, ssh_env, host, made, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The remote shell cannot find the command: its message, in our one line."""
    result, location = extract_with(cli, monkeypatch, tmp_path, host, made,
                                    "/nonexistent/casync")
    line = assert_one_line_error(result, 4, f"store {location}", "is not a casync server",
                                 "exit status 127")
    assert "not found" in line or "No such file" in line


def test_remote_command_exits_at_once(cli, ssh_env, host, made, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result, location = extract_with(cli, monkeypatch, tmp_path, host, made, "/bin/true")
    assert_one_line_error(result, 4, f"store {location}", "ended before the casync handshake",
                          "exit status 0")


def test_remote_cat_echoes_our_hello(cli, ssh_env, host, made, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``cat`` answers with our own HELLO, which offers no chunks."""
    result, location = extract_with(cli, monkeypatch, tmp_path, host, made, "cat; :")
    assert_one_line_error(result, 4, f"store {location}", "server not offering chunks (HELLO "
                          "flags 0x40)")


#: A shell peer: HELLO offering a store at once (no interpreter start-up), then silence
#: until the client hangs up.
HELLO_THEN_SILENCE = ("printf '" + "".join(f"\\{b:03o}" for b in hello(READABLE_STORE))
                      + "'; exec cat >/dev/null; :")


def test_silent_peer_times_out(cli, ssh_env, host, made, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The store's timeout (1 s here) bounds the wait for HELLO."""
    started = time.monotonic()
    result, location = extract_with(cli, monkeypatch, tmp_path, host, made, peer("silent"),
                                    timeout_s=1)
    assert_one_line_error(result, 4, f"store {location}", "no HELLO from", "within 1 s")
    assert time.monotonic() - started < 60


def test_peer_silent_after_hello_times_out(ssh_env, host, made, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The timeout bounds the wait for an answer too (4 s: the HELLO must come first)."""
    store, _, _ = made
    monkeypatch.setenv("CASYNC_REMOTE_PATH", HELLO_THEN_SILENCE)
    ssh = SSHChunkStore(parse_location(f"ssh://{host}{store}"), StoreOptions(n=1, timeout=4))
    started = time.monotonic()
    try:
        with pytest.raises(StoreTimeoutError, match=r"no answer from .* within 4 s"):
            ssh.get_chunk(bytes(32))
    finally:
        ssh.close()
    assert time.monotonic() - started < 60


def test_dead_session_is_retried_then_one_line(cli, ssh_env, host, made, tmp_path,  # type: ignore[no-untyped-def]
                                               monkeypatch) -> None:
    """A session that dies with a request pending is a connection error: the core
    retries it (a fresh session each time), then reports one line."""
    log = tmp_path / "starts"
    remote = f"echo >> {log}; {peer('hangup')}"
    result, location = extract_with(cli, monkeypatch, tmp_path, host, made, remote, retries=2)
    assert_one_line_error(result, 4, f"store {location}", "the ssh session ended (exit status "
                          "255)")
    # two attempts per fetch (extract may fetch the failed chunk once more to report it)
    starts = len(log.read_text().splitlines())
    assert starts in (2, 4)


def test_uncompressed_chunks_are_honoured(ok, ssh_env, host, made, tmp_path,  # type: ignore[no-untyped-def]
                                          monkeypatch) -> None:
    """A server sending plain chunk data (COMPRESSED clear) works: the flag is honoured."""
    store, index, data = made
    monkeypatch.setenv("CASYNC_REMOTE_PATH", peer("uncompressed"))
    ok("extract", "-n", "2", "-s", f"ssh://{host}{store}", index, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data


def test_corrupt_chunk_from_the_wire_is_an_integrity_error(cli, ssh_env, host, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The core verifies what the session delivers: a chunk file holding another chunk's
    data is exit status 5, naming the ssh store."""
    data = blob(200_000, seed=3)
    (tmp_path / "in").write_bytes(data)
    fx.run_desync("make", "-s", tmp_path / "store", tmp_path / "in.caibx", tmp_path / "in")
    files = sorted((tmp_path / "store").glob("*/*.cacnk"))
    assert len(files) >= 2
    files[0].write_bytes(files[1].read_bytes())
    location = f"ssh://{host}{tmp_path / 'store'}"
    result = cli("extract", "-n", "2", "-s", location, tmp_path / "in.caibx", tmp_path / "out")
    assert_one_line_error(result, 5, files[0].name[:64], location)


def test_close_says_goodbye(ssh_env, host, made, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """close() ends every session with GOODBYE (not by hanging up)."""
    store, _, _ = made
    record = tmp_path / "ended"
    monkeypatch.setenv("CASYNC_REMOTE_PATH", peer(f"record={record}"))
    ssh = SSHChunkStore(parse_location(f"ssh://{host}{store}"), StoreOptions(n=1, timeout=30))
    assert ssh.has_chunk(bytes(32)) is False
    ssh.close()
    assert record.read_text() == "GOODBYE"
