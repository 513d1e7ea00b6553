"""Test helpers of desync-store-gcs: the storage emulator as a server process.

``gcp-storage-emulator`` (PyPI) is started once per test session on 127.0.0.1 with
in-memory storage (throwaway data) and stopped by PID (``TEST-SERVERS.md``). Every test
gets a bucket of its own, so tests never see each other's objects.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from desync_core.testing.servers import free_port, stop_process, wait_for_port

_bucket_numbers = itertools.count(1)

#: Starts the emulator with in-memory storage. The emulator rewrites *all* its metadata
#: (every object of every bucket, as indented JSON) after each upload or delete, so an
#: upload costs O(objects stored): thousands of chunks slow it to a crawl. With
#: in-memory storage that file is never read again, so the launcher skips writing it;
#: the HTTP API the stores talk to is unchanged. Its single-threaded HTTP/1.0 server
#: also has the standard library's listen backlog of 5: with ``-n 10`` clients every
#: connection beyond it waits for a SYN retransmission (1 s), so the backlog is raised.
LAUNCHER = """
import http.server
import sys
from gcp_storage_emulator import storage
from gcp_storage_emulator.__main__ import main
storage.Storage._write_config_to_file = lambda self: None
http.server.HTTPServer.request_queue_size = 128
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Emulator:
    """A running gcp-storage-emulator.

    Attributes:
        url: its endpoint, the value of ``STORAGE_EMULATOR_HOST``.
    """

    proc: subprocess.Popen[bytes]
    port: int
    log: Any
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls) -> Emulator:
        """Start an emulator on a free port; returns once it listens."""
        port = free_port()
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, "start", "-H", "127.0.0.1",
             "--port", str(port), "--in-memory", "-q"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        emulator = cls(proc, port, log)
        try:
            wait_for_port(port, proc=proc, timeout=30, what="gcp-storage-emulator")
        except BaseException:
            emulator.stop()
            raise
        return emulator

    def stop(self) -> None:
        """Stop the emulator (SIGTERM, then SIGKILL) and drop its log."""
        stop_process(self.proc)
        self.log.close()

    def client(self) -> Any:
        """A google-cloud-storage client of the emulator (anonymous credentials)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        old = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = self.url
        try:
            return storage.Client(project="test", credentials=AnonymousCredentials())
        finally:
            if old is None:
                del os.environ["STORAGE_EMULATOR_HOST"]
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = old


def new_bucket_name() -> str:
    """A bucket name no other test of this session uses."""
    return f"t{os.getpid()}-{next(_bucket_numbers)}"


@dataclass
class Bucket:
    """A bucket of the emulator with helpers that bypass the stores under test."""

    name: str
    handle: Any

    def url(self, path: str = "") -> str:
        """``gs://<bucket>/<path>``."""
        return f"gs://{self.name}/{path}" if path else f"gs://{self.name}"

    def put(self, name: str, data: bytes) -> None:
        """Write object ``name``."""
        self.handle.blob(name).upload_from_string(data)

    def get(self, name: str) -> bytes | None:
        """Object ``name``'s bytes, None if absent."""
        from google.api_core.exceptions import NotFound

        try:
            return bytes(self.handle.blob(name).download_as_bytes())
        except NotFound:
            return None

    def names(self, prefix: str = "") -> list[str]:
        """Every object name under ``prefix``, sorted."""
        return sorted(b.name for b in self.handle.client.list_blobs(self.handle,
                                                                    prefix=prefix or None))

    def content_type(self, name: str) -> str | None:
        """The stored content type of object ``name``."""
        blob = self.handle.get_blob(name)
        return None if blob is None else blob.content_type

    def delete(self, name: str) -> None:
        """Delete object ``name``."""
        self.handle.blob(name).delete()


BucketFactory = Callable[[], Bucket]
