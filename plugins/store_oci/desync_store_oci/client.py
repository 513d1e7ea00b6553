"""The OCI distribution API over a pooled ``requests`` session, with registry auth.

:class:`RegistryClient` sends requests for one repository and answers them:

* **auth**: a request is sent with whatever the client learnt so far; a ``401`` with
  ``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` makes it fetch a token from
  the realm (with the store's credentials as Basic auth, or anonymously; an identity
  token is exchanged with an OAuth2 ``refresh_token`` grant) and send again; ``Basic``
  makes it send the credentials. Tokens are cached per scope (pull, push, delete) and
  fetched again when the registry refuses one. Still ``401`` afterwards means wrong
  credentials: :class:`StorePermissionError`, which names the store and where the
  credentials came from, never the secret.
* **errors**: transport failures, ``408``, ``429`` and ``5xx`` become
  :class:`StoreConnectionError` (``StoreTimeoutError`` for timeouts), which the core's
  ``RetryingStore`` retries with the store's ``error-retry`` options; ``401``/``403``
  :class:`StorePermissionError`; TLS failures and other statuses :class:`StoreError`.
  The client never retries by itself.
"""

from __future__ import annotations

import base64
import os
import re
import ssl
import threading
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

import requests
import requests.adapters
import requests.utils
import urllib3

from desync_core.plugin_api import (
    StoreConnectionError,
    StoreError,
    StoreOptions,
    StorePermissionError,
    StoreTimeoutError,
    environment_ca_bundle,
    exception_chain,
)
from desync_store_oci import __version__
from desync_store_oci.credentials import Credential, CredentialSource

USER_AGENT = f"desync-store-oci/{__version__}"
#: Statuses worth another attempt (oras-go's default retry predicate).
TRANSIENT_STATUSES = frozenset({408, 429})
#: Longest registry reply quoted in an error message.
_MAX_DETAIL = 300
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ``("bearer", {"realm": …, "service": …})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def registry_message(resp: requests.Response) -> str:
    """The registry's error text (``{"errors":[{"code","message"}]}``), one line."""
    try:
        errors = resp.json().get("errors") or []
        text = "; ".join(
            f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
            for e in errors if isinstance(e, dict)
        )
    except (ValueError, AttributeError):
        text = resp.text if resp.headers.get("Content-Type", "").startswith("text/") else ""
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "…"




