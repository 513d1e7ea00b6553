"""What every request handler of one server shares: :class:`ServerSettings`.

The settings hold the ``Authorization`` value requests must present (see
:func:`resolve_authorization`), the ``--log`` request log (:class:`RequestLog`), the
``--metrics`` counters, the stream internal errors are reported on, and the upload
budget (:class:`~desync_store_http.uploads.UploadGate`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from desync_core.plugin_api import UsageError
from desync_store_http.uploads import UploadGate

if TYPE_CHECKING:
    from desync_store_http.metrics import Metrics


class RequestLog:
    """The ``--log`` request log: one Go-format line per request (``remote.md`` §2).

    Args:
        target: a file (appended to) or ``-`` for stderr.
    """

    def __init__(self, target: str) -> None:
        self._lock = threading.Lock()
        self._own = target != "-"
        try:
            self._out: TextIO = (open(target, "a", encoding="utf-8") if self._own  # noqa: SIM115
                                 else sys.stderr)
        except OSError as exc:
            raise UsageError(f"--log {target}: {exc.strerror}") from None

    def write(self, client: str, method: str, uri: str, status: int) -> None:
        """Log one request."""
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        line = f"{stamp} Client: {client}, Request: {method} {uri}, Response: {status}\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def close(self) -> None:
        """Close the log file (not stderr)."""
        if self._own:
            self._out.close()


@dataclass
class ServerSettings:
    """What every handler of one server needs besides its own state.

    Attributes:
        authorization: required ``Authorization`` header value; empty means none.
        log: the request log, if any.
        errors: where internal errors and TLS failures are reported.
        uploads: bounds the memory and number of uploads handled at once.
        metrics: ``--metrics``: counted requests and ``GET /metrics``; None for none.
    """

    authorization: str = ""
    log: RequestLog | None = None
    metrics: Metrics | None = None
    errors: TextIO = field(default_factory=lambda: sys.stderr)
    uploads: UploadGate = field(default_factory=UploadGate)
    _errors_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def report(self, message: str) -> None:
        """Print one line on the error stream."""
        with self._errors_lock:
            self.errors.write(message.rstrip("\n") + "\n")
            self.errors.flush()


def client_text(address: Any) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a client address, for the log."""
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def resolve_authorization(flag: str | None) -> str:
    """``--authorization``, else ``$DESYNC_HTTP_AUTH``, else no authorization."""
    return flag or os.environ.get("DESYNC_HTTP_AUTH", "")


__all__ = ["RequestLog", "ServerSettings", "client_text", "resolve_authorization"]
