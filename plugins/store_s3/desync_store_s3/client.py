"""boto3 clients for S3 stores, shared per process, and the translation of their errors.

One client per endpoint, addressing style, credentials and options serves every store
of the process that uses the same (a chunk store and the index store beside it, the
members of a router): boto3 clients are thread-safe, and the client's urllib3 pool
(``max_pool_connections``) is sized to the store's ``n``, so ``-n`` requests are in
flight over one pool. botocore's own retries are off: the core's ``RetryingStore``
retries what this module reports as :class:`StoreConnectionError`, with desync's
``error-retry`` counting. A forked child builds new clients (sockets are not shared).
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Callable
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.session
from botocore import UNSIGNED

from desync_core.plugin_api import (
    StoreConnectionError,
    StoreError,
    StoreOptions,
    StorePermissionError,
    StoreTimeoutError,
)
from desync_store_s3 import __version__
from desync_store_s3.credentials import Credentials, CredentialsResolver
from desync_store_s3.location import S3Location

#: Error codes that mean the object is not there.
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
#: Error codes that mean the keys or their rights are wrong.
PERMISSION_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
    "ExpiredToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed",
    "InvalidSecurity", "AccountProblem", "AllAccessDisabled", "403", "401", "Forbidden",
})
#: Error codes of transient server trouble (retried like 5xx statuses).
TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "RequestTimeTooSkewed",
                             "InternalError", "ServiceUnavailable", "Throttling"})

# botocore reads these from the environment and ~/.aws/config unless told otherwise;
# desync's S3 client reads neither (credentials and region come from desync's own
# rules), and AWS_PROFILE naming a profile that ~/.aws/config lacks would even fail.
_ISOLATED_SESSION_VARS = {
    "profile": (None, None, None, None),
    "config_file": (None, None, os.devnull, None),
    "credentials_file": (None, None, os.devnull, None),
}

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()
_clients_pid = os.getpid()


def _build_client(location: S3Location, options: StoreOptions, creds: Credentials) -> Any:
    timeout = options.timeout  # None: no timeout
    config = botocore.config.Config(
        signature_version=UNSIGNED if creds.anonymous else "s3v4",
        s3={"addressing_style": location.addressing},
        max_pool_connections=max(1, options.n),
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        # Chunks are hash-verified by the core; CRC32 trailers on every upload would
        # cost CPU and are not understood by every S3 server.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra=f"desync-store-s3/{__version__}",
        # The parameters are built here, not by users; checking them costs CPU per request.
        parameter_validation=False,
        client_cert=((options.client_cert, options.client_key)
                     if options.client_cert else None),
    )
    verify: bool | str = False if options.trust_insecure else (options.ca_cert or True)
    if options.trust_insecure:
        # The user asked for this explicitly; don't warn on every request.
        import urllib3

        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    session = botocore.session.Session(session_vars=_ISOLATED_SESSION_VARS)
    return session.create_client(
        "s3",
        endpoint_url=location.endpoint_url,
        region_name=creds.region or location.default_region(),
        aws_access_key_id=creds.access_key or None,
        aws_secret_access_key=creds.secret_key or None,
        aws_session_token=creds.session_token or None,
        verify=verify,
        config=config,
    )


def shared_client(location: S3Location, options: StoreOptions, creds: Credentials) -> Any:
    """The process's client for this endpoint, credentials and options."""
    global _clients_pid
    key = (location.endpoint_url, location.addressing, creds, options.n, options.timeout,
           options.trust_insecure, options.ca_cert, options.client_cert, options.client_key)
    with _clients_lock:
        if _clients_pid != os.getpid():
            _clients.clear()  # a forked child must not use its parent's sockets
            _clients_pid = os.getpid()
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _build_client(location, options, creds)
        return client


