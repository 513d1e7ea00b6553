"""Command-line conventions: pflag-style flags, one-line errors, exit codes, progress."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from desync_core import errors
from desync_core.cli import build_parser, run
from desync_core.cli.options import format_duration, parse_duration
from desync_core.plugins import get_registries


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser(get_registries().commands).parse_args(list(argv))


def test_bool_flags_accept_parsebool_values() -> None:
    assert parse("extract", "-s", "s", "i", "o").cache_repair is True
    assert parse("extract", "--cache-repair=false", "-s", "s", "i", "o").cache_repair is False
    assert parse("extract", "--cache-repair=F", "-s", "s", "i", "o").cache_repair is False
    assert parse("extract", "--cache-repair=0", "-s", "s", "i", "o").cache_repair is False
    assert parse("extract", "-k", "-s", "s", "i", "o").in_place is True
    assert parse("extract", "--in-place=true", "-s", "s", "i", "o").in_place is True
    assert parse("extract", "--print-stats=TRUE", "-s", "s", "i", "o").print_stats is True


def test_list_flags_repeat_and_split_at_commas() -> None:
    args = parse("extract", "-s", "a,b", "--store", "c", "-sd", "i", "o")
    assert args.store == ["a", "b", "c", "d"]
    # --seed is a pflag StringSlice in desync too: split at commas
    assert parse("extract", "--seed", "x,y.caibx", "-s", "s", "i", "o").seed == ["x", "y.caibx"]


def test_flags_anywhere_and_global_flags_after_command() -> None:
    args = parse("extract", "i", "o", "-s", "st", "--digest", "sha256", "-n", "3")
    assert (args.index, args.output, args.store, args.digest, args.concurrency) == (
        "i", "o", ["st"], "sha256", 3)
    args = parse("--digest", "sha256", "list-chunks", "x")
    assert args.digest == "sha256"


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("1s", 1.0), ("1m30s", 90.0), ("2h", 7200.0), ("1.5s", 1.5), ("0", 0.0),
    ("250us", 0.00025), ("100ns", 1e-7),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_bad_duration_is_a_usage_error() -> None:
    with pytest.raises(errors.UsageError, match='invalid duration "5 parsecs"'):
        parse("cat", "-b", "5 parsecs", "x")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 13, 90, 7205, 93600)] == [
        "0s", "13s", "1m30s", "2h0m5s", "1d2h0m0s"]


def test_exit_code_table_is_pinned() -> None:
    """Each error family keeps its exit code (scripts depend on them)."""
    assert errors.DesyncError.exit_code == 1
    assert errors.UsageError.exit_code == 2
    assert errors.ConfigError.exit_code == 2
    assert errors.PluginError.exit_code == 3
    assert errors.UnknownSchemeError.exit_code == 3
    assert errors.StoreError.exit_code == 4
    assert errors.ChunkMissingError.exit_code == 4
    assert errors.StoreConnectionError.exit_code == 4
    assert errors.IntegrityError.exit_code == 5
    assert errors.ChunkInvalidError.exit_code == 5
    assert errors.SeedInvalidError.exit_code == 5
    assert errors.FormatError.exit_code == 6
    assert errors.IndexFormatError.exit_code == 6
    assert errors.OperationCancelledError.exit_code == 130
    assert errors.BUG_EXIT_CODE == 70


def test_integrity_errors_are_not_store_errors() -> None:
    assert not issubclass(errors.ChunkInvalidError, errors.StoreError)
    assert issubclass(errors.ChunkMissingError, LookupError)
    assert issubclass(errors.IndexNotFoundError, FileNotFoundError)
    assert issubclass(errors.StoreTimeoutError, errors.StoreConnectionError)
    assert issubclass(errors.StoreTimeoutError, TimeoutError)


def cli(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "desync_core", *args], capture_output=True,
                          text=True, timeout=120, **kw)  # type: ignore[call-overload]


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["extract", "--no-such-flag", "i", "o"], 2, "unrecognized arguments: --no-such-flag"),
    (["extract", "-s", "s"], 2, "the following arguments are required: index, output"),
    (["no-such-command"], 2, "argument <command>: invalid choice"),
    (["--digest", "md5", "list-chunks", "x"], 2, "invalid digest algorithm 'md5'"),
    (["make", "-m", "16:64", "x.caibx", "/dev/null"], 2, "invalid chunk size '16:64'"),
    (["make", "-m", "64:16:256", "x.caibx", "/dev/null"], 2,
     "min chunk size (65536) is larger than the average (16384)"),
    (["make", "-m", "16:512:256", "x.caibx", "/dev/null"], 2,
     "average chunk size (524288) is larger than the maximum (262144)"),
    (["make", "-m", "0:64:256", "x.caibx", "/dev/null"], 2, "min chunk size too small"),
    (["make", "-m", "16:10000:40000", "x.caibx", "/dev/null"], 2,
     "too large for the buzhash discriminator"),
    (["list-chunks", "/nonexistent/x.caibx"], 4, "index /nonexistent/x.caibx does not exist"),
    (["extract", "-s", "s3+https://h/b", "/dev/null", "/tmp/o"], 6, "/dev/null: empty file"),
])
def test_errors_are_one_line_with_exit_codes(argv: list[str], code: int, message: str) -> None:
    proc = cli(*argv)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("Error: ")
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_a_bug_prints_a_traceback_and_exits_70() -> None:
    code = (
        "from desync_core import hookimpl\n"
        "from desync_core.plugins import get_plugin_manager\n"
        "from desync_core.registry import Command\n"
        "from desync_core.cli import run\n"
        "class Buggy:\n"
        "    @hookimpl\n"
        "    def desync_add_commands(self, commands):\n"
        "        commands.add(Command('buggy', 'x', lambda p: None,\n"
        "                             lambda a, c: {}['missing']))\n"
        "get_plugin_manager().register(Buggy(), name='buggy')\n"
        "raise SystemExit(run(['buggy']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 70
    assert "Traceback" in proc.stderr
    assert "KeyError: 'missing'" in proc.stderr


def test_run_returns_codes_in_process(tmp_path: Path) -> None:
    assert run(["list-chunks", str(tmp_path / "none.caibx")]) == 4


def test_parsable_progress(tmp_path: Path, cmd_testdata: Path) -> None:
    env = dict(os.environ, DESYNC_ENABLE_PARSABLE_PROGRESS="1")
    proc = cli("extract", "-s", str(cmd_testdata / "blob1.store"),
               str(cmd_testdata / "blob1.caibx"), str(tmp_path / "out"), env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines
    assembling = [line for line in lines if line.startswith("Attempt 1: Assembling ")]
    assert assembling
    for line in assembling:
        assert re.fullmatch(r"Attempt 1: Assembling [ \d]{2}\d\.\d\d% \d+(d|h|m|s)[\dhms]*",
                            line), line
    # Other phases (a bar with nothing to do prints only its prefix) use the same shape.
    for line in lines:
        assert re.fullmatch(r"Attempt \d+: [A-Za-z ]+?( [ \d]{2}\d\.\d\d% \S+)?", line), line
    assert lines[-1].startswith("Attempt 1: Assembling 100.00% ")
    assert (tmp_path / "out").read_bytes() == (cmd_testdata / "blob1").read_bytes()


def test_no_progress_when_not_a_terminal(tmp_path: Path, cmd_testdata: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESYNC_")}
    proc = cli("extract", "-s", str(cmd_testdata / "blob1.store"),
               str(cmd_testdata / "blob1.caibx"), str(tmp_path / "out"), env=env)
    assert proc.returncode == 0
    assert proc.stderr == ""


def test_manpage_writes_a_page_per_command(tmp_path: Path) -> None:
    out = tmp_path / "man"
    proc = cli("manpage", "--section", "1", "--title", "Desync", str(out))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert "desync.1" in names
    assert "desync-extract.1" in names
    assert "desync-manpage.1" in names
    extract = (out / "desync-extract.1").read_text()
    assert extract.startswith('.TH "DESYNC" "1" ')
    assert "\\fB\\-k, \\-\\-in\\-place\\fP" in extract
    assert "\\fB\\-s, \\-\\-store\\fP" in extract
    top = (out / "desync.1").read_text()
    assert "\\fBextract\\fP" in top
    man = subprocess.run(["man", "-l", "-P", "cat", str(out / "desync-extract.1")],
                         capture_output=True, text=True, env={**os.environ, "MANWIDTH": "100"})
    if man.returncode == 0:  # man-db is part of Debian; render as a sanity check
        assert "--in-place" in man.stdout.replace("\u2010", "-")
