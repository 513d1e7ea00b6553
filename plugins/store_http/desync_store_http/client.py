"""HTTP(S) chunk and index stores, client side (``remote.md`` §1 and §3).

Both stores share :class:`HTTPClient`: a ``requests`` session whose connection pool is
sized by the store's ``n`` (``-n``), with TLS, ``Authorization``/``Cookie`` headers and a
whole-request timeout taken from the store options. Outcomes are mapped onto the core's
errors; the plugin itself never retries:

* 404 → :class:`ChunkMissingError` / :class:`IndexNotFoundError`;
* 401, 403 → :class:`StorePermissionError`;
* 5xx, refused or reset connections → :class:`StoreConnectionError` (the core's
  ``RetryingStore`` retries these, ``error-retry`` times in all);
* timeouts → :class:`StoreTimeoutError` (retried as well);
* TLS failures (untrusted or missing certificates) → a plain :class:`StoreError`, which
  is not retried: trying again cannot fix a certificate;
* other statuses → :class:`StoreError`; for uploads its text is the server's reply
  (e.g. ``writing to upstream chunk store is not enabled``).
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import threading
import time
import warnings
from collections.abc import Generator, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import requests.adapters
import requests.utils
import urllib3

from desync_core.plugin_api import (
    Chunk,
    ChunkMissingError,
    ConfigError,
    IndexNotFoundError,
    StoreConnectionError,
    StoreError,
    StoreLocation,
    StoreOptions,
    StorePermissionError,
    StoreTimeoutError,
    WritableChunkStore,
    WritableIndexStore,
    check_index_name,
    chunk_key,
    exception_chain,
)
from desync_store_http import __version__

USER_AGENT = f"desync-store-http/{__version__}"
#: Bytes read per step of a response body (the whole-request deadline is checked between).
_READ_STEP = 256 * 1024
#: Longest server reply quoted in an error message.
_MAX_DETAIL = 300


def base_url(location: str) -> str:
    """The store's base URL: ``/`` appended to the path, query and fragment dropped.

    Chunk and index URLs are relative references resolved against it, so
    ``http://h/store?x`` serves ``http://h/store/abcd/abcd….cacnk`` (``remote.md`` §1).
    """
    parts = urlsplit(location)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _reply_text(body: bytes) -> str:
    """A server's error reply, on one line and not too long."""
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "…"