class S3Connection:
    """Requests of one store: its location, options and credentials.

    Args:
        location: the parsed location.
        options: store options (``n``, ``timeout``, TLS).
        resolver: where the credentials come from.
        name: how the store is named in messages.
    """

    def __init__(self, location: S3Location, options: StoreOptions,
                 resolver: CredentialsResolver, name: str) -> None:
        self.location = location
        self.options = options
        self.resolver = resolver
        self.name = name
        self._client: Any = None
        self._creds: Credentials | None = None
        self._pid = 0

    def client(self) -> Any:
        """The shared client, looked up again after a fork or a credentials change."""
        if self._client is None or self._pid != os.getpid() or self.resolver.refreshes:
            try:
                creds = self.resolver.current()
            except StoreError as exc:  # an unusable credentials file
                raise type(exc)(f"store {self.name}: {exc}") from None
            if self._client is None or creds != self._creds or self._pid != os.getpid():
                self._client = shared_client(self.location, self.options, creds)
                self._creds = creds
                self._pid = os.getpid()
        return self._client

    def call(self, method: str, what: str, *, wrap: bool = True, **params: Any) -> Any:
        """``client.<method>(Bucket=…, **params)`` with errors translated (:meth:`translate`)."""
        fn: Callable[..., Any] = getattr(self.client(), method)
        try:
            return fn(Bucket=self.location.bucket, **params)
        except Exception as exc:  # every failure is translated here
            raise self.translate(exc, what, wrap=wrap) from None

    def read_body(self, response: dict[str, Any], what: str, *, wrap: bool = True) -> bytes:
        """The whole body of a GetObject response (a short read is a transport error)."""
        body = response["Body"]
        try:
            data = body.read()
        except Exception as exc:
            body.close()  # a fully read body has gone back to the pool already
            raise self.translate(exc, what, wrap=wrap) from None
        length = response.get("ContentLength")
        if length is not None and len(data) != length:
            raise self._error(StoreConnectionError,
                              f"short read ({len(data)} of {length} bytes)", what, wrap)
        return bytes(data)

    def translate(self, exc: BaseException, what: str, *, wrap: bool = True) -> BaseException:
        """The core error for a boto3/botocore failure of request ``what``:

        * ``NoSuchKey``/404 → :class:`FileNotFoundError` (the caller's "missing");
        * ``NoSuchBucket`` → ``bucket '<b>' does not exist``;
        * refused keys or rights (403, ``InvalidAccessKeyId``…) → :class:`StorePermissionError`;
        * 5xx, throttling, refused/reset/cut connections → :class:`StoreConnectionError`,
          timeouts → :class:`StoreTimeoutError` (both retried by the core);
        * TLS failures and anything else → :class:`StoreError` (not retried).

        Messages name the store and the request. With ``wrap=False`` the OS-error
        kinds (permission, connection) carry only the cause: the key-value store base
        adds the store and the chunk to those itself.
        """
        if isinstance(exc, botocore.exceptions.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = self._scrub(" ".join(str(err.get("Message") or "").split()))
            if code in MISSING_CODES or (status == 404 and code != "NoSuchBucket"):
                return FileNotFoundError(what)
            if code == "NoSuchBucket":
                return StoreError(f"bucket '{self.location.bucket}' does not exist")
            detail = f"{code}: {message}" if message else (code or f"status {status}")
            if code in PERMISSION_CODES or status in (401, 403):
                return self._error(StorePermissionError, detail, what, wrap)
            if code in TRANSIENT_CODES or status >= 500:
                return self._error(StoreConnectionError, detail, what, wrap)
            return self._error(StoreError, detail, what, wrap)
        if isinstance(exc, StoreError):
            return exc
        reason = self._scrub(" ".join(str(exc).split()) or type(exc).__name__)
        if isinstance(exc, botocore.exceptions.SSLError):
            # "SSL validation failed for <url> [SSL: X] why (_ssl.c:1006)" -> "TLS: why"
            m = re.search(r"\[SSL[^\]]*\]\s*(.*?)\s*(\(_ssl\.c:\d+\))?$", reason)
            return self._error(StoreError, f"TLS: {m.group(1) if m else reason}", what,
                               wrap)  # retrying cannot fix a certificate
        if isinstance(exc, botocore.exceptions.ReadTimeoutError
                      | botocore.exceptions.ConnectTimeoutError):
            return self._error(StoreTimeoutError, reason, what, wrap)
        if isinstance(exc, botocore.exceptions.ConnectionError
                      | botocore.exceptions.ResponseStreamingError
                      | botocore.exceptions.IncompleteReadError
                      | ConnectionError | TimeoutError):
            return self._error(StoreConnectionError, reason, what, wrap)
        if not isinstance(exc, botocore.exceptions.BotoCoreError | OSError):
            reason = f"{type(exc).__name__}: {reason}"
        return self._error(StoreError, reason, what, wrap)

    def _error(self, cls: type[StoreError], detail: str, what: str, wrap: bool) -> StoreError:
        if wrap or not issubclass(cls, OSError):
            return cls(f"store {self.name}: {what}: {detail}")
        return cls(detail)

    def _scrub(self, text: str) -> str:
        creds = self._creds
        if creds is not None:
            for secret in creds.secrets():
                text = text.replace(secret, "***")
        return text


__all__ = ["S3Connection", "shared_client"]
