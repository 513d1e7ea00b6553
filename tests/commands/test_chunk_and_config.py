"""``desync chunk`` (boundaries and ids) and ``desync config``."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest
from cmd_util import assert_one_line_error

from desync_core.index import Index

# -- chunk ------------------------------------------------------------------------------


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(random.Random(3).randbytes(900_000) + bytes(200_000))
    return path


def parse_lines(text: str) -> list[tuple[int, int, str]]:
    rows = []
    for line in text.splitlines():
        start, size, hex_id = line.split("\t")
        rows.append((int(start), int(size), hex_id))
    return rows


@pytest.mark.parametrize("sizes", [None, "2:8:32"])
def test_chunk_prints_what_make_indexes(blob: Path, tmp_path: Path, sizes: str | None,  # type: ignore[no-untyped-def]
                                        ok) -> None:
    flags = ["-m", sizes] if sizes else []
    rows = parse_lines(ok("chunk", *flags, blob).text)
    ok("make", *flags, tmp_path / "x.caibx", blob)
    index = Index.from_bytes((tmp_path / "x.caibx").read_bytes())
    assert rows == [(c.start, c.size, c.id.hex()) for c in index]
    assert parse_lines(ok("chunk", *flags, "-", input=blob.read_bytes()).text) == rows


def test_chunk_from_a_start_offset(blob: Path, ok) -> None:  # type: ignore[no-untyped-def]
    data = blob.read_bytes()
    rows = parse_lines(ok("chunk", "-m", "2:8:32", "-S", "100000", blob).text)
    assert rows[0][0] == 100000
    assert rows[-1][0] + rows[-1][1] == len(data)
    for start, size, hex_id in rows:  # offsets are positions in the file
        assert hashlib.new("sha512_256", data[start:start + size]).hexdigest() == hex_id
    # Chunking restarts at the offset: same as chunking the file's tail on its own.
    tail = parse_lines(ok("chunk", "-m", "2:8:32", "-", input=data[100000:]).text)
    assert [(s + 100000, n, h) for s, n, h in tail] == rows
    assert parse_lines(ok("chunk", "-m", "2:8:32", "--start", "100000", "-",
                          input=data).text) == rows


def test_chunk_with_sha256(blob: Path, ok) -> None:  # type: ignore[no-untyped-def]
    data = blob.read_bytes()
    for start, size, hex_id in parse_lines(ok("--digest", "sha256", "chunk", blob).text):
        assert hashlib.sha256(data[start:start + size]).hexdigest() == hex_id


def test_chunk_errors(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(cli("chunk", tmp_path / "none"), 2, "none")
    assert_one_line_error(cli("chunk", tmp_path), 2, "directory")
    (tmp_path / "f").write_bytes(b"abc")
    assert_one_line_error(cli("chunk", "-m", "16:8:64", tmp_path / "f"), 2, "average")


# -- config -----------------------------------------------------------------------------

def test_config_shows_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ok) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path))
    text = ok("config").text
    assert list(json.loads(text)) == ["s3-credentials", "oci-credentials", "store-options"]
    assert text.endswith("\n")


def test_config_write_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ok) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path))
    result = ok("config", "-w")
    path = tmp_path / ".config" / "desync" / "config.json"
    assert result.text.splitlines() == [f"Writing config to {path}"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == json.loads(ok("config").text)
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps({"store-options": {"/var/cache/x": {"uncompressed": True}}}))
    shown = json.loads(ok("--config", custom, "config").text)
    assert shown["store-options"]["/var/cache/x"]["uncompressed"] is True


def test_config_errors(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    assert_one_line_error(cli("--config", tmp_path / "none.json", "config"), 2, "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    assert_one_line_error(cli("--config", tmp_path / "bad.json", "config"), 2, "bad.json")
    assert not os.path.exists(tmp_path / "none.json")
