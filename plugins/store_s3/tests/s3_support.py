"""Test support for desync-store-s3: the SeaweedFS server and raw bucket access.

(A module with a unique name rather than ``conftest``: the repository has several
conftest files, and test modules import these helpers.)
"""

from __future__ import annotations

import http.server
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

#: Environment variables that select S3 credentials; tests start without any of them.
CREDENTIAL_VARS = ("S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SESSION_TOKEN", "S3_REGION",
                   "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")

_counter = itertools.count()


def new_bucket_name() -> str:
    """A bucket name no other test (or earlier run) uses."""
    return f"t{next(_counter)}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def list_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every object key under ``prefix`` (paginated)."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", ()))
    return sorted(keys)


def get_raw(client: Any, bucket: str, key: str) -> bytes | None:
    """An object's bytes, or None if it does not exist."""
    try:
        return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


class ScriptedS3:
    """A real HTTP/1.1 server on 127.0.0.1 answering like S3 from a Python function.

    For what SeaweedFS will not do on demand: 503/SlowDown, 403, replies slower than
    the store's timeout. ``respond(method, path) -> (status, error code | None, body)``
    runs in the connection's thread; requests are recorded in :attr:`seen`.
    """

    def __init__(self, respond: Callable[[str, str], tuple[int, str | None, bytes]],
                 delay: float = 0.0) -> None:
        self.seen: list[tuple[str, str]] = []
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with lock:
                    outer.seen.append((self.command, self.path))
                status, code, body = respond(self.command, self.path)
                if code is not None:
                    body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}"
                            f"</Code><Message>scripted {code}</Message></Error>").encode()
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    if code is not None:
                        self.send_header("Content-Type", "application/xml")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                except ConnectionError:
                    pass  # the client gave up (timeout tests)

            do_GET = do_HEAD = do_PUT = do_DELETE = _any  # noqa: N815 - stdlib naming

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that hang up are expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"s3+http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def requests(self, method: str) -> int:
        """How many requests of ``method`` arrived."""
        return sum(1 for m, _ in self.seen if m == method)

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()

    def __enter__(self) -> ScriptedS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ChunkServerProcess:
    """``desync chunk-server … -l 127.0.0.1:0`` in a subprocess; :attr:`url` is where it
    listens (read from its ``listening on`` line). Stopped by PID."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "desync_core", "chunk-server", *args, "-l", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, **env})
        assert self.proc.stderr is not None
        self.url = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode(errors="replace")
            if not line:
                break
            m = re.match(r"listening on (\S+)", line)
            if m:
                self.url = m.group(1).rstrip("/") + "/"
                return
        self.stop()
        raise RuntimeError("chunk-server did not start")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
