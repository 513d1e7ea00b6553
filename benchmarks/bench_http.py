"""Extract over HTTP compared with a local-store extract, casync, nginx and desync (Go).

Builds (or reuses) the ~400 MB benchmark tarball of ``bench.py``, makes its index and
chunk store on tmpfs with ``desync make``, then serves that store directory on
127.0.0.1 with ``desync chunk-server`` (ours), nginx (static files: the physical
reference for a server) and, when its binary is given, desync (Go)'s ``chunk-server``.
Timed, alternating, ``--runs`` times each (median reported):

* ours: ``desync extract`` from the local store, and through each server;
* casync: ``casync extract`` through our chunk-server (the same index and store: casync
  reads the same ``<4hex>/<id>.cacnk`` layout);
* desync (Go): its client through its own server and through ours (``--desync-go`` or
  the ``DESYNC_GO`` environment variable; the columns are skipped, saying so, without).

Every output is compared with the tarball. Prints wall time, MB/s and the client's CPU
time (user + system) per case, and the ratios the project's targets are stated in, all
from this one run:

    flock /work/bench.lock python3 benchmarks/bench_http.py [--size-mb 400] [--runs 3]
        [-n 10] [--desync-go PATH] [--markdown]

Needs desync-core and desync-store-http installed; nginx and casync are optional (their
cases are skipped, saying so, when missing).
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
from collections.abc import Callable
from pathlib import Path

from bench import build_tarball, machine, timed, warm
from benchutil import compile_bytecode, start_server

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CASYNC = shutil.which("casync") or "/usr/bin/casync"


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    """Until 127.0.0.1:port accepts connections."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on port {port}")


