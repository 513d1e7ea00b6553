"""chunk-server GET throughput with many concurrent clients, against nginx and desync Go.

Makes a blob and its chunk store (about 64 KiB chunks, half compressible), then, in one
run and alternating (``--repeat`` rounds, medians):

1. **GET throughput**: ``--connections`` keep-alive clients (default 32) fetch the store's
   chunk files in turn for ``--seconds``, from
   * nginx serving the store directory as static files (``TEST-SERVERS.md``), the
     physical reference (target: ours ≥ 70 % of it);
   * our ``chunk-server`` (``--workers``: default one per CPU);
   * desync Go's ``chunk-server``, when its binary is given (``--desync-go`` or
     ``$DESYNC_GO``).
   The load comes from ``wrk`` (C, with a Lua script cycling through the chunk paths)
   when installed, else from a multi-process ``http.client`` loop (``--load python``).
   Each server's CPU time during the run is read from ``/proc``, which gives its
   capacity per core: requests and MB per CPU-second.
2. **desync Go's client**: ``desync-go extract`` of the blob from our chunk-server and
   from desync Go's (target: ours at least as fast), outputs checked against the blob.

    flock /work/bench.lock python3 benchmarks/bench_chunk_server.py [--size-mib 64]
        [--seconds 5] [--repeat 3] [--connections 32] [--desync-go PATH]

Needs desync-core, desync-store-http, nginx (``apt-get install nginx``), ideally wrk.
The machine is shared: compare the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import compile_bytecode, make_blob, sha256

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait until something accepts on ``port`` (or ``proc`` exits)."""
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start listening on {port}")


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and its (live) children."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


class Server:
    """One server process on a free port (stopped with SIGTERM)."""

    def __init__(self, name: str, argv: list[str], port: int) -> None:
        self.name = name
        self.port = port
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        wait_listening(port, self.proc, name)
        time.sleep(0.5)  # let pre-forked workers come up

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM, then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def nginx_server(store: Path, work: Path) -> Server:
    """nginx serving ``store`` as static files (recipe of TEST-SERVERS.md)."""
    port = free_port()
    d = work / "nginx"
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(f"""daemon off;
user root;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  server {{ listen 127.0.0.1:{port}; root {store}; }}
}}
""")
    return Server("nginx", ["nginx", "-c", str(conf)], port)


def our_server(store: Path, workers: int) -> Server:
    """Our chunk-server."""
    port = free_port()
    argv = [sys.executable, "-m", "desync_core", "chunk-server", "-s", str(store),
            "-l", f"127.0.0.1:{port}"]
    if workers:
        argv += ["--workers", str(workers)]
    return Server("ours", argv, port)


def go_server(binary: str, store: Path) -> Server:
    """desync Go's chunk-server."""
    port = free_port()
    return Server("desync-go", [binary, "chunk-server", "-s", str(store),
                                "-l", f"127.0.0.1:{port}"], port)


# -- load generators ----------------------------------------------------------------------


def run_wrk(url: str, paths_file: Path, connections: int, seconds: float) -> tuple[float, float]:
    """``wrk`` with a Lua script cycling through the paths; (requests/s, MB/s)."""
    script = paths_file.with_suffix(".lua")
    script.write_text(f"""local paths = {{}}
for line in io.lines("{paths_file}") do paths[#paths+1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d\\n", summary.requests, summary.bytes,
    summary.duration, summary.errors.status + summary.errors.read + summary.errors.connect))
end
""")
    threads = max(1, min(connections, os.cpu_count() or 1))
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          "-s", str(script), url], capture_output=True, text=True, check=True)
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+)", out.stdout)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out.stdout}{out.stderr}")
    requests, nbytes, micros, errors = (int(g) for g in m.groups())
    if errors:
        raise SystemExit(f"{errors} failed requests against {url}")
    return requests / (micros / 1e6), nbytes / (micros / 1e6) / 1e6


