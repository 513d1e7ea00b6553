#!/usr/bin/env python3
"""Extract from an OCI registry compared with extract through our chunk-server, same run.

Builds (or reuses) the ~400 MB benchmark tarball of ``bench.py``, makes its index and
a local chunk store on tmpfs, uploads the chunks into Debian's ``docker-registry``
(CNCF distribution, filesystem storage on tmpfs, anonymous) on 127.0.0.1 with
``desync make -s oci+http://…``, starts ``desync chunk-server`` over the local store,
then times ``desync extract -n 8`` from both, alternating, and prints a table (median
of the runs, MB/s of output, and the ratio). Every output is checked against the tar.

    python3 benchmarks/bench_oci.py [--size-mb 400] [--runs 3] [-n 8] [--markdown]

Needs desync-core, desync-store-http and desync-store-oci installed and
``/usr/bin/docker-registry``. The machine is shared: compare the ratio, measured in
one run, rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import build_tarball
from benchutil import compile_bytecode, sha256, start_server

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def desync(*args: str) -> float:
    """Run the CLI, failing loudly; returns the wall time."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "desync_core", *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"desync {' '.join(args)} failed:\n{proc.stderr.decode()}")
    return elapsed


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until 127.0.0.1:port accepts connections."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("docker-registry exited before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("docker-registry did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_registry(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """An anonymous registry storing on ``directory``; returns it and its port."""
    port = free_port()
    config = directory / "config.yml"
    config.write_text("\n".join([
        "version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
        "storage:", "  filesystem:", f"    rootdirectory: {directory / 'data'}",
        "  delete:", "    enabled: true", "http:", f"  addr: 127.0.0.1:{port}", ""]))
    proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(port, proc)
    return proc, port


def main() -> None:
    """Run the benchmark and print the table."""
    compile_bytecode()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per source (default 3)")
    ap.add_argument("-n", "--concurrency", type=int, default=8, help="extract -n (default 8)")
    ap.add_argument("--workdir", default="/var/tmp/desync-bench",
                    help="where the tarball is kept (default /var/tmp/desync-bench)")
    ap.add_argument("--tmpfs", default="/dev/shm", help="stores and outputs (default /dev/shm)")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args()

    tar = Path(args.workdir) / f"system-{args.size_mb}MB.tar"
    build_tarball(tar, args.size_mb)
    expected = sha256(tar)
    size = tar.stat().st_size
    n = ["-n", str(args.concurrency)]

    with tempfile.TemporaryDirectory(prefix="bench-oci-", dir=args.tmpfs) as tmp:
        work = Path(tmp)
        store, index, out = work / "store", work / "tar.caibx", work / "out"
        (work / "registry").mkdir()
        desync("make", "-s", str(store), *n, str(index), str(tar))
        chunks = sum(1 for _ in store.rglob("*.cacnk"))
        registry, port = start_registry(work / "registry")
        server, url = start_server(store)
        try:
            oci = f"oci+http://127.0.0.1:{port}/bench/chunks"
            upload = desync("make", "-s", oci, *n, str(work / "tar2.caibx"), str(tar))
            if (work / "tar2.caibx").read_bytes() != index.read_bytes():
                raise SystemExit("make into the registry wrote a different index")
            sources = {"OCI registry (docker-registry)": oci, "chunk-server": url}
            servers = {"OCI registry (docker-registry)": registry.pid, "chunk-server": server.pid}
            timings: dict[str, list[float]] = {name: [] for name in sources}
            server_cpu: dict[str, list[float]] = {name: [] for name in sources}
            desync("extract", "-s", url, *n, str(index), str(out))  # warm-up
            for _ in range(args.runs):
                for name, source in sources.items():
                    out.unlink(missing_ok=True)
                    cpu0 = cpu_seconds(servers[name])
                    timings[name].append(desync("extract", "-s", source, *n, str(index),
                                                str(out)))
                    server_cpu[name].append(cpu_seconds(servers[name]) - cpu0)
                    if sha256(out) != expected:
                        raise SystemExit(f"extract from {name} produced wrong data")
        finally:
            for proc in (server, registry):
                proc.terminate()
                proc.wait(30)

    mb = size / 1e6
    base = statistics.median(timings["chunk-server"])
    print(f"{mb:.0f} MB tar, {chunks} chunks, extract -n {args.concurrency}, "
          f"{args.runs} runs, median (includes process start-up); "
          f"make -s into the registry: {upload:.1f} s ({mb / upload:.0f} MB/s)")
    if args.markdown:
        print("| source | extract (s) | MB/s | vs chunk-server | server CPU per chunk |")
        print("|---|---:|---:|---:|---:|")
    for name, times in timings.items():
        median = statistics.median(times)
        per_chunk = statistics.median(server_cpu[name]) / chunks * 1000
        if args.markdown:
            print(f"| {name} | {median:.2f} | {mb / median:.0f} | {base / median:.2f}x "
                  f"| {per_chunk:.2f} ms |")
        else:
            print(f"  {name:32s} {median:7.2f} s {mb / median:8.1f} MB/s  "
                  f"{base / median:5.2f}x of chunk-server, server CPU {per_chunk:.2f} ms/chunk")


if __name__ == "__main__":
    main()