def start_nginx(root: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """nginx serving ``root`` as static files (``../shared/TEST-SERVERS.md``)."""
    port = free_port()
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    temp = " ".join(f"{k}_temp_path {work}/tmp;" for k in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(
        f"daemon off; user root; worker_processes auto; pid {work}/nginx.pid;\n"
        f"error_log {work}/error.log;\nevents {{ worker_connections 1024; }}\n"
        f"http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;\n"
        f"  {temp}\n  server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n")
    proc = subprocess.Popen([NGINX, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(port, proc, "nginx")
    return proc, f"http://127.0.0.1:{port}/"


def start_go_server(binary: str, store: Path) -> tuple[subprocess.Popen[bytes], str]:
    """desync (Go)'s chunk-server over ``store``."""
    port = free_port()
    proc = subprocess.Popen([binary, "chunk-server", "-s", str(store), "-l",
                             f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(port, proc, "desync (Go) chunk-server")
    return proc, f"http://127.0.0.1:{port}/"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server and wait for it."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    """Run the benchmark and print the results."""
    compile_bytecode()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    parser.add_argument("--workdir", default="/var/tmp/desync-bench",
                        help="where the tarball is kept (default /var/tmp/desync-bench)")
    parser.add_argument("--tmpfs", default="/dev/shm",
                        help="where stores and outputs go (default /dev/shm)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case (default 3)")
    parser.add_argument("-n", "--concurrency", type=int, default=10,
                        help="extract -n of both desyncs (default 10)")
    parser.add_argument("--desync-go", default=os.environ.get("DESYNC_GO", ""),
                        help="desync (Go) binary (default: $DESYNC_GO; skipped if unset)")
    parser.add_argument("--no-casync", action="store_true", help="skip the casync case")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    tar = Path(args.workdir) / f"system-{args.size_mb}MB.tar"
    build_tarball(tar, args.size_mb)
    size = tar.stat().st_size
    n = str(args.concurrency)
    ours = [sys.executable, "-m", "desync_core"]
    go = args.desync_go if args.desync_go and os.access(args.desync_go, os.X_OK) else ""
    notes: list[str] = []
    if not go:
        notes.append("desync (Go): skipped (no binary: give --desync-go or DESYNC_GO)"
                     if not args.desync_go else
                     f"desync (Go): skipped ({args.desync_go} is not an executable)")
    have_nginx = os.access(NGINX, os.X_OK)
    if not have_nginx:
        notes.append("nginx: skipped (not installed; apt-get install nginx)")
    have_casync = os.access(CASYNC, os.X_OK) and not args.no_casync
    if not have_casync:
        notes.append("casync: skipped" + (" (--no-casync)" if args.no_casync
                                          else " (not installed)"))

    with tempfile.TemporaryDirectory(prefix="bench-http-", dir=args.tmpfs) as tmp:
        work = Path(tmp)
        store, index, out = work / "store", work / "blob.caibx", work / "out"
        subprocess.run([*ours, "make", "-s", str(store), str(index), str(tar)], check=True,
                       stdout=subprocess.DEVNULL)
        chunks = sum(1 for _ in store.rglob("*.cacnk"))
        servers: list[subprocess.Popen[bytes]] = []
        try:
            proc, our_url = start_server(store)
            servers.append(proc)
            cases: dict[str, list[str]] = {
                "ours, local store": [*ours, "extract", "-n", n, "-s", str(store),
                                      str(index), str(out)],
                "ours <- our chunk-server": [*ours, "extract", "-n", n, "-s", our_url,
                                             str(index), str(out)],
            }
            if have_nginx:
                proc, nginx_url = start_nginx(store, work / "nginx")
                servers.append(proc)
                cases["ours <- nginx"] = [*ours, "extract", "-n", n, "-s", nginx_url,
                                          str(index), str(out)]
            if go:
                proc, go_url = start_go_server(go, store)
                servers.append(proc)
                cases["ours <- Go chunk-server"] = [*ours, "extract", "-n", n, "-s", go_url,
                                                    str(index), str(out)]
                cases["Go <- Go chunk-server"] = [go, "extract", "-n", n, "-s", go_url,
                                                  str(index), str(out)]
                cases["Go <- our chunk-server"] = [go, "extract", "-n", n, "-s", our_url,
                                                   str(index), str(out)]
                if have_nginx:
                    cases["Go <- nginx"] = [go, "extract", "-n", n, "-s", nginx_url,
                                            str(index), str(out)]
            if have_casync:
                cases["casync <- our chunk-server"] = [
                    CASYNC, "extract", f"--store={our_url}", "--seed-output=no",
                    str(index), str(out)]
            walls: dict[str, list[float]] = {name: [] for name in cases}
            cpus: dict[str, list[float]] = {name: [] for name in cases}
            warm(tar)
            for cmd in cases.values():  # warm-up: caches, page cache, server start-up
                run_case(cmd, out, tar, lambda _r: None)
            for rep in range(args.runs):
                for name, cmd in cases.items():
                    print(f"run {rep + 1}/{args.runs}: {name}", file=sys.stderr, flush=True)

                    def keep(r: tuple[float, float], name: str = name) -> None:
                        walls[name].append(r[0])
                        cpus[name].append(r[1])

                    run_case(cmd, out, tar, keep)
        finally:
            for proc in servers:
                stop(proc)

    info = machine()
    report(walls, cpus, size, chunks, args, info, notes)


def run_case(cmd: list[str], out: Path, tar: Path,
             keep: Callable[[tuple[float, float]], None]) -> None:
    """One timed extract into a fresh ``out``, checked against ``tar``."""
    if out.exists():
        os.unlink(out)
    run, _ = timed(cmd)
    if subprocess.run(["cmp", "-s", str(tar), str(out)]).returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} produced wrong data")
    keep((run.wall, run.cpu))


def report(walls: dict[str, list[float]], cpus: dict[str, list[float]], size: int,
           chunks: int, args: argparse.Namespace, info: dict[str, str],
           notes: list[str]) -> None:
    """Print the table and the ratios of the targets."""
    med = {k: statistics.median(v) for k, v in walls.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores; input {size / 1e6:.0f} MB "
          f"tar, {chunks} chunks; extract -n {args.concurrency}; median of {args.runs} "
          "(process start-up included; client CPU = user + system of the client process)")
    if args.markdown:
        print("\n| case | wall s | MB/s | client CPU s |\n|---|---:|---:|---:|")
        for k in med:
            print(f"| {k} | {med[k]:.2f} | {size / 1e6 / med[k]:.0f} | {cpu[k]:.2f} |")
    else:
        for k in med:
            print(f"  {k:28s} {med[k]:7.2f} s {size / 1e6 / med[k]:8.1f} MB/s   "
                  f"cpu {cpu[k]:6.2f} s")
    local, mine = med["ours, local store"], med["ours <- our chunk-server"]
    print()
    print(f"ours <- our chunk-server / local: {mine / local:.2f}x (target <= 1.5)")
    if "ours <- nginx" in med:
        print(f"ours <- nginx / local: {med['ours <- nginx'] / local:.2f}x")
    if "Go <- Go chunk-server" in med:
        go_go = med["Go <- Go chunk-server"]
        print(f"Go <- Go / ours <- our chunk-server: {go_go / mine:.2f}x (target > 1)")
        print(f"Go <- Go / ours <- Go chunk-server: "
              f"{go_go / med['ours <- Go chunk-server']:.2f}x")
    if "casync <- our chunk-server" in med:
        print(f"casync / ours, both <- our chunk-server: "
              f"{med['casync <- our chunk-server'] / mine:.2f}x (target >= 5)")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