def _python_client(port: int, paths: list[str], deadline: float,
                   queue: multiprocessing.Queue[tuple[int, int]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    done = nbytes = 0
    while time.monotonic() < deadline:
        conn.request("GET", paths[done % len(paths)])
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise SystemExit(f"status {resp.status}")
        done += 1
        nbytes += len(body)
    queue.put((done, nbytes))


def run_python(url: str, paths: list[str], connections: int,
               seconds: float) -> tuple[float, float]:
    """One ``http.client`` process per connection; (requests/s, MB/s)."""
    port = int(url.rsplit(":", 1)[1])
    queue: multiprocessing.Queue[tuple[int, int]] = multiprocessing.Queue()
    start = time.monotonic()
    deadline = start + seconds
    workers = [multiprocessing.Process(target=_python_client,
                                       args=(port, paths[i::connections], deadline, queue))
               for i in range(connections)]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    elapsed = time.monotonic() - start
    return (sum(r[0] for r in results) / elapsed,
            sum(r[1] for r in results) / elapsed / 1e6)


def measure(server: Server, args: argparse.Namespace, paths: list[str],
            paths_file: Path) -> tuple[float, float, float]:
    """(requests/s, MB/s, server CPU seconds per second) of one load run."""
    cpu0 = tree_cpu_seconds(server.proc.pid)
    t0 = time.monotonic()
    if args.load == "wrk":
        rps, mbps = run_wrk(server.url, paths_file, args.connections, args.seconds)
    else:
        rps, mbps = run_python(server.url, paths, args.connections, args.seconds)
    cpu = (tree_cpu_seconds(server.proc.pid) - cpu0) / (time.monotonic() - t0)
    return rps, mbps, cpu


def go_extract(binary: str, url: str, index: Path, out: Path, expected: str) -> float:
    """Seconds ``desync-go extract`` takes from ``url``; output checked."""
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    subprocess.run([binary, "extract", "-s", url + "/", str(index), str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    if sha256(out) != expected:
        raise SystemExit(f"desync-go extract from {url}: wrong output")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0,
                        help="our chunk-server's --workers (default: its default)")
    parser.add_argument("--load", choices=["wrk", "python"],
                        default="wrk" if shutil.which("wrk") else "python")
    parser.add_argument("--desync-go", default=os.environ.get("DESYNC_GO", ""),
                        help="desync Go binary (default $DESYNC_GO)")
    parser.add_argument("--workdir", default="", help="default: a temporary directory")
    args = parser.parse_args()
    if not shutil.which("nginx"):
        raise SystemExit("nginx not found: apt-get install -y nginx")
    go = args.desync_go if args.desync_go and os.access(args.desync_go, os.X_OK) else ""
    compile_bytecode()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-cs-", dir="/dev/shm"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        blob, store, index = work / "blob", work / "store", work / "blob.caibx"
        expected = make_blob(blob, args.size_mib << 20)
        subprocess.run([sys.executable, "-m", "desync_core", "make", "-s", str(store),
                        str(index), str(blob)], check=True)
        paths = sorted("/" + str(p.relative_to(store)) for p in store.glob("*/*.cacnk"))
        sizes = [(store / p.lstrip("/")).stat().st_size for p in paths]
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        print(f"{len(paths)} chunk files, mean {statistics.mean(sizes) / 1024:.1f} KiB; "
              f"{args.connections} connections, {args.seconds:g} s per run, load: "
              f"{args.load}, {os.cpu_count()} CPUs")
        makers = {"nginx": lambda: nginx_server(store, work),
                  "ours": lambda: our_server(store, args.workers)}
        if go:
            makers["desync-go"] = lambda: go_server(go, store)
        else:
            print("desync Go: no binary (--desync-go or $DESYNC_GO); its columns are skipped")
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in makers}
        extract: dict[str, list[float]] = {"ours": [], "desync-go": []}
        for _ in range(args.repeat):
            for name, make in makers.items():
                server = make()
                try:
                    measure(server, argparse.Namespace(**{**vars(args), "seconds": 1.0}),
                            paths, paths_file)  # warm-up (page cache, connections)
                    results[name].append(measure(server, args, paths, paths_file))
                    if go and name in extract:
                        extract[name].append(go_extract(go, server.url, index,
                                                        work / "out", expected))
                finally:
                    server.stop()
        print(f"\n{'server':<10} {'req/s':>9} {'MB/s':>8} {'server CPU':>10} "
              f"{'req/CPU-s':>10} {'MB/CPU-s':>9}")
        med: dict[str, tuple[float, float, float]] = {}
        for name, runs in results.items():
            rps = statistics.median(r[0] for r in runs)
            mbps = statistics.median(r[1] for r in runs)
            cpu = statistics.median(r[2] for r in runs)
            med[name] = (rps, mbps, cpu)
            print(f"{name:<10} {rps:>9.0f} {mbps:>8.0f} {cpu:>10.2f} {rps / cpu:>10.0f} "
                  f"{mbps / cpu:>9.0f}")
        ratio = med["ours"][0] / med["nginx"][0]
        print(f"\nours / nginx (GET throughput): {ratio:.0%} (target >= 70%)")
        if go:
            print(f"ours / desync Go chunk-server (GET throughput): "
                  f"{med['ours'][0] / med['desync-go'][0]:.0%}")
            a, b = statistics.median(extract["ours"]), statistics.median(extract["desync-go"])
            print(f"desync Go extract of {args.size_mib} MiB: from ours {a:.2f} s, from "
                  f"desync Go's chunk-server {b:.2f} s (ours/theirs time {a / b:.2f}, "
                  "target <= 1.00)")
        rps, mbps, cpu = med["ours"]
        print(f"capacity of one chunk-server: {rps:.0f} req/s, {mbps:.0f} MB/s using "
              f"{cpu:.2f} CPUs = {rps / cpu:.0f} req/s and {mbps / cpu:.0f} MB/s per core")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
