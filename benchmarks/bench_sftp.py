"""Extract over SFTP next to raw paramiko loops and a local store, same run.

Builds the benchmark tarball (``bench.py``'s ``build_tarball``, 400 MB of system
files), stores its chunks in a local store, starts a real sshd on 127.0.0.1 (the
tests' ``SSHServer``) and a temporary ``HOME`` whose ``~/.ssh/config`` has the
``desync-test`` alias, then times, alternating, several runs of:

* ``desync extract -n N`` from the local store;
* ``desync extract -n N`` from ``sftp://desync-test/<store>`` (paramiko, the default);
* the same with ``CASYNC_SSH_PATH`` = OpenSSH's ``ssh`` (desync's way: SFTP over pipes);
* raw paramiko loops in a process of their own that get every chunk file of the index
  over N sessions (threads) and do nothing else: ``getfo`` (paramiko's whole-file
  download, default transport settings), and ``pipelined`` (the store's request
  pattern: OPEN, then FSTAT+READ+CLOSE in one write, AES-GCM; no decoding, hashing or
  writing: the ceiling of any extract over paramiko in one interpreter), and
  ``grouped`` (16 files per round trip pair, as the store's ``get_chunks`` does; what
  an extract could reach if the core fetched chunks in groups).

Every process is timed whole (start-up and connections included), every output is
checked against the tarball. The ratio column is raw loop time / extract time.

    python3 benchmarks/bench_sftp.py [--size-mb 400] [--runs 3] [-n 8]

The machine is shared: compare ratios measured in one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import filecmp
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench import build_tarball, log, timed
from benchutil import compile_bytecode

RAW_KINDS = ("getfo", "pipelined", "grouped")


def raw_loop(kind: str, port: int, key: str, known_hosts: str, sessions: int,
             listing: str) -> None:
    """Get every file named in ``listing`` over ``sessions`` paramiko SFTP sessions."""
    import paramiko

    paths = Path(listing).read_text().split()

    def connect() -> paramiko.SFTPClient:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = paramiko.SSHClient()
        client.load_host_keys(known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if kind in ("pipelined", "grouped"):  # the store's transport settings
            t = paramiko.Transport(sock)
            t.get_security_options().ciphers = ("aes128-gcm@openssh.com",)
            t.start_client(timeout=30)
            server_key = t.get_remote_server_key()
            if not client.get_host_keys().check(f"[127.0.0.1]:{port}", server_key):
                raise SystemExit("host key mismatch")
            t.auth_publickey("root", paramiko.PKey.from_path(key))
            channel = t.open_session()
            channel.invoke_subsystem("sftp")
            from desync_store_sftp.wire import BatchingSFTPClient
            return BatchingSFTPClient(channel)
        client.connect("127.0.0.1", port=port, username="root", key_filename=key,
                       look_for_keys=False, allow_agent=False, sock=sock)
        return client.open_sftp()

    clients = [connect() for _ in range(sessions)]
    todo = iter(paths)
    lock = threading.Lock()
    got = [0]

    def work(sftp: paramiko.SFTPClient) -> None:
        from desync_store_sftp.wire import read_file, read_files

        total = 0
        while kind == "grouped":
            with lock:
                group = [p for p in (next(todo, None) for _ in range(16)) if p]
            if not group:
                break
            total += sum(len(d or b"") for d in read_files(sftp, group))
        while kind != "grouped":
            with lock:
                path = next(todo, None)
            if path is None:
                break
            if kind == "getfo":
                buf = io.BytesIO()
                sftp.getfo(path, buf)
                total += len(buf.getvalue())
            else:
                total += len(read_file(sftp, path))
        with lock:
            got[0] += total

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = sum(os.path.getsize(p) for p in paths)
    if got[0] != expected:
        raise SystemExit(f"raw loop got {got[0]} bytes, expected {expected}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=400, help="tarball size (default 400)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per case (default 3)")
    ap.add_argument("-n", "--sessions", type=int, default=8,
                    help="extract -n and raw-loop sessions (default 8)")
    ap.add_argument("--workdir", default="/var/tmp/desync-bench",
                    help="where the tarball is kept (default /var/tmp/desync-bench)")
    ap.add_argument("--tmpfs", default="/dev/shm",
                    help="parent of the store, sshd and outputs (default /dev/shm)")
    ap.add_argument("--raw-loop", nargs=6, metavar=("KIND", "PORT", "KEY", "KNOWN", "N", "LIST"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.raw_loop:
        kind, port, key, known, n, listing = args.raw_loop
        raw_loop(kind, int(port), key, known, int(n), listing)
        return 0

    compile_bytecode()
    import desync_store_sftp
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    os.path.dirname(desync_store_sftp.__file__)], check=True)
    from desync_core.plugin_api import Index
    from desync_core.testing.servers import SSHServer

    tar = Path(args.workdir) / f"system-{args.size_mb}MB.tar"
    build_tarball(tar, args.size_mb)
    size = tar.stat().st_size
    desync = [sys.executable, "-m", "desync_core"]
    n = str(args.sessions)
    with tempfile.TemporaryDirectory(prefix="bench-sftp-", dir=args.tmpfs) as tmp:
        work = Path(tmp)
        store, index, out = work / "store", work / "blob.caibx", work / "out"
        subprocess.run([*desync, "make", "-s", str(store), str(index), str(tar)], check=True)
        idx = Index.from_bytes(index.read_bytes(), str(index))
        ids = sorted({c.id.hex() for c in idx})
        listing = work / "chunks.list"
        listing.write_text("".join(f"{store}/{h[:4]}/{h}.cacnk\n" for h in ids))
        stored = sum(os.path.getsize(p) for p in listing.read_text().split())
        (work / "sshd").mkdir()
        server = SSHServer(work / "sshd")
        try:
            home = work / "home"
            ssh_dir = server.write_user_files(home)
            env = {**os.environ, "HOME": str(home)}
            env.pop("CASYNC_SSH_PATH", None)
            env.pop("SSH_AUTH_SOCK", None)
            # OpenSSH finds ~ through getpwuid, not $HOME: point it at the same files.
            wrapper = work / "ssh"
            wrapper.write_text(f'#!/bin/sh\nexec ssh -F {ssh_dir}/config -o '
                               f'UserKnownHostsFile={ssh_dir}/known_hosts "$@"\n')
            wrapper.chmod(0o755)
            url = f"sftp://{server.alias}{store}"
            cases: dict[str, tuple[list[str], dict[str, str], bool]] = {
                "local store": ([*desync, "extract", "-n", n, "-s", str(store), str(index),
                                 str(out)], env, True),
                "sftp (paramiko)": ([*desync, "extract", "-n", n, "-s", url, str(index),
                                     str(out)], env, True),
                "sftp (CASYNC_SSH_PATH=ssh)": ([*desync, "extract", "-n", n, "-s", url,
                                                str(index), str(out)],
                                               {**env, "CASYNC_SSH_PATH": str(wrapper)}, True),
            }
            for kind in RAW_KINDS:
                cases[f"raw paramiko loop: {kind}"] = (
                    [sys.executable, __file__, "--raw-loop", kind, str(server.port),
                     str(ssh_dir / "id_ed25519"), str(ssh_dir / "known_hosts"), n,
                     str(listing)], env, False)
            # warm-up: numba cache, page cache, sshd's first re-exec
            subprocess.run(cases["sftp (paramiko)"][0], check=True, env=env)
            times: dict[str, list[float]] = {name: [] for name in cases}
            cpus: dict[str, list[float]] = {name: [] for name in cases}
            loads: list[float] = []
            for run in range(args.runs):
                for name, (cmd, case_env, extracts) in cases.items():
                    if out.exists():
                        out.unlink()
                    log(f"run {run + 1}/{args.runs}: {name}")
                    result, _ = timed(cmd, env=case_env)
                    times[name].append(result.wall)
                    cpus[name].append(result.cpu)
                    loads.append(result.other_load)
                    if extracts and not filecmp.cmp(out, tar, shallow=False):
                        raise SystemExit(f"{name}: output differs from the tarball")
        finally:
            server.stop_all()
            shutil.rmtree(work / "sshd", ignore_errors=True)

    medians = {name: statistics.median(t) for name, t in times.items()}
    sftp = medians["sftp (paramiko)"]
    print(f"extract of a {size / 1e6:.0f} MB tar ({len(ids)} unique chunks, "
          f"{stored / 1e6:.0f} MB stored), -n {n} / {n} sessions, {args.runs} runs "
          f"(median; whole process incl. start-up and connections); other load during "
          f"runs {statistics.median(loads):.2f} CPUs\n")
    print("| case | time (s) | MB/s (tar) | CPU s | sftp extract speed / this |")
    print("|---|---:|---:|---:|---:|")
    for name, median in medians.items():
        ratio = f"{median / sftp:.2f}" if name.startswith("raw") else ""
        print(f"| {name} | {median:.2f} | {size / 1e6 / median:.0f} | "
              f"{statistics.median(cpus[name]):.1f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
