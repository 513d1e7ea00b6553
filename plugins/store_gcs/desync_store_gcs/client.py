"""The connection to one Google Cloud Storage bucket, shared by the chunk and index stores.

:class:`BucketClient` owns a ``google-cloud-storage`` client, made lazily in each process
(stores pickle as their location and options; a forked or spawned worker makes its own):

* credentials: with ``STORAGE_EMULATOR_HOST`` set, anonymous ones (an emulator checks
  none); otherwise Google's Application Default Credentials
  (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's user credentials, the metadata server);
* an HTTP session whose connection pool holds ``n`` (``-n``) connections, so that the
  ``n`` requests the core keeps in flight each have one;
* no retries of the library's own: every call passes ``retry=None``, transient failures
  become :class:`StoreConnectionError` and the core's ``RetryingStore`` retries them
  ``error-retry`` times in all (``store.md`` §5.1);
* the store's ``timeout`` on every request.

Failures are translated here, once (``remote.md`` §7): a missing object is
``FileNotFoundError`` (the stores turn it into a missing chunk or index), but only
after the bucket itself was seen to exist — GCS answers 404 for both, and a missing
bucket is an error naming the bucket, not a store full of missing chunks.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import google.auth
import google.auth.exceptions
import google_crc32c
import requests
import requests.adapters
from google.api_core import exceptions as api_exceptions
from google.api_core.client_info import ClientInfo
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage  # type: ignore[import-untyped,unused-ignore]

from desync_core.plugin_api import (
    StoreConnectionError,
    StoreError,
    StoreOptions,
    StorePermissionError,
    StoreTimeoutError,
    UsageError,
)
from desync_store_gcs import __version__

T = TypeVar("T")

#: Content type of chunk objects (desync uses it for every chunk, compressed or not).
CHUNK_CONTENT_TYPE = "application/zstd"
#: Content type of index objects.
INDEX_CONTENT_TYPE = "application/octet-stream"
#: The library's scopes: read, write and delete objects.
SCOPES = storage.Client.SCOPE
#: Longest server message quoted in an error.
_MAX_DETAIL = 200
#: GCS bucket names: lower-case letters, digits, ``-``, ``_`` and ``.``, 3-222 chars.
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
#: HTTP statuses worth another attempt.
_TRANSIENT = (408, 429)


def split_location(raw: str) -> tuple[str, str]:
    """Bucket and object prefix of ``gs://bucket[/prefix]`` (``remote.md`` §7).

    The prefix is the path with leading and trailing ``/`` trimmed, plus ``/`` when it
    is not empty: ``gs://b/x/y/`` → (``b``, ``x/y/``); ``gs://b`` → (``b``, ``""``).

    Raises:
        UsageError: no bucket, or not a valid bucket name.
    """
    rest = raw.split("://", 1)[1] if "://" in raw else raw
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    bucket, _, path = rest.partition("/")
    if not bucket:
        raise UsageError(f"expected bucket name in gs:// location {raw!r}")
    if not _BUCKET_RE.fullmatch(bucket):
        raise UsageError(f"invalid bucket name {bucket!r} in {raw!r} (lower-case letters, "
                         "digits, '-', '_' and '.')")
    prefix = path.strip("/")
    return bucket, prefix + "/" if prefix else ""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (requests → urllib3 → socket), outermost first."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if any(e is s for s in seen):
            continue
        seen.append(e)
        yield e
        todo.extend(x for x in (getattr(e, "reason", None), e.__cause__, e.__context__,
                                *e.args) if isinstance(x, BaseException))


def _detail(exc: BaseException) -> str:
    """The server's message (or the socket error's), on one line and not too long."""
    if isinstance(exc, requests.exceptions.RequestException):
        for e in reversed(list(_causes(exc))):  # innermost first
            if isinstance(e, OSError) and e.strerror:
                return e.strerror
        m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
        if m:
            return m.group(1).strip()
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "…"


def _join(*parts: str) -> str:
    return ": ".join(p for p in parts if p)


class BucketClient:
    """Requests to one bucket on behalf of a store.

    Args:
        bucket: the bucket name.
        options: the store's options (``n`` sizes the pool, ``timeout`` bounds requests).
        name: the store's location, for messages.
        name_objects: name the object in error messages (see :meth:`error`).
    """

    def __init__(self, bucket: str, options: StoreOptions, name: str, *,
                 name_objects: bool = True) -> None:
        self.bucket_name = bucket
        self.options = options
        self.name = name
        self.name_objects = name_objects
        self._bucket: storage.Bucket | None = None
        self._session: requests.Session | None = None
        self._endpoint = ""
        self._pid = 0
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()
        #: the bucket was seen to exist (or could not be checked: permission)
        self._bucket_known = False
        #: the bucket was seen not to exist: every later request fails at once
        self._bucket_missing = False

    # -- connection ------------------------------------------------------------------

    def bucket(self) -> storage.Bucket:
        """The bucket handle, made on first use in this process."""
        if self._lock_pid != os.getpid():
            # A forked child may have inherited the lock held by another thread.
            self._lock = threading.Lock()
            self._lock_pid = os.getpid()
        with self._lock:
            if self._bucket is None or self._pid != os.getpid():
                # A forked child must not share its parent's pooled sockets.
                self._bucket = self._connect()
                self._pid = os.getpid()
            return self._bucket

    def _connect(self) -> storage.Bucket:
        # The library fetches bucket metadata in a background thread on first use for
        # its tracing attributes: an extra request (and a thread) per process that
        # tracing-less runs never need.
        os.environ.setdefault("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "true")
        project: str | None
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            credentials: Any = AnonymousCredentials()
            project = os.environ.get("GOOGLE_CLOUD_PROJECT") or None
        else:
            try:
                credentials, project = google.auth.default(scopes=SCOPES)
            except google.auth.exceptions.GoogleAuthError as exc:
                raise StorePermissionError(
                    f"no Google credentials for bucket '{self.bucket_name}': {_detail(exc)}"
                ) from None
        session = AuthorizedSession(credentials)
        pool = max(1, self.options.n)
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool,
                                                max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        # Chunks are compressed already: no transport compression.
        session.headers["Accept-Encoding"] = "identity"
        session.headers["User-Agent"] = f"desync-store-gcs/{__version__}"
        self._session = session
        client = storage.Client(
            project=project, credentials=credentials, _http=session,
            client_info=ClientInfo(user_agent=f"desync-store-gcs/{__version__}"),
        )
        self._endpoint = client.api_endpoint.rstrip("/")
        return client.bucket(self.bucket_name)

    def close(self) -> None:
        """Drop the pooled connections (a later request reconnects)."""
        with self._lock:
            session, self._session, self._bucket = self._session, None, None
        if session is not None and self._pid == os.getpid():
            session.close()

    # -- requests --------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one library call, translating its failures (see the module docstring)."""
        try:
            return fn()
        except api_exceptions.NotFound:
            self._require_bucket()
            raise FileNotFoundError(what) from None
        except Exception as exc:
            raise self.error(what, exc) from None

    def error(self, what: str, exc: BaseException) -> StoreError:
        """The core error for a failed request: ``bucket '<b>'[: <what>]: <reason>``.

        ``what`` (``reading dir/x.caibx``) is left out when :attr:`name_objects` is off:
        the chunk store's messages name the chunk and the store already.
        """
        if isinstance(exc, StoreError):
            return exc
        bucket = f"bucket '{self.bucket_name}'"
        what = what if self.name_objects else ""
        if isinstance(exc, api_exceptions.Forbidden | api_exceptions.Unauthorized):
            return StorePermissionError(_join(f"permission denied by {bucket}", what,
                                              _detail(exc)))
        if isinstance(exc, api_exceptions.GoogleAPICallError):
            code = exc.code or 0
            if code >= 500 or code in _TRANSIENT:
                return StoreConnectionError(_join(bucket, what, _detail(exc)))
            return StoreError(_join(bucket, what, _detail(exc)))
        if isinstance(exc, requests.exceptions.Timeout):
            timeout = self.options.timeout
            return StoreTimeoutError(_join(bucket, what, f"timeout after {timeout:g}s"))
        if isinstance(exc, requests.exceptions.RequestException | ConnectionError
                      | TimeoutError):
            return StoreConnectionError(_join(bucket, what, _detail(exc)))
        if isinstance(exc, google.auth.exceptions.TransportError):
            return StoreConnectionError(_join(bucket, "getting credentials", _detail(exc)))
        if isinstance(exc, google.auth.exceptions.GoogleAuthError):
            return StorePermissionError(_join(bucket, "credentials refused", _detail(exc)))
        return StoreError(_join(bucket, what, _detail(exc)))

    def _require_bucket(self) -> None:
        """Check, once, that a 404 meant "no such object" and not "no such bucket"."""
        if self._bucket_known:
            return
        if self._bucket_missing:
            raise StoreError(f"bucket '{self.bucket_name}' does not exist")
        try:
            exists = self.bucket().exists(retry=None, timeout=self.options.timeout)
        except api_exceptions.Forbidden:
            exists = True  # may read objects but not the bucket's metadata: can't tell
        except Exception as exc:
            raise self.error("looking up the bucket", exc) from None
        if not exists:
            self._bucket_missing = True
            raise StoreError(f"bucket '{self.bucket_name}' does not exist")
        self._bucket_known = True

    # Reads, lookups and writes of single objects are the hot path (one per chunk):
    # they are sent as plain JSON-API requests on the client's authorized session,
    # which costs a third less CPU per request than the library's media helpers
    # (the client shares two cores with everything else). Listing, deleting and the
    # bucket check use the library.

    def _request(self, method: str, path: str, what: str, *, params: dict[str, str],
                 data: bytes | None = None, headers: dict[str, str] | None = None,
                 stream: bool = False) -> requests.Response:
        """One request to ``<endpoint><path>``; failures translated (404 →
        FileNotFoundError once the bucket is known to exist)."""
        if self._bucket_missing:  # a make does not send thousands of doomed requests
            raise StoreError(f"bucket '{self.bucket_name}' does not exist")
        self.bucket()  # connects (per process)
        session, endpoint = self._session, self._endpoint
        assert session is not None
        try:
            resp = session.request(method, endpoint + path, params=params, data=data,
                                   headers=headers, timeout=self.options.timeout,
                                   stream=stream)
        except Exception as exc:
            raise self.error(what, exc) from None
        if resp.status_code < 300:
            return resp
        failure = api_exceptions.from_http_response(resp)
        if isinstance(failure, api_exceptions.NotFound):
            self._require_bucket()
            raise FileNotFoundError(what)
        raise self.error(what, failure)

    def _object_path(self, name: str) -> str:
        return f"/storage/v1/b/{self.bucket_name}/o/{quote(name, safe='')}"

    def download(self, name: str) -> bytes:
        """The bytes of object ``name``; FileNotFoundError if it does not exist.

        Stored bytes as they are (no decompressive transcoding): chunks are verified by
        their hash, indexes by their structure.
        """
        resp = self._request("GET", "/download" + self._object_path(name), f"reading {name}",
                             params={"alt": "media"})
        return resp.content

    def iter_download(self, name: str) -> Iterator[bytes]:
        """:meth:`download` in pieces as they arrive; closing the iterator early
        abandons the transfer (index reads stop at the first thing that is wrong)."""
        what = f"reading {name}"
        resp = self._request("GET", "/download" + self._object_path(name), what,
                             params={"alt": "media"}, stream=True)
        try:
            yield from resp.iter_content(256 * 1024)
        except Exception as exc:
            raise self.error(what, exc) from None
        finally:
            resp.close()

    def exists(self, name: str) -> bool:
        """Whether object ``name`` exists (its attributes can be read)."""
        try:
            self._request("GET", self._object_path(name), f"looking up {name}",
                          params={"fields": "name"})
        except FileNotFoundError:
            return False
        return True

    def upload(self, name: str, data: bytes | bytearray | memoryview,
               content_type: str) -> None:
        """Create or replace object ``name`` in one request (a multipart upload).

        The object's CRC32C travels in its metadata, so the server refuses a body that
        did not arrive whole: a writer killed mid-upload leaves no object (the storage
        emulator would otherwise keep the truncated body). No ``ifGenerationMatch=0``
        precondition: a cache repair and ``verify -r`` must be able to replace a
        damaged chunk, and two writers of one chunk write the same bytes.
        """
        payload = data if isinstance(data, bytes) else bytes(data)
        checksum = base64.b64encode(google_crc32c.Checksum(payload).digest()).decode("ascii")
        meta = json.dumps({"name": name, "contentType": content_type, "crc32c": checksum})
        boundary = secrets.token_hex(16)
        body = b"".join((
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            meta.encode(),
            f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode(),
            payload,
            f"\r\n--{boundary}--\r\n".encode(),
        ))
        self._request("POST", f"/upload/storage/v1/b/{self.bucket_name}/o",
                      f"writing {name}", params={"uploadType": "multipart"}, data=body,
                      headers={"Content-Type": f"multipart/related; boundary={boundary}"})

    def delete(self, name: str) -> None:
        """Delete object ``name``; FileNotFoundError if it does not exist."""
        blob = self.bucket().blob(name)
        self._call(f"deleting {name}", lambda: blob.delete(
            retry=None, timeout=self.options.timeout))

    def list(self, prefix: str) -> Iterator[str]:
        """Names of every object under ``prefix`` (recursive; names only, paged)."""
        bucket = self.bucket()
        pages = self._call("listing", lambda: bucket.client.list_blobs(
            bucket, prefix=prefix or None, retry=None, timeout=self.options.timeout,
            page_size=1000, fields="items(name),nextPageToken"))
        iterator = iter(pages)
        while True:
            blob = self._call("listing", lambda: next(iterator, None))
            if blob is None:
                return
            yield blob.name


__all__ = ["CHUNK_CONTENT_TYPE", "INDEX_CONTENT_TYPE", "BucketClient", "split_location"]
