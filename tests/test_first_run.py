"""The first commands after a fresh installation: nothing compiled in the foreground for
small inputs, kernels built in the background for later runs, and read-only or
compiler-less installations that still work (``desync_core.kernelcache``).

A fresh installation is ``desync_core.testing.fresh.FreshInstall``: a copy of the package
without any ``__pycache__`` (so no cached kernels), whose kernels' cache is its own
``__pycache__``, as for a package installed by pip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desync_core.index import Index
from desync_core.testing.fresh import FreshInstall

REPO = Path(__file__).resolve().parent.parent

# Runs one command like the ``desync`` program does, then reports what the process
# loaded and which chunker it ended up with (None: the vectorised numpy one).
PROBE = """
import json, os, sys
exec(os.environ.get("PROBE_SETUP", ""))
from desync_core.cli import run
rc = run(sys.argv[1:])
from desync_core import chunker
report = {"rc": rc, "numba": "numba" in sys.modules, "llvmlite": "llvmlite" in sys.modules,
          "kernel": getattr(chunker._chosen, "__name__", None)}
with open(os.environ["PROBE_REPORT"], "w") as f:
    json.dump(report, f)
"""


class Fresh(FreshInstall):
    """A fresh installation under ``root`` that runs commands through PROBE."""

    def probe(self, *args: str | Path, env: dict[str, str] | None = None,
              prefix: list[str] | None = None, stdin: bytes | None = None,
              setup: str = "") -> dict[str, object]:
        """Run ``desync ARGS`` in a new process (after the Python code ``setup``);
        returns the PROBE report."""
        report = self.root / "report.json"
        full_env = {**self.env, **(env or {}), "PROBE_REPORT": str(report),
                    "PROBE_SETUP": setup}
        proc = subprocess.run([*(prefix or []), sys.executable, "-c", PROBE, *map(str, args)],
                              env=full_env, cwd=self.root, input=stdin, capture_output=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        result: dict[str, object] = json.loads(report.read_text())
        assert result["rc"] == 0, proc.stderr.decode(errors="replace")
        return result


def casync_index(casync: str, source: Path, out: Path, chunk_size: str | None = None) -> bytes:
    args = [casync, "make", f"--store={out.parent / 'casync.castr'}"]
    if chunk_size:
        args.append(f"--chunk-size={chunk_size}")
    subprocess.run([*args, str(out), str(source)], check=True, capture_output=True,
                   timeout=300)
    return out.read_bytes()


@pytest.mark.slow
def test_first_make_compiles_nothing_and_builds_for_next_time(
        tmp_path: Path, testdata: Path, casync: str) -> None:
    fresh = Fresh(tmp_path)
    source = testdata / "testdata" / "chunker.input"
    first = fresh.probe("make", "-s", tmp_path / "store", tmp_path / "first.caibx", source)
    # Chunked by numpy, hashed by hashlib: numba was never imported.
    assert first == {"rc": 0, "numba": False, "llvmlite": False, "kernel": None}
    want = casync_index(casync, source, tmp_path / "casync.caibx")
    assert (tmp_path / "first.caibx").read_bytes() == want
    golden = Index.from_bytes((testdata / "testdata" / "chunker.index").read_bytes())
    assert Index.from_bytes(want).ends.tolist() == golden.ends.tolist()

    # The command left a builder behind that caches both kernels...
    fresh.wait_for_builder(2)
    kernels = fresh.kernels()
    assert [k.split("-")[0] for k in kernels if k.endswith(".so")] == ["chunker", "sha512x8"]
    # ...which the next run loads without numba.
    second = fresh.probe("make", "-s", tmp_path / "store2", tmp_path / "second.caibx", source)
    assert second == {"rc": 0, "numba": False, "llvmlite": False, "kernel": "run_native"}
    assert (tmp_path / "second.caibx").read_bytes() == want


def test_stream_on_a_fresh_install(tmp_path: Path, cmd_testdata: Path) -> None:
    """stdin is chunked block by block by the vectorised chunker; ``never`` starts no
    builder and compiles nothing."""
    fresh = Fresh(tmp_path)
    blob = (cmd_testdata / "blob1").read_bytes()
    got = fresh.probe("make", "-m", "2:8:32", tmp_path / "s.caibx", "-", stdin=blob,
                      env={"DESYNC_KERNEL_BUILD": "never"})
    assert got == {"rc": 0, "numba": False, "llvmlite": False, "kernel": None}
    ours = Index.from_bytes((tmp_path / "s.caibx").read_bytes())
    golden = Index.from_bytes((cmd_testdata / "blob1.caibx").read_bytes())
    assert (ours.ends.tolist(), ours.ids) == (golden.ends.tolist(), golden.ids)
    assert fresh.kernels() == []


@pytest.mark.slow
def test_foreground_mode_compiles_and_caches(tmp_path: Path, testdata: Path) -> None:
    """``DESYNC_KERNEL_BUILD=foreground``: compiled at once (the old behaviour), same
    index."""
    fresh = Fresh(tmp_path)
    source = testdata / "testdata" / "chunker.input"
    got = fresh.probe("make", tmp_path / "f.caibx", source,
                      env={"DESYNC_KERNEL_BUILD": "foreground"})
    assert got["numba"] is True
    assert got["kernel"] == "run_native"
    assert [k.split("-")[0] for k in fresh.kernels() if k.endswith(".so")] == \
        ["chunker", "sha512x8"]
    again = fresh.probe("make", tmp_path / "g.caibx", source)
    assert again["kernel"] == "run_native"
    assert (tmp_path / "f.caibx").read_bytes() == (tmp_path / "g.caibx").read_bytes()
    golden = Index.from_bytes((testdata / "testdata" / "chunker.index").read_bytes())
    assert Index.from_bytes((tmp_path / "f.caibx").read_bytes()).ids == golden.ids


@pytest.mark.slow
def test_large_input_compiles_both_kernels_at_once(tmp_path: Path, testdata: Path) -> None:
    """Above the small-input limit (lowered here to 100 kB) the command compiles the
    chunker and the hash kernel itself, before it chunks."""
    fresh = Fresh(tmp_path)
    source = testdata / "testdata" / "chunker.input"
    got = fresh.probe("make", "-s", tmp_path / "store", tmp_path / "big.caibx", source,
                      setup="import desync_core.kernelcache as k; k.SMALL_INPUT_BYTES = 100_000")
    assert got == {"rc": 0, "numba": True, "llvmlite": True, "kernel": "run_native"}
    assert [k.split("-")[0] for k in fresh.kernels() if k.endswith(".so")] == \
        ["chunker", "sha512x8"]
    golden = Index.from_bytes((testdata / "testdata" / "chunker.index").read_bytes())
    assert Index.from_bytes((tmp_path / "big.caibx").read_bytes()).ids == golden.ids


@pytest.mark.slow
def test_without_a_linker_the_object_file_is_cached(tmp_path: Path, testdata: Path) -> None:
    """No C compiler or ``ld`` on PATH: the kernel is cached as an object file, which
    later runs load with llvmlite (no numba); hashing falls back to hashlib."""
    fresh = Fresh(tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    no_tools = {"PATH": str(empty), "CC": ""}
    source = testdata / "testdata" / "chunker.input"
    fresh.probe("make", tmp_path / "a.caibx", source,
                env={**no_tools, "DESYNC_KERNEL_BUILD": "foreground"})
    kernels = fresh.kernels()
    assert [(k.split("-")[0], Path(k).suffix) for k in kernels] == [("chunker", ".o")]
    got = fresh.probe("make", tmp_path / "b.caibx", source, env=no_tools)
    assert got == {"rc": 0, "numba": False, "llvmlite": True, "kernel": "run_native"}
    golden = Index.from_bytes((testdata / "testdata" / "chunker.index").read_bytes())
    for name in ("a.caibx", "b.caibx"):
        assert Index.from_bytes((tmp_path / name).read_bytes()).ids == golden.ids


def _read_only_prefix(*paths: Path) -> list[str]:
    """A command prefix that runs the command in a private mount namespace in which
    ``paths`` are read-only (root only: permissions do not stop root)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("read-only mounts need root and unshare")
    mounts = "; ".join(f"mount --bind {p} {p} && mount -o remount,bind,ro {p}" for p in paths)
    probe = subprocess.run(["unshare", "-m", "sh", "-c", mounts], capture_output=True,
                           timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m does not work here: {probe.stderr.decode().strip()}")
    return ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh"]


@pytest.mark.slow
def test_read_only_installation_and_home(tmp_path: Path, testdata: Path) -> None:
    """Nothing is writable (package, HOME, no NUMBA_CACHE_DIR): small inputs need no
    compiling, and a demanded compiled kernel is compiled in memory."""
    fresh = Fresh(tmp_path)
    (tmp_path / "out").mkdir()
    prefix = _read_only_prefix(fresh.site, fresh.home)
    source = testdata / "testdata" / "chunker.input"
    small = fresh.probe("make", tmp_path / "out" / "a.caibx", source, prefix=prefix)
    assert small["kernel"] is None
    assert small["numba"] is False
    compiled = fresh.probe("make", tmp_path / "out" / "b.caibx", source, prefix=prefix,
                           env={"DESYNC_CHUNKER_KERNEL": "numba"})
    assert compiled["kernel"] == "run_native"
    golden = Index.from_bytes((testdata / "testdata" / "chunker.index").read_bytes())
    for name in ("a.caibx", "b.caibx"):
        assert Index.from_bytes((tmp_path / "out" / name).read_bytes()).ids == golden.ids
    assert fresh.kernels() == []


def test_invalid_build_mode_is_a_clear_error(tmp_path: Path, desync) -> None:  # type: ignore[no-untyped-def]
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 1000)
    proc = desync("make", str(tmp_path / "k.caibx"), str(blob), check=False,
                  env={"DESYNC_KERNEL_BUILD": "sometimes"})
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == \
        "Error: DESYNC_KERNEL_BUILD must be 'auto', 'foreground' or 'never', not 'sometimes'"
