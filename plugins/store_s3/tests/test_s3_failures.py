"""Failures: retries and their counts, timeouts, missing keys, a server that goes away.

Retry counts are checked on a scripted S3 endpoint (a real HTTP server on 127.0.0.1
answering with S3 error documents), which counts the requests it gets; the server that
dies mid-extract is a SeaweedFS of its own, killed with SIGKILL and restarted on the
same ports and data.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from s3_support import ScriptedS3, new_bucket_name

from desync_core.plugin_api import (
    ChunkMissingError,
    Index,
    StoreConnectionError,
    StoreTimeoutError,
)
from desync_core.testing.fixtures import CliResult, assert_one_line_error
from desync_core.testing.servers import free_port
from desync_store_s3.seaweedfs import SeaweedFS

Cli = Callable[..., CliResult]

pytestmark = pytest.mark.usefixtures("s3_env")


@pytest.fixture
def one_chunk_index(tmp_path: Path, ok: Cli) -> Path:
    """An index of a single 5 KB chunk (made without a store)."""
    blob = tmp_path / "small"
    blob.write_bytes(random.Random(9).randbytes(5_000))
    ok("make", tmp_path / "small.caibx", blob)
    return tmp_path / "small.caibx"


def _extract(cli: Cli, store: str, index: Path, out: Path, *flags: str) -> CliResult:
    return cli("extract", "-s", store, *flags, index, out)


def _attempts(server: ScriptedS3, store: str, index: Path, *config: str,
              retries: int | None = 3) -> tuple[int, BaseException]:
    """Read the index's chunk through the reader every command uses (verified, behind
    the core's RetryingStore); returns the GET requests made and the error raised."""
    from desync_core.plugin_api import Context, load_config

    chunk_id = next(iter(Index.from_bytes(index.read_bytes(), "small"))).id
    overrides = {} if retries is None else {"error_retry": retries,
                                            "error_retry_base_interval": 0.001}
    ctx = Context(config=load_config(config[0] if config else None), overrides=overrides)
    before = server.requests("GET")
    with pytest.raises(Exception) as info:  # noqa: PT011 - checked by the caller
        ctx.open_reader(store).get_chunk(chunk_id)
    return server.requests("GET") - before, info.value


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
def test_transient_errors_are_retried_error_retry_times(cli: Cli, one_chunk_index: Path,
                                                       tmp_path: Path, status: int,
                                                       code: str) -> None:
    with ScriptedS3(lambda method, path: (status, code, b"")) as server:
        store = f"{server.url}/bucket"
        count, error = _attempts(server, store, one_chunk_index)
        assert count == 3  # error-retry counts all attempts
        assert isinstance(error, StoreConnectionError)
        result = _extract(cli, store, one_chunk_index, tmp_path / "out", "-e", "3", "-b", "1ms")
    assert_one_line_error(result, 4, code, store)
    assert not (tmp_path / "out").exists()


def test_no_such_key_is_missing_and_never_retried(cli: Cli, one_chunk_index: Path,
                                                  tmp_path: Path) -> None:
    with ScriptedS3(lambda method, path: (404, "NoSuchKey", b"")) as server:
        store = f"{server.url}/bucket"
        count, error = _attempts(server, store, one_chunk_index, retries=5)
        assert count == 1
        assert isinstance(error, ChunkMissingError)
        result = _extract(cli, store, one_chunk_index, tmp_path / "out", "-e", "5", "-b", "1ms")
    assert_one_line_error(result, 4, "missing from store")


@pytest.mark.parametrize(("status", "code", "message"), [
    (403, "AccessDenied", "AccessDenied"),
    (404, "NoSuchBucket", "bucket 'bucket' does not exist"),
    (400, "InvalidArgument", "InvalidArgument"),
])
def test_other_errors_are_not_retried(cli: Cli, one_chunk_index: Path, tmp_path: Path,
                                      status: int, code: str, message: str) -> None:
    with ScriptedS3(lambda method, path: (status, code, b"")) as server:
        store = f"{server.url}/bucket"
        count, error = _attempts(server, store, one_chunk_index, retries=5)
        assert count == 1
        assert not isinstance(error, StoreConnectionError)
        result = _extract(cli, store, one_chunk_index, tmp_path / "out", "-e", "5", "-b", "1ms")
    assert_one_line_error(result, 4, message)


def test_timeout_option_applies_and_timeouts_are_retried(cli: Cli, one_chunk_index: Path,
                                                         tmp_path: Path) -> None:
    with ScriptedS3(lambda method, path: (200, None, b"late"), delay=2.0) as server:
        store = f"{server.url}/bucket"
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"store-options": {store: {
            "timeout": 300_000_000, "error-retry": 2, "error-retry-base-interval": 1_000_000}}}))
        count, error = _attempts(server, store, one_chunk_index, str(config), retries=None)
        assert count == 2
        assert isinstance(error, StoreTimeoutError | StoreConnectionError)
        result = cli("--config", config, "extract", "-s", store, one_chunk_index,
                     tmp_path / "out")
    assert_one_line_error(result, 4, store, "timeout")


