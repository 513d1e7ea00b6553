"""Both directions against real casync over a real sshd, and desync against itself.

* our client, remote ``casync`` serving a casync-made store;
* ``casync extract``, remote ``desync pull`` serving a desync-made store;
* our client, remote ``desync pull``; and ``chunk-server`` proxying an ``ssh://`` store.

Every output is compared byte for byte with the input.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import blob

import desync_core.testing.fixtures as fx
from desync_core.testing.fixtures import assert_one_line_error

pytestmark = pytest.mark.casync

SIZE = 3 * 1024 * 1024 + 12345


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The input blob."""
    path = tmp_path_factory.mktemp("blob") / "input.bin"
    path.write_bytes(blob(SIZE))
    return path


@pytest.fixture(scope="module")
def casync_store(tmp_path_factory: pytest.TempPathFactory, data: Path) -> tuple[Path, Path]:
    """A store and index made by casync."""
    casync = shutil.which("casync")
    if casync is None:
        pytest.fail("casync is not installed (scripts/setup.sh installs it)")
    d = tmp_path_factory.mktemp("casync-made")
    subprocess.run([casync, "make", f"--store={d / 'store.castr'}", str(d / "blob.caibx"),
                    str(data)], check=True, capture_output=True, timeout=120)
    return d / "store.castr", d / "blob.caibx"


@pytest.fixture(scope="module")
def desync_store(tmp_path_factory: pytest.TempPathFactory, data: Path) -> tuple[Path, Path]:
    """A store and index made by desync."""
    d = tmp_path_factory.mktemp("desync-made")
    fx.run_desync("make", "-s", d / "store", d / "blob.caibx", data)
    return d / "store", d / "blob.caibx"


def test_desync_client_against_casync_server(ok, ssh_env, host, casync_store, data,  # type: ignore[no-untyped-def]
                                             tmp_path, monkeypatch) -> None:
    """``CASYNC_REMOTE_PATH=casync``: our sessions against casync's own server."""
    monkeypatch.setenv("CASYNC_REMOTE_PATH", "casync")
    store, index = casync_store
    out = tmp_path / "out.bin"
    ok("extract", "-n", "4", "-s", f"ssh://{host}{store}", index, out)
    assert out.read_bytes() == data.read_bytes()


def test_casync_extract_against_desync_pull(casync, ssh_env, host, desync_store, data,  # type: ignore[no-untyped-def]
                                            tmp_path) -> None:
    """``casync extract`` with ``CASYNC_REMOTE_PATH=<our desync>`` (its ``host:/path``
    store syntax) against ``desync pull`` on a desync-made store."""
    store, index = desync_store
    out = tmp_path / "out.bin"
    proc = subprocess.run([casync, "extract", f"--store={host}:{store}", str(index), str(out)],
                          env={**os.environ, **ssh_env}, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == data.read_bytes()


def test_desync_client_against_desync_pull(ok, ssh_env, host, desync_store, data,  # type: ignore[no-untyped-def]
                                           tmp_path) -> None:
    """Both sides ours, with the default ten sessions."""
    store, index = desync_store
    out = tmp_path / "out.bin"
    ok("extract", "-s", f"ssh://{host}{store}", index, out)
    assert out.read_bytes() == data.read_bytes()


def test_verify_index_and_info_over_ssh(ok, ssh_env, host, casync_store, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """has_chunk works by requesting chunks (the protocol has no exists query)."""
    monkeypatch.setenv("CASYNC_REMOTE_PATH", "casync")
    store, index = casync_store
    stats = ok("info", "-n", "2", "-s", f"ssh://{host}{store}", index).stats
    assert stats["in-store"] == stats["unique"] > 1


@pytest.mark.parametrize("remote", ["casync", "desync"])
def test_missing_chunk_is_one_line(cli, ssh_env, host, tmp_path, data, remote,  # type: ignore[no-untyped-def]
                                   monkeypatch) -> None:
    """A chunk absent from the remote store: MISSING, a one-line error naming the store."""
    if remote == "casync":
        monkeypatch.setenv("CASYNC_REMOTE_PATH", "casync")
        subprocess.run(["casync", "make", f"--store={tmp_path / 'store'}",
                        str(tmp_path / "b.caibx"), str(data)], check=True, capture_output=True)
    else:
        fx.run_desync("make", "-s", tmp_path / "store", tmp_path / "b.caibx", data)
    victim = sorted((tmp_path / "store").glob("*/*.cacnk"))[0]
    victim.unlink()
    location = f"ssh://{host}{tmp_path / 'store'}"
    result = cli("extract", "-n", "2", "-s", location, tmp_path / "b.caibx", tmp_path / "out")
    line = assert_one_line_error(result, 4, victim.name[:-6], location)
    assert "missing" in line
    assert not (tmp_path / "out").exists()


def test_ssh_store_after_a_store_without_the_chunks(ok, ssh_env, host, desync_store, data,  # type: ignore[no-untyped-def]
                                                    tmp_path) -> None:
    """Two -s stores: chunks missing from the first come from the ssh store."""
    store, index = desync_store
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.bin"
    ok("extract", "-n", "2", "-s", empty, "-s", f"ssh://{host}{store}", index, out)
    assert out.read_bytes() == data.read_bytes()


def test_chunk_server_proxies_an_ssh_store(ssh_env, host, desync_store, data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``chunk-server -s ssh://…`` serves over HTTP what it pulls over ssh."""
    store, index = desync_store
    env = {**os.environ, **ssh_env}
    proc = subprocess.Popen([sys.executable, "-m", "desync_core", "chunk-server", "-n", "3",
                             "-s", f"ssh://{host}{store}", "-l", "127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        m = re.search(r"listening on (\S+)", line)
        assert m, line + proc.stderr.read().decode()
        out = tmp_path / "out.bin"
        result = fx.run_desync("extract", "-s", m.group(1), index, out, check=False)
        assert result.returncode == 0, result.stderr.decode()
        assert out.read_bytes() == data.read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