def _transport_error(exc: requests.exceptions.RequestException, what: str,
                     timeout: float | None) -> StoreError:
    """The core error for a failed request (TLS problems are not retried)."""
    for e in reversed(exception_chain(exc)):
        if isinstance(e, ssl.SSLError) and not isinstance(
                e, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            if isinstance(e, ssl.SSLCertVerificationError) and e.verify_message:
                reason = f"certificate verify failed: {e.verify_message}"
            else:
                reason = str(e.reason or e).lower().replace("_", " ")
            return StoreError(f"{what}: TLS error: {reason}")
    if isinstance(exc, requests.exceptions.Timeout):
        return StoreTimeoutError(f"{what}: timeout after {timeout:g}s")
    reason = next((e.strerror for e in reversed(exception_chain(exc))
                   if isinstance(e, OSError) and e.strerror), None) or str(exc)
    return StoreConnectionError(f"{what}: {reason}")


class RegistryClient:
    """Requests to one repository of a registry.

    Args:
        scheme: ``https`` or ``http``.
        host: ``registry[:port]``.
        repository: the repository name (``org/repo``).
        options: store options (TLS, timeout, pool size ``n``).
        credentials: where credentials come from.
        name: how the store is named in messages.
    """

    def __init__(self, scheme: str, host: str, repository: str, options: StoreOptions,
                 credentials: CredentialSource, name: str) -> None:
        self.base = f"{scheme}://{host}/v2/{repository}/"
        self.host = host
        self.repository = repository
        self.options = options
        self.credentials = credentials
        self.name = name
        self._session: requests.Session | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self._lock_pid = os.getpid()
        self._credential: Credential | None = None
        # What the registry asked for: "bearer" (realm, service) or "basic".
        self._scheme = ""
        self._realm: dict[str, str] = {}
        self._tokens: dict[str, str] = {}      # action → bearer token

    # -- session ------------------------------------------------------------------------

    def _locked(self) -> threading.Lock:
        if self._lock_pid != os.getpid():
            # A forked child may have inherited the lock held; it is single-threaded now.
            self._lock = threading.Lock()
            self._auth_lock = threading.Lock()
            self._lock_pid = os.getpid()
        return self._lock

    def session(self) -> requests.Session:
        """The pooled session, created on first use and again in a forked child."""
        with self._locked():
            if self._session is None or self._pid != os.getpid():
                self._session = self._new_session()
                self._pid = os.getpid()
            return self._session

    def _new_session(self) -> requests.Session:
        opts = self.options
        opts.check_files(self.name)
        session = requests.Session()
        # Resolve proxy and CA settings once, not on every request.
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(self.base))
        adapter = requests.adapters.HTTPAdapter(pool_connections=4,
                                                pool_maxsize=max(1, opts.n), max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        if opts.trust_insecure:
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        return session

    def _send_args(self) -> dict[str, Any]:
        opts = self.options
        system: bool | str = environment_ca_bundle() or True
        timeout = opts.timeout
        return {
            "verify": False if opts.trust_insecure else opts.ca_cert or system,
            "cert": (opts.client_cert, opts.client_key) if opts.client_cert else None,
            "timeout": None if timeout is None else (timeout, timeout),
        }

    def close(self) -> None:
        """Close pooled connections (a later request opens new ones)."""
        with self._locked():
            session, self._session = self._session, None
        if session is not None and self._pid == os.getpid():
            session.close()

    # -- requests -----------------------------------------------------------------------

    def url(self, path: str) -> str:
        """The URL of ``path`` relative to ``/v2/<repository>/`` (or an absolute one)."""
        return urljoin(self.base, path)

    def request(self, method: str, path: str, *, action: str, what: str,
                params: Mapping[str, str] | None = None, data: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> requests.Response:
        """Send one request (authenticating when the registry asks) and read the reply.

        Args:
            action: the repository action it needs: ``pull``, ``push`` or ``delete``.
            what: what is being done, for messages (``GET manifest <tag>``).

        Returns the response whatever its status, except that statuses only another
        attempt or other credentials can fix are raised (see :meth:`check`).
        """
        url = self.url(path)
        hdrs = dict(headers or {})
        sent = self._authorization(action)
        resp = self._send(method, url, params, data, hdrs, sent, what)
        if resp.status_code == 401:
            self._authenticate(resp, action, what, sent)
            resp = self._send(method, url, params, data, hdrs,
                              self._authorization(action), what)
            if resp.status_code == 401:
                raise self._denied(what, resp)
        if resp.status_code == 403:
            raise self._denied(what, resp)
        if resp.status_code in TRANSIENT_STATUSES or resp.status_code >= 500:
            raise StoreConnectionError(self._status_text(what, resp))
        return resp

    def _send(self, method: str, url: str, params: Mapping[str, str] | None,
              data: bytes | None, headers: dict[str, str], auth: str,
              what: str) -> requests.Response:
        if auth:
            headers["Authorization"] = auth
        else:
            headers.pop("Authorization", None)
        try:
            # Redirects (blobs on a storage backend) are followed; requests drops the
            # Authorization header when the host changes.
            return self.session().request(method, url, params=params, data=data,
                                          headers=headers, allow_redirects=True,
                                          **self._send_args())
        except requests.exceptions.RequestException as exc:
            raise _transport_error(exc, f"store {self.name}: {what}",
                                   self.options.timeout) from None

    def _status_text(self, what: str, resp: requests.Response) -> str:
        detail = registry_message(resp)
        text = f"store {self.name}: {what}: {resp.status_code} {resp.reason}"
        return f"{text}: {detail}" if detail else text

    def error(self, what: str, resp: requests.Response) -> StoreError:
        """The error for an unexpected status."""
        return StoreError(self._status_text(what, resp))

    # -- authentication -----------------------------------------------------------------

    def credential(self) -> Credential:
        """The credential for this registry (helpers run once, on first need)."""
        if self._credential is None:
            try:
                self._credential = self.credentials.for_host(self.host)
            except StoreError as exc:  # a credential helper failed
                raise StoreError(f"store {self.name}: {exc}") from None
        return self._credential

    def _authorization(self, action: str) -> str:
        if self._scheme == "basic":
            cred = self.credential()
            raw = f"{cred.username}:{cred.secret}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        if self._scheme == "bearer":
            token = self._tokens.get(action)
            return f"Bearer {token}" if token else ""
        return ""

    def _authenticate(self, resp: requests.Response, action: str, what: str,
                      sent: str) -> None:
        """Learn from a 401 to a request sent with ``sent``: fetch a token for
        ``action``, or switch to Basic auth."""
        scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
        self._locked()  # (re)creates the locks in a forked child
        with self._auth_lock:
            current = self._authorization(action)
            if current and current != sent:
                return  # another thread has just authenticated: use its answer
            if scheme == "basic":
                if self.credential().anonymous:
                    raise self._denied(what, resp)
                if self._scheme == "basic":  # the credentials were sent and refused
                    raise self._denied(what, resp)
                self._scheme = "basic"
                return
            if scheme != "bearer" or "realm" not in params:
                raise self._denied(what, resp)
            self._scheme = "bearer"
            self._realm = {"realm": params["realm"], "service": params.get("service", "")}
            # The scope the registry names (it knows what the request needs).
            scope = params.get("scope") or self._default_scope(action)
            self._tokens[action] = self._fetch_token(scope, what)

    def _default_scope(self, action: str) -> str:
        actions = {"pull": "pull", "push": "pull,push", "delete": "delete"}[action]
        return f"repository:{self.repository}:{actions}"

    def _fetch_token(self, scope: str, what: str) -> str:
        """A bearer token for ``scope`` from the realm (credentials as Basic auth, or an
        identity token exchanged with a refresh_token grant)."""
        realm, service = self._realm["realm"], self._realm["service"]
        cred = self.credential()
        try:
            if cred.refresh_token:
                form = {"grant_type": "refresh_token", "refresh_token": cred.refresh_token,
                        "service": service, "scope": scope, "client_id": "desync"}
                resp = self.session().post(realm, data=form, **self._send_args())
            else:
                query = {"service": service, "scope": scope} if service else {"scope": scope}
                auth = None if cred.anonymous else (cred.username, cred.secret)
                resp = self.session().get(realm, params=query, auth=auth, **self._send_args())
        except requests.exceptions.RequestException as exc:
            raise _transport_error(exc, f"store {self.name}: token from {realm}",
                                   self.options.timeout) from None
        if resp.status_code in (401, 403):
            raise self._denied(f"{what}: token server {realm}", resp)
        if resp.status_code in TRANSIENT_STATUSES or resp.status_code >= 500:
            raise StoreConnectionError(self._status_text(f"token from {realm}", resp))
        try:
            doc = resp.json()
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if resp.status_code != 200 or not isinstance(token, str) or not token:
            raise StoreError(self._status_text(f"token from {realm}", resp)
                             if resp.status_code != 200
                             else f"store {self.name}: token server {realm} sent no token")
        return token

    def _denied(self, what: str, resp: requests.Response) -> StorePermissionError:
        cred = self.credential()
        if cred.anonymous:
            return StorePermissionError(
                f"store {self.name}: {what}: the registry requires credentials (set "
                "DESYNC_OCI_USERNAME/DESYNC_OCI_PASSWORD, oci-credentials in the config "
                "file, or docker login): "
                f"{resp.status_code} {resp.reason}")
        who = (f"as {cred.username!r} ({self.credentials.origin})" if cred.username
               else f"({self.credentials.origin})")
        detail = registry_message(resp)
        failure = "access denied" if resp.status_code == 403 else "authentication failed"
        text = (f"store {self.name}: {what}: {failure} {who}: "
                f"{resp.status_code} {resp.reason}")
        return StorePermissionError(f"{text}: {detail}" if detail else text)


__all__ = ["TRANSIENT_STATUSES", "RegistryClient", "parse_challenge", "registry_message"]
