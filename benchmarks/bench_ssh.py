"""Extract over ssh (the casync protocol): desync's ``ssh://`` store next to casync.

Builds the benchmark tarball (``bench.py``'s ``build_tarball``, ~400 MB of system
files), makes one store and index of it with casync on tmpfs, starts a throwaway sshd
on 127.0.0.1 (``desync_core.testing.servers.SSHServer``) and times, alternating in one
run:

* ``casync extract --store=host:/store`` (remote ``casync``): the reference;
* ``desync extract -s ssh://host/store`` with remote ``casync`` (same server program);
* ``desync extract -s ssh://host/store`` with remote ``desync pull``.

Every output is checked against the tarball (SHA-256). Both tools run ssh through the
same wrapper (``ssh -F <test ssh_config>``), so ciphers and keys are the same.

    python3 benchmarks/bench_ssh.py [--size-mb 400] [--runs 2] [-n 10]

Needs casync, OpenSSH (client and server), desync-core and desync-store-ssh. The
machine may be shared: compare the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import build_tarball
from benchutil import compile_bytecode, sha256

from desync_core.testing.servers import SSHServer

DESYNC = [sys.executable, "-m", "desync_core"]



def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Run a command (failing loudly); its wall-clock seconds."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                         f"{proc.stderr.decode(errors='replace')}")
    return elapsed


def main() -> None:
    """Run the benchmark and print a markdown table."""
    compile_bytecode()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per case (default 2)")
    parser.add_argument("-n", "--concurrency", type=int, default=10,
                        help="desync extract -n: ssh sessions (default 10)")
    parser.add_argument("--workdir", default="/var/tmp/desync-bench",
                        help="where the tarball is kept (default /var/tmp/desync-bench)")
    parser.add_argument("--tmpfs", default="/dev/shm",
                        help="parent of the store and outputs (default /dev/shm)")
    args = parser.parse_args()
    casync = shutil.which("casync")
    if casync is None:
        raise SystemExit("casync is not installed")

    tar = Path(args.workdir) / f"system-{args.size_mb}MB.tar"
    build_tarball(tar, args.size_mb)
    expected = sha256(tar)
    size = tar.stat().st_size

    with tempfile.TemporaryDirectory(prefix="bench-ssh-", dir=args.tmpfs) as tmp, \
            tempfile.TemporaryDirectory(prefix="bench-sshd-") as sshd_dir:
        work = Path(tmp)
        store, index, out = work / "store.castr", work / "tar.caibx", work / "out.tar"
        subprocess.run([casync, "make", f"--store={store}", str(index), str(tar)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        chunks = sum(1 for _ in store.rglob("*.cacnk"))
        stored = sum(p.stat().st_size for p in store.rglob("*.cacnk"))
        server = SSHServer(Path(sshd_dir))
        try:
            wrapper = Path(sshd_dir) / "ssh"
            wrapper.write_text(f'#!/bin/sh\nexec ssh -F "{server.ssh_config}" "$@"\n')
            wrapper.chmod(0o755)
            host = server.alias
            base = {**os.environ, "CASYNC_SSH_PATH": str(wrapper)}
            remote_desync = str(Path(sys.executable).with_name("desync"))
            n = ["-n", str(args.concurrency)]
            cases = {
                "casync extract (remote casync)": (
                    [casync, "extract", f"--store={host}:{store}", str(index), str(out)],
                    {**base, "CASYNC_REMOTE_PATH": "casync"}),
                "desync extract (remote casync)": (
                    [*DESYNC, "extract", *n, "-s", f"ssh://{host}{store}", str(index), str(out)],
                    {**base, "CASYNC_REMOTE_PATH": "casync"}),
                "desync extract (remote desync pull)": (
                    [*DESYNC, "extract", *n, "-s", f"ssh://{host}{store}", str(index), str(out)],
                    {**base, "CASYNC_REMOTE_PATH": remote_desync}),
            }
            times: dict[str, list[float]] = {name: [] for name in cases}
            for _ in range(args.runs):
                for name, (cmd, env) in cases.items():
                    if out.exists():
                        out.unlink()
                    times[name].append(timed(cmd, env))
                    if sha256(out) != expected:
                        raise SystemExit(f"{name} produced wrong data")
        finally:
            server.stop()

    mb = size / 1e6
    reference = statistics.median(times["casync extract (remote casync)"])
    print(f"extract over ssh: {mb:.0f} MB tar, {chunks} chunks ({stored / 1e6:.0f} MB "
          f"compressed), desync -n {args.concurrency}, {args.runs} runs each, median, "
          f"{os.cpu_count()} CPUs; outputs checked")
    print()
    print("| tool | time | MB/s | vs casync |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} s | {mb / median:.1f} | {reference / median:.2f}x |")


if __name__ == "__main__":
    main()