def test_connection_refused(cli: Cli, one_chunk_index: Path, tmp_path: Path) -> None:
    store = f"s3+http://127.0.0.1:{free_port()}/bucket"
    result = _extract(cli, store, one_chunk_index, tmp_path / "out", "-e", "2", "-b", "1ms")
    assert_one_line_error(result, 4, store, "Could not connect")


# -- SeaweedFS killed in the middle of an extract ------------------------------------------


@pytest.fixture(scope="module")
def doomed_server() -> Iterator[SeaweedFS]:
    """A SeaweedFS of this module's own (it gets killed and restarted)."""
    directory = Path(tempfile.mkdtemp(prefix="desync-s3-kill-"))
    server = SeaweedFS(directory, max_volumes=16)
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


def _extract_until_killed(server: SeaweedFS, store: str, index: Path, out: Path,
                          *flags: str) -> tuple[int, str]:
    """Start ``extract`` in a subprocess, kill the server once progress is reported
    (so the extract is under way), and return its exit status and stderr."""
    env = {**os.environ, **server.env(), "DESYNC_ENABLE_PARSABLE_PROGRESS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "desync_core", "extract", "-s", store, "-n", "1",
         "-e", "2", "-b", "50ms", *flags, str(index), str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    lines = []
    killed = False
    for raw in proc.stderr:
        line = raw.decode(errors="replace").rstrip("\n")
        lines.append(line)
        m = re.search(r"(\d+\.\d\d)%", line)
        if not killed and m and 0 < float(m.group(1)) < 90:
            server.kill()
            killed = True
    rc = proc.wait(120)
    assert killed, f"the extract ended before the server could be killed: {lines}"
    return rc, "\n".join(lines)


def test_server_killed_mid_extract(doomed_server: SeaweedFS, tmp_path: Path) -> None:
    client = doomed_server.client()
    bucket = new_bucket_name()
    client.create_bucket(Bucket=bucket)
    store = f"s3+{doomed_server.endpoint}/{bucket}"
    blob = tmp_path / "blob"
    blob.write_bytes(random.Random(11).randbytes(2_000_000))
    env = {**os.environ, **doomed_server.env()}
    subprocess.run([sys.executable, "-m", "desync_core", "make", "-s", store, "-n", "16",
                    "-m", "1:4:16", str(tmp_path / "blob.caibx"), str(blob)],
                   check=True, env=env, capture_output=True, timeout=300)
    index = tmp_path / "blob.caibx"
    chunks = list(Index.from_bytes(index.read_bytes(), "blob"))
    assert len(chunks) > 300
    probe = f"{chunks[-1].id.hex()[:4]}/{chunks[-1].id.hex()}.cacnk"

    def restart() -> None:
        doomed_server.start()
        doomed_server.wait_readable(bucket, probe)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    # Without -k: a clear error and no output at all (nor a temporary file).
    rc, err = _extract_until_killed(doomed_server, store, index, out_dir / "blob")
    assert rc == 4, err
    last = err.splitlines()[-1]
    assert last.startswith("Error: "), err
    assert store in last
    # refused, or cut in the middle of a reply
    assert "Could not connect" in last or "Connection was closed" in last, last
    assert "Traceback" not in err
    assert list(out_dir.iterdir()) == []

    # With -k: the partial output stays; after a restart -k completes it, reusing the
    # chunks that were already written.
    restart()
    rc, err = _extract_until_killed(doomed_server, store, index, out_dir / "blob", "-k")
    assert rc == 4, err
    assert (out_dir / "blob").exists()
    restart()
    done = subprocess.run(
        [sys.executable, "-m", "desync_core", "extract", "-s", store, "-k", "--print-stats",
         str(index), str(out_dir / "blob")], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out_dir / "blob").read_bytes() == blob.read_bytes()
    stats = json.loads(done.stdout)
    assert stats["chunks-in-place"] > 0
    assert stats["chunks-from-store"] > 0


def test_store_pickles_without_secrets_in_its_repr(s3_url: str, tmp_path: Path) -> None:
    from desync_core.plugin_api import Context, load_config

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"s3-credentials": {"http://127.0.0.1:*": {
        "access-key": "AKIDEXAMPLE", "secret-key": "wJalrXUtnFEMI/K7MDENG"}}}))
    store = Context(config=load_config(str(config))).open_chunk_store(f"{s3_url}/b")
    text = repr(store.__reduce__()) + repr(store) + str(store)
    assert "wJalrXUtnFEMI" not in text
    assert "AKIDEXAMPLE" not in text
