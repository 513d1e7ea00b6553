"""Test support for desync-store-oci: a real registry on 127.0.0.1 and a token server.

* :class:`RegistryServer` runs Debian's ``docker-registry`` (CNCF distribution 2.8)
  on a free port with a throwaway storage directory and deletes enabled, anonymous,
  behind htpasswd Basic auth, or behind token auth; stopped by PID.
* :class:`TokenServer` is a token server in this process (the registry's ``auth:
  token:`` realm): it checks users' passwords (or OAuth2 refresh tokens), and signs
  JWTs with the test certificate of ``shared/testdata`` that the registry trusts.
* :class:`RawRegistry` reads and writes chunk artifacts with plain HTTP requests, as
  the spec describes them (``remote.md`` §8), bypassing the store under test.

(A module with a unique name rather than ``conftest``: the repository has several.)
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from desync_core.testing.fixtures import find_testdata
from desync_core.testing.servers import free_port, stop_process, wait_for_port

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
HTPASSWD = shutil.which("htpasswd") or "/usr/bin/htpasswd"
CERTS = find_testdata() / "cmd" / "desync" / "testdata"
SERVICE = "desync-test-registry"
ISSUER = "desync-test-issuer"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT = "application/vnd.desync.chunk.v1"
EMPTY = b"{}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A registry token server (the distribution token spec) in a thread.

    Args:
        users: passwords by user name; every user gets every action it asks for.
        refresh_tokens: user names by OAuth2 refresh token (identity tokens).
    """

    def __init__(self, users: dict[str, str], refresh_tokens: dict[str, str] | None = None):
        self.users = users
        self.refresh_tokens = refresh_tokens or {}
        self.requests = 0
        key_pem = (CERTS / "server.key").read_bytes()
        self._key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate((CERTS / "server.crt").read_bytes())
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = server._basic_user(self.headers.get("Authorization", ""))
                self._answer(user, query.get("scope", [""])[0])

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                token = form.get("refresh_token", [""])[0]
                user = server.refresh_tokens.get(token) if token else None
                self._answer(user if user else False, form.get("scope", [""])[0])

            def _answer(self, user: str | bool | None, scope: str) -> None:
                server.requests += 1
                if user is False:  # credentials given and wrong
                    body = b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}'
                    status = 401
                else:
                    token = server.mint(scope, user if isinstance(user, str) else "")
                    body = json.dumps({"token": token, "expires_in": 300}).encode()
                    status = 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def _basic_user(self, header: str) -> str | bool | None:
        """The authenticated user; None for anonymous; False for wrong credentials."""
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password and password else False

    def mint(self, scope: str, user: str) -> str:
        """A signed token granting ``scope`` (``repository:name:a,b``) to ``user``;
        anonymous users get no access at all."""
        access = []
        if user and scope.startswith("repository:"):
            name, actions = scope.split(":", 1)[1].rsplit(":", 1)
            access.append({"type": "repository", "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self._x5c}
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(),  # type: ignore[union-attr,call-arg]
                                   hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def stop(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()


class RegistryServer:
    """A real ``docker-registry`` on 127.0.0.1 with throwaway storage.

    Args:
        directory: where its config and data go.
        basic_users: enable htpasswd Basic auth for these users (name → password).
        token: enable token auth against this token server.
        tls: serve HTTPS with the test server certificate (signed by ``ca.crt``).
    """

    def __init__(self, directory: Path, basic_users: dict[str, str] | None = None,
                 token: TokenServer | None = None, tls: bool = False) -> None:
        self.tls = tls
        self.directory = directory
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        config = [
            "version: 0.1",
            "log:", "  level: error", "  accesslog:", "    disabled: true",
            "storage:", "  filesystem:", f"    rootdirectory: {directory / 'data'}",
            "  delete:", "    enabled: true",
            "http:", f"  addr: 127.0.0.1:{self.port}",
        ]
        if tls:
            config += ["  tls:", f"    certificate: {CERTS / 'server.crt'}",
                       f"    key: {CERTS / 'server.key'}"]
        if basic_users:
            htpasswd = directory / "htpasswd"
            lines = [subprocess.run([HTPASSWD, "-Bbn", user, password], check=True,
                                    capture_output=True, text=True).stdout.strip()
                     for user, password in basic_users.items()]
            htpasswd.write_text("\n".join(lines) + "\n")
            config += ["auth:", "  htpasswd:", "    realm: desync-test",
                       f"    path: {htpasswd}"]
        if token is not None:
            config += ["auth:", "  token:", f"    realm: {token.realm}",
                       f"    service: {SERVICE}", f"    issuer: {ISSUER}",
                       f"    rootcertbundle: {CERTS / 'ca.crt'}"]
        (directory / "config.yml").write_text("\n".join(config) + "\n")
        self._log = open(directory / "registry.log", "wb")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen([REGISTRY, "serve", str(directory / "config.yml")],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, proc=self.proc, timeout=20, what="docker-registry")
        except RuntimeError:
            self.stop()
            raise

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def location(self, repository: str) -> str:
        """The store location of a repository: ``oci+http://127.0.0.1:PORT/<repo>``."""
        return f"oci+{self.http_url}/{repository}"

    def log(self) -> str:
        """What the registry printed."""
        return (self.directory / "registry.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop the registry by PID."""
        stop_process(self.proc)
        self._log.close()


class RawRegistry:
    """Chunk artifacts read and written with plain requests (bypassing the store).

    Args:
        base: ``http://127.0.0.1:PORT``.
        repository: the repository.
        authorization: a function giving the ``Authorization`` header for a list of
            actions (None: anonymous).
    """

    def __init__(self, base: str, repository: str, authorization: Any = None) -> None:
        self.base = f"{base}/v2/{repository}/"
        self.authorization = authorization
        self.session = requests.Session()

    def _headers(self, actions: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.authorization is not None:
            headers["Authorization"] = self.authorization(actions)
        return headers

    def push_blob(self, data: bytes) -> str:
        """Upload a blob (POST, then PUT with the digest); returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        resp = self.session.post(self.base + "blobs/uploads/", headers=self._headers("pull,push"),
                                 timeout=30)
        assert resp.status_code == 202, resp.text
        location = urllib.parse.urljoin(self.base, resp.headers["Location"])
        resp = self.session.put(location, params={"digest": digest}, data=data,
                                headers=self._headers("pull,push"), timeout=30)
        assert resp.status_code == 201, resp.text
        return digest

    def put_manifest(self, tag: str, manifest: dict[str, Any]) -> None:
        """PUT a manifest under a tag."""
        resp = self.session.put(self.base + f"manifests/{tag}", data=json.dumps(manifest),
                                headers=self._headers("pull,push", {"Content-Type": MANIFEST}),
                                timeout=30)
        assert resp.status_code == 201, resp.text

    def put(self, tag: str, data: bytes, artifact_type: str = ARTIFACT) -> None:
        """Store ``data`` as a chunk artifact under ``tag`` (``remote.md`` §8)."""
        config = self.push_blob(EMPTY)
        digest = self.push_blob(data)
        self.put_manifest(tag, {
            "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config,
                       "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": digest,
                        "size": len(data)}],
            "annotations": {"org.opencontainers.image.title": tag},
        })

    def manifest(self, tag: str) -> dict[str, Any] | None:
        """The manifest under ``tag``, or None."""
        resp = self.session.get(self.base + f"manifests/{tag}",
                                headers=self._headers("pull", {"Accept": MANIFEST}), timeout=30)
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def get(self, tag: str) -> bytes | None:
        """The blob of the chunk artifact under ``tag``, or None."""
        manifest = self.manifest(tag)
        if manifest is None:
            return None
        resp = self.session.get(self.base + f"blobs/{manifest['layers'][0]['digest']}",
                                headers=self._headers("pull"), timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.content

    def tags(self) -> list[str]:
        """Every tag of the repository."""
        resp = self.session.get(self.base + "tags/list", headers=self._headers("pull"),
                                timeout=30)
        if resp.status_code == 404:
            return []
        assert resp.status_code == 200, resp.text
        return list(resp.json().get("tags") or [])
