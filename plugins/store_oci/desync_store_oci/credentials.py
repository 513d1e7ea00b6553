"""Where an OCI store's credentials come from (``remote.md`` §8, ``store.md`` §5/§6).

In desync's order, the first that applies wins:

1. ``DESYNC_OCI_USERNAME`` / ``DESYNC_OCI_PASSWORD`` (a password without a username is
   an error: registries that take a token as the password with any username make that
   an easy mistake, better reported than surfacing later as a bare 401);
2. the ``oci-credentials`` section of the config file, keyed by store location with
   glob patterns (``{"oci+https://ghcr.io/me/*": {"username": "u", "secret": "s"}}``);
3. Docker's config file (``$DOCKER_CONFIG/config.json``, else
   ``~/.docker/config.json``): a credential helper named by ``credHelpers`` for the
   registry host or by ``credsStore``, else the ``auths`` entry of the host (what
   ``docker login`` and ``oras login`` write);
4. anonymous access.

Docker's file is read when the store opens (a malformed file is an error, not silent
anonymity); credential helpers run only when the registry asks for credentials.
Secrets never appear in ``repr`` or in error messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from desync_core.plugin_api import ConfigError, Context, StoreError, load_config, opening_context

SECTION = "oci-credentials"
#: A credential helper's answer that it holds nothing for the host.
_HELPER_NOT_FOUND = "credentials not found in native keychain"
#: How long a credential helper may take (it may talk to a keyring daemon).
_HELPER_TIMEOUT = 60.0
#: Docker Hub's historical server address, under which its credentials are saved.
_DOCKER_HUB = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credential:
    """A username and secret for one registry (both empty: anonymous).

    ``refresh_token`` is an OAuth2 identity token (Docker's ``identitytoken``, or a
    helper's answer with the username ``<token>``), exchanged at the token server.
    """

    username: str = ""
    secret: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)

    @property
    def anonymous(self) -> bool:
        """No credentials at all."""
        return not (self.username or self.secret or self.refresh_token)


ANONYMOUS = Credential()


def validate(entry: dict[str, Any], where: str) -> None:
    """Check one ``oci-credentials`` entry (the config-section validator).

    Raises:
        ConfigError: ``username`` or ``secret`` is not a string.
    """
    for key in ("username", "secret"):
        if not isinstance(entry.get(key, ""), str):
            raise ConfigError(f"{where}: {key!r} must be a string")


def _docker_config_path() -> str | None:
    """Docker's config file, or None when its place cannot be determined (no HOME:
    containers with arbitrary uids, systemd units, cron jobs)."""
    directory = os.environ.get("DOCKER_CONFIG")
    if directory:
        return os.path.join(directory, "config.json")
    home = os.path.expanduser("~")
    if home == "~" or not home:
        return None
    return os.path.join(home, ".docker", "config.json")


def _normalize_host(server: str) -> str:
    """``https://host:port/v1/`` → ``host:port`` (keys of ``auths`` vary in form)."""
    for prefix in ("https://", "http://"):
        if server.startswith(prefix):
            server = server[len(prefix):]
            break
    return server.split("/", 1)[0]


@dataclass(frozen=True)
class DockerCredentials:
    """The credential parts of Docker's config file.

    Attributes:
        path: the file (for messages).
        auths: ``auths`` entries by normalized host.
        helpers: ``credHelpers``: helper name by registry host.
        default_helper: ``credsStore``: the helper for every other host.
    """

    path: str
    auths: tuple[tuple[str, Credential], ...] = ()
    helpers: tuple[tuple[str, str], ...] = ()
    default_helper: str = ""

    @classmethod
    def load(cls, path: str) -> DockerCredentials:
        """Read ``path``; a missing file holds no credentials.

        Raises:
            ConfigError: the file exists but is unusable.
        """
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"failed to load docker credential config {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"failed to load docker credential config {path}: "
                              "not a JSON object")
        auths: dict[str, Credential] = {}
        for server, entry in (doc.get("auths") or {}).items():
            if isinstance(entry, dict):
                auths.setdefault(_normalize_host(server), _auth_entry(entry, path, server))
        helpers = doc.get("credHelpers") or {}
        return cls(
            path,
            tuple(auths.items()),
            tuple((h, str(n)) for h, n in helpers.items() if isinstance(helpers, dict)),
            str(doc.get("credsStore") or ""),
        )

    def lookup(self, host: str) -> Credential:
        """The credential for a registry ``host[:port]`` (anonymous when none)."""
        server = _DOCKER_HUB if host in ("docker.io", "index.docker.io") else host
        helper = dict(self.helpers).get(host) or self.default_helper
        if helper:
            return run_helper(helper, server)
        return dict(self.auths).get(_normalize_host(server), ANONYMOUS)


