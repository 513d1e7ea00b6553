"""The real ``desync`` program end to end: a chain of the core commands in subprocesses,
and the error convention (one ``Error:`` line on stderr, exit status, no traceback)."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

CORE_COMMANDS = ["make", "extract", "cat", "chunk", "list-chunks", "info", "inspect-chunks",
                 "verify", "verify-index", "chop", "cache", "prune", "config"]


def error_line(proc: subprocess.CompletedProcess[bytes], code: int) -> str:
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    assert proc.returncode == code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    return lines[0]


def test_core_commands_chain(tmp_path: Path, desync) -> None:  # type: ignore[no-untyped-def]
    blob = tmp_path / "blob"
    data = random.Random(77).randbytes(1_500_000) + bytes(500_000)
    blob.write_bytes(data)
    store, index = str(tmp_path / "store"), str(tmp_path / "blob.caibx")

    stats = json.loads(desync("make", "--print-stats", "-m", "4:16:64", "-s", store, index,
                              str(blob)).stderr)
    ids = desync("list-chunks", index).stdout.decode().split()
    assert stats["ChunksAccepted"] == len(ids)
    chunked = [line.split("\t")[2] for line in
               desync("chunk", "-m", "4:16:64", str(blob)).stdout.decode().splitlines()]
    assert chunked == ids
    desync("verify", "-s", store)
    desync("verify-index", index, str(blob))
    desync("extract", "-s", store, index, str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == data
    assert desync("cat", "-s", store, "-o", "1000", "-l", "5000", index).stdout == \
        data[1000:6000]
    info = json.loads(desync("info", "-s", store, index).stdout)
    assert (info["total"], info["unique"], info["in-store"], info["size"]) == (
        len(ids), len(set(ids)), len(set(ids)), len(data))
    chunks_info = json.loads(desync("inspect-chunks", "-s", store, index).stdout)
    assert [c["id"] for c in chunks_info] == ids
    desync("cache", "-s", store, "-c", str(tmp_path / "cache"), index)
    desync("chop", "-s", str(tmp_path / "chopped"), index, str(blob))
    assert len(list((tmp_path / "chopped").rglob("*.cacnk"))) == len(set(ids))
    (tmp_path / "other").write_bytes(b"x" * 100)
    desync("make", "-s", store, str(tmp_path / "other.caibx"), str(tmp_path / "other"))
    desync("prune", "-s", store, index, input=b"y\n")
    assert sorted(p.name.removesuffix(".cacnk") for p in (tmp_path / "store").rglob("*.cacnk")) \
        == sorted(set(ids))


def test_help(desync, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from desync_core.cli import run

    for command in CORE_COMMANDS:  # in-process: argparse exits after printing the help
        with pytest.raises(SystemExit) as exc:
            run([command, "--help"])
        assert exc.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: desync {command}")
    assert desync("make", "--help").stdout.decode().startswith("usage: desync make")


def test_errors_are_one_line(tmp_path: Path, desync) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "bad.caibx").write_bytes(b"\0" * 200)
    line = error_line(desync("list-chunks", str(tmp_path / "bad.caibx"), check=False), 6)
    assert line.startswith(f"Error: {tmp_path / 'bad.caibx'}: ")
    error_line(desync("extract", "-s", str(tmp_path), str(tmp_path / "bad.caibx"),
                      str(tmp_path / "out"), check=False), 6)
    error_line(desync("make", "-m", "1:2", "x.caibx", "y", check=False), 2)
    error_line(desync("no-such-command", check=False), 2)
    error_line(desync("verify", check=False), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.caibx"]
