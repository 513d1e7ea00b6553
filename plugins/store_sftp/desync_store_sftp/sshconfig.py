"""The client settings OpenSSH would use for a host: ``~/.ssh/config`` and defaults.

:func:`resolve` looks the URL's host up in ``~/.ssh/config`` and ``/etc/ssh/ssh_config``
(paramiko's parser: ``Host`` patterns, ``Match``, token expansion) and fills in
OpenSSH's defaults; the URL's user and port win over the files.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from typing import Any

import paramiko

from desync_core.plugin_api import StoreError

#: OpenSSH's default identity files, in the order ssh tries them.
DEFAULT_IDENTITIES = ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk")
SYSTEM_CONFIG = "/etc/ssh/ssh_config"
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


@dataclass(frozen=True)
class SSHTarget:
    """Where to connect, as written in the store URL.

    Attributes:
        host: the host part (an address or a ``Host`` alias of the ssh config).
        user: the URL's user, ``None`` if not given.
        port: the URL's port, ``None`` if not given.
    """

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        """The host word desync passes to ssh: ``[user@]host[:port]``."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6, as in the URL
        host = host if self.port is None else f"{host}:{self.port}"
        return f"{self.user}@{host}" if self.user else host


@dataclass
class SSHSettings:
    """The effective client settings for one target (URL, then ssh config, then defaults)."""

    hostname: str
    port: int
    user: str
    identity_files: list[str]
    identities_explicit: bool
    identities_only: bool
    known_hosts: list[str]
    host_key_alias: str | None = None
    proxy_command: str | None = None
    proxy_jump: str | None = None
    connect_timeout: float | None = None
    config_files: list[str] = field(default_factory=list)

    @property
    def host_key_name(self) -> str:
        """The name the host's key is recorded under in known_hosts."""
        name = self.host_key_alias or self.hostname
        return name if self.port == 22 else f"[{name}]:{self.port}"


def _expand(path: str) -> str:
    return os.path.expanduser(path.strip('"'))


def _load_config(path: str) -> paramiko.SSHConfig | None:
    if not os.path.isfile(path):
        return None
    try:
        return paramiko.SSHConfig.from_path(path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise StoreError(f"ssh config {path}: {exc}") from None


def resolve(target: SSHTarget) -> SSHSettings:
    """Look ``target`` up in ``~/.ssh/config`` and ``/etc/ssh/ssh_config``.

    As in OpenSSH, the first value found wins: the URL, then the user's file, then the
    system's. ``~`` is ``$HOME``.
    """
    user_config = _expand("~/.ssh/config")
    found: dict[str, Any] = {}
    used = []
    for path in (user_config, SYSTEM_CONFIG):
        config = _load_config(path)
        if config is None:
            continue
        used.append(path)
        for key, value in config.lookup(target.host).items():
            if key == "identityfile" and "identityfile" in found:
                found[key] = [*found[key], *value]  # IdentityFile accumulates
            else:
                found.setdefault(key, value)
    hostname = found.get("hostname", target.host)
    port = target.port or int(found.get("port", 22))
    user = target.user or found.get("user") or getpass.getuser()
    identities = [_expand(p) for p in found.get("identityfile", [])]
    explicit = bool(identities)
    if not explicit:
        identities = [_expand(f"~/.ssh/{name}") for name in DEFAULT_IDENTITIES]
    known = [_expand(p) for p in found.get("userknownhostsfile", "").split()] or [
        _expand("~/.ssh/known_hosts"), _expand("~/.ssh/known_hosts2")]
    known += [_expand(p) for p in found.get("globalknownhostsfile", "").split()] or list(
        DEFAULT_GLOBAL_KNOWN_HOSTS)
    timeout = found.get("connecttimeout")
    proxy = found.get("proxycommand")
    return SSHSettings(
        hostname=hostname, port=port, user=user, identity_files=identities,
        identities_explicit=explicit,
        identities_only=str(found.get("identitiesonly", "no")).lower() == "yes",
        known_hosts=known, host_key_alias=found.get("hostkeyalias"),
        proxy_command=None if proxy in (None, "none") else proxy,
        proxy_jump=found.get("proxyjump") if found.get("proxyjump") != "none" else None,
        connect_timeout=float(timeout) if timeout else None, config_files=used)


__all__ = ["SSHSettings", "SSHTarget", "resolve"]