def _tls_problem(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error inside ``exc``, unless it is just a connection cut during TLS."""
    for e in exception_chain(exc):
        if isinstance(e, ssl.SSLError) and not isinstance(
            e, ssl.SSLEOFError | ssl.SSLZeroReturnError
        ):
            return e
    return None


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    for e in exception_chain(exc):
        # urllib3 derives "connection refused" (NewConnectionError) from its timeout class.
        if isinstance(e, urllib3.exceptions.NewConnectionError):
            return False
        if isinstance(e, TimeoutError | urllib3.exceptions.TimeoutError):
            return True
    return False


def _reason(exc: BaseException) -> str:
    """The most useful one-line description of a transport failure."""
    for e in reversed(exception_chain(exc)):  # innermost first
        if isinstance(e, ssl.SSLCertVerificationError) and e.verify_message:
            return f"certificate verify failed: {e.verify_message}"
        if isinstance(e, ssl.SSLError):
            if e.reason:  # e.g. TLSV13_ALERT_CERTIFICATE_REQUIRED
                return str(e.reason).lower().replace("_", " ")
            return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return m.group(1).strip() if m else text


class HTTPClient:
    """Requests to one HTTP(S) store, on a pooled session built from its options.

    Args:
        base: the store's base URL (see :func:`base_url`).
        options: store options (TLS, auth, cookie, timeout, pool size ``n``).
        name: how the store is named in error messages.
    """

    def __init__(self, base: str, options: StoreOptions, name: str) -> None:
        self.base = base
        self.options = options
        self.name = name
        self._session: requests.Session | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()
        self._system_verify: bool | str = True

    def session(self) -> requests.Session:
        """The pooled session, created on first use and again in a forked child."""
        if self._lock_pid != os.getpid():
            # A forked child may have inherited the lock in a held state; it runs a
            # single thread at this point, so replacing the lock is safe.
            self._lock = threading.Lock()
            self._lock_pid = os.getpid()
        with self._lock:
            if self._session is None or self._pid != os.getpid():
                # A forked child must not share its parent's pooled sockets: drop them.
                self._session = self._new_session()
                self._pid = os.getpid()
            return self._session

    def _new_session(self) -> requests.Session:
        opts = self.options
        for key, path in (("ca-cert", opts.ca_cert), ("client-cert", opts.client_cert),
                          ("client-key", opts.client_key)):
            if path and not os.path.isfile(path):
                raise ConfigError(f"store options for '{self.name}': {key} file {path} "
                                  "does not exist")
        session = requests.Session()
        # requests re-reads proxy, netrc and CA-bundle settings from the environment on
        # every request (a quarter of its per-request cost); resolve them once instead.
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(self.base))
        self._system_verify = (os.environ.get("REQUESTS_CA_BUNDLE")
                               or os.environ.get("CURL_CA_BUNDLE") or True)
        pool = max(1, opts.n)
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool,
                                                max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # The payload is already compressed: ask for no transport compression.
        session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        if opts.http_auth:
            session.headers["Authorization"] = opts.http_auth
        if opts.http_cookie:
            session.headers["Cookie"] = opts.http_cookie
        if opts.trust_insecure:
            # The user asked for this explicitly; don't warn on every request.
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        return session

    def _tls_arguments(self) -> dict[str, object]:
        # Passed with every request rather than set on the session, so that nothing in
        # requests' settings merge can replace ca-cert or defeat trust-insecure.
        opts = self.options
        verify: bool | str = (False if opts.trust_insecure
                              else opts.ca_cert or self._system_verify)
        cert = (opts.client_cert, opts.client_key) if opts.client_cert else None
        return {"verify": verify, "cert": cert}

    def request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request; returns ``(status, body)`` (empty body for HEAD).

        Raises:
            StoreTimeoutError: the store's ``timeout`` passed before the reply was read.
            StoreConnectionError: the connection failed (refused, reset, truncated).
            StoreError: TLS failed, or the request could not be made at all.
        """
        if method == "HEAD":
            # HEAD is not streamed: closing an unread streamed response would drop the
            # pooled connection instead of returning it.
            with self._translated(method, url), self._send(method, url, body,
                                                           stream=False) as resp:
                return resp.status_code, b""
        pieces = self.stream(method, url, body)
        status = next(pieces)
        assert isinstance(status, int)
        return status, b"".join(p for p in pieces if not isinstance(p, int))

    def stream(self, method: str, url: str,
               body: bytes | None = None) -> Generator[int | bytes]:
        """Send one request; yields the status, then the body in pieces as they arrive
        (closing the iterator early abandons the transfer). Errors as :meth:`request`."""
        timeout = self.options.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        what = f"{method} {url}"
        with self._translated(method, url), self._send(method, url, body, stream=True) as resp:
            yield resp.status_code
            for part in resp.iter_content(_READ_STEP):
                yield part
                if deadline is not None and time.monotonic() > deadline:
                    raise StoreTimeoutError(f"{what}: timeout after {timeout:g}s")

    def _send(self, method: str, url: str, body: bytes | None, *,
              stream: bool) -> requests.Response:
        timeout = self.options.timeout
        return self.session().request(
            method, url, data=body, stream=stream, allow_redirects=True,
            timeout=None if timeout is None else (timeout, timeout),
            **self._tls_arguments(),  # type: ignore[arg-type]
        )

    @contextlib.contextmanager
    def _translated(self, method: str, url: str) -> Iterator[None]:
        """requests' and the OS's exceptions as the core's store errors."""
        timeout = self.options.timeout
        what = f"{method} {url}"
        try:
            yield
        except StoreError:
            raise
        except requests.exceptions.RequestException as exc:
            tls = _tls_problem(exc)
            if tls is not None:
                host = urlsplit(url).netloc
                raise StoreError(f"TLS error talking to {host}: {_reason(tls)}") from None
            if _is_timeout(exc):
                raise StoreTimeoutError(f"{what}: timeout after {timeout:g}s") from None
            if isinstance(exc, requests.exceptions.ConnectionError
                          | requests.exceptions.ChunkedEncodingError
                          | requests.exceptions.ContentDecodingError):
                raise StoreConnectionError(f"{what}: {_reason(exc)}") from None
            raise StoreError(f"{what}: {_reason(exc)}") from None
        except OSError as exc:  # e.g. an unreadable certificate file
            raise StoreError(f"{what}: {_reason(exc)}") from None

    def status_error(self, status: int, message: str, body: bytes = b"") -> StoreError:
        """The error for an unexpected status: permission, transient (5xx) or other."""
        detail = _reply_text(body)
        if detail:
            message = f"{message}: {detail}"
        if status in (401, 403):
            return StorePermissionError(message)
        if status >= 500:
            return StoreConnectionError(message)
        return StoreError(message)

    def upload_error(self, status: int, body: bytes) -> StoreError:
        """The error for a refused PUT: the server's reply, with where it came from."""
        detail = _reply_text(body)
        message = (f"{detail} (status {status} from {self.name})" if detail
                   else f"unexpected status code {status} from {self.name}")
        if status in (401, 403):
            return StorePermissionError(message)
        if status >= 500:
            return StoreConnectionError(message)
        return StoreError(message)

    def close(self) -> None:
        """Close pooled connections (a later request opens new ones)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None and self._pid == os.getpid():
            session.close()


class HTTPChunkStore(WritableChunkStore):
    """Chunks at ``<base>/<4hex>/<id><ext>`` on a web server (a chunk-server, nginx, …).

    Reading needs only GET/HEAD (any server publishing a store directory works);
    writing uses PUT and needs a server that accepts it (``chunk-server -w``). HTTP stores
    cannot be listed, so they cannot be pruned.
    """

    #: Capability: get_chunk returns the body as the stored bytes in :attr:`codec`, so
    #: extract decodes them straight into its buffers (docs/plugin-hooks.md).
    returns_stored_bytes = True

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.base = base_url(location.raw)
        self.client = HTTPClient(self.base, self.options, location.raw)

    def url(self, chunk_id: bytes) -> str:
        """The URL of a chunk in this store's format."""
        return self.base + chunk_key(chunk_id, self.codec.extension)

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        status, body = self.client.request("GET", self.url(chunk_id))
        if status == 200:
            return Chunk(chunk_id, encoded=body, codec=self.codec)
        if status == 404:
            raise ChunkMissingError(chunk_id, self)
        raise self.client.status_error(status, f"unexpected status code {status} from {self}",
                                       body)

    def has_chunk(self, chunk_id: bytes) -> bool:
        status, _ = self.client.request("HEAD", self.url(chunk_id))
        if status == 200:
            return True
        if status == 404:
            return False
        raise self.client.status_error(status, f"unexpected status code: {status} from {self}")

    def store_chunk(self, chunk: Chunk) -> None:
        data = chunk.encoded(self.codec)
        status, body = self.client.request("PUT", self.url(chunk.id), bytes(data))
        if status not in (200, 201, 204):
            raise self.client.upload_error(status, body)

    def close(self) -> None:
        self.client.close()


class HTTPIndexStore(WritableIndexStore):
    """Index files at ``<base><name>`` on a web server (an index-server, nginx, …)."""

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.base = base_url(location.raw)
        self.client = HTTPClient(self.base, self.options, location.raw)

    def url(self, name: str) -> str:
        """The URL of index ``name`` (a plain file name; anything else is refused)."""
        return self.base + quote(check_index_name(name))

    def get_index(self, name: str) -> bytes:
        return b"".join(self.iter_index(name))

    def iter_index(self, name: str) -> Iterator[bytes]:
        """Streamed: readers stop at the first thing that cannot be an index."""
        pieces = self.client.stream("GET", self.url(name))
        try:
            status = next(pieces)
            assert isinstance(status, int)  # the first item is the status
            if status == 200:
                yield from pieces  # type: ignore[misc]  # after the status, only bytes
                return
            body = b"".join(p for p in pieces if isinstance(p, bytes))
        finally:
            pieces.close()
        if status == 404:
            raise IndexNotFoundError(f"object {name} missing from store {self.base}")
        raise self.client.status_error(
            status, f"unexpected status code {status} from {self.base}{name}", body)

    def has_index(self, name: str) -> bool:
        status, _ = self.client.request("HEAD", self.url(name))
        if status == 200:
            return True
        if status == 404:
            return False
        raise self.client.status_error(
            status, f"unexpected status code: {status} from {self.base}{name}")

    def store_index(self, name: str, data: bytes) -> None:
        status, body = self.client.request("PUT", self.url(name), bytes(data))
        if status not in (200, 201, 204):
            raise self.client.upload_error(status, body)

    def close(self) -> None:
        self.client.close()


__all__ = ["HTTPChunkStore", "HTTPClient", "HTTPIndexStore", "base_url"]