def _auth_entry(entry: dict[str, Any], path: str, server: str) -> Credential:
    """One ``auths`` entry: ``auth`` (base64 ``user:password``) or ``username`` and
    ``password``, and an optional ``identitytoken``."""
    username = str(entry.get("username") or "")
    secret = str(entry.get("password") or "")
    token = str(entry.get("identitytoken") or "")
    encoded = entry.get("auth")
    if encoded:
        try:
            username, sep, secret = base64.b64decode(str(encoded)).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise ConfigError(f"failed to load docker credential config {path}: "
                              f"invalid auth entry for {server}")
    return Credential(username, secret, token)


def run_helper(helper: str, server: str) -> Credential:
    """Ask ``docker-credential-<helper> get`` for the credentials of ``server``.

    Raises:
        StoreError: the helper is missing, fails, or answers nonsense (its output is
            not quoted: it may hold the secret).
    """
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([program, "get"], input=server.encode(), capture_output=True,
                              timeout=_HELPER_TIMEOUT, check=False)
    except FileNotFoundError:
        raise StoreError(f"docker credential helper {program} not found in PATH") from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StoreError(f"docker credential helper {program}: {exc}") from None
    out = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        if _HELPER_NOT_FOUND in out or _HELPER_NOT_FOUND in proc.stderr.decode("utf-8", "replace"):
            return ANONYMOUS
        raise StoreError(f"docker credential helper {program} failed for {server} "
                         f"(exit status {proc.returncode})")
    try:
        answer = json.loads(out)
        username, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
    except (json.JSONDecodeError, AttributeError):
        raise StoreError(f"docker credential helper {program} gave an invalid answer "
                         f"for {server}") from None
    if username == "<token>":
        return Credential(refresh_token=secret)
    return Credential(username, secret)


@dataclass(frozen=True)
class CredentialSource:
    """Where one store's credentials come from, resolved when the store opens.

    ``static`` (from the environment or the config file) serves every host; otherwise
    ``docker`` is asked for the registry host when the registry wants credentials.
    Pickled with the store, so worker processes need not find the config file again.
    """

    static: Credential | None = None
    docker: DockerCredentials | None = None
    #: Where the credentials come from, for error messages (never the secret).
    origin: str = "anonymous"

    def for_host(self, host: str) -> Credential:
        """The credential to present to ``host``."""
        if self.static is not None:
            return self.static
        if self.docker is not None:
            return self.docker.lookup(host)
        return ANONYMOUS



def resolve(location: str, ctx: Context | None = None) -> CredentialSource:
    """The credential source of a store location (see the module docstring).

    ``ctx`` (default: the Context opening the store, else the default config file)
    supplies the ``oci-credentials`` section.

    Raises:
        ConfigError: a password without a username, several matching config keys, a bad
            entry, or an unusable Docker config file.
    """
    username = os.environ.get("DESYNC_OCI_USERNAME", "")
    password = os.environ.get("DESYNC_OCI_PASSWORD", "")
    if password and not username:
        raise ConfigError("DESYNC_OCI_PASSWORD is set without DESYNC_OCI_USERNAME")
    if username:
        return CredentialSource(Credential(username, password), origin="DESYNC_OCI_USERNAME")
    ctx = ctx or opening_context() or Context(config=load_config())
    entry = ctx.config_entry(SECTION, location)
    if entry is not None:
        return CredentialSource(Credential(str(entry.get("username", "")),
                                           str(entry.get("secret", ""))), origin=SECTION)
    path = _docker_config_path()
    if path is None:
        return CredentialSource()
    return CredentialSource(docker=DockerCredentials.load(path), origin=f"docker config {path}")


__all__ = ["ANONYMOUS", "Credential", "CredentialSource", "DockerCredentials", "resolve",
           "run_helper", "validate"]
