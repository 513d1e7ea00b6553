"""Who the server is and who we are: strict known_hosts checks and public-key login.

* Host keys: the server's key must be in one of the known_hosts files for the host (its
  ``HostKeyAlias`` or name, ``[name]:port`` off port 22; hashed entries work). An
  unknown or changed key is a one-line :class:`StoreError` naming the host and the
  command that trusts it (``ssh-keyscan``) or removes the old entry (``ssh-keygen -R``);
  a key is never accepted or recorded silently.
* Authentication: ssh-agent's keys, then the identity files (OpenSSH's defaults when
  none is configured; only the configured ones with ``IdentitiesOnly``). An encrypted
  file is used through the agent if the agent holds its key: there is no prompt.
"""

from __future__ import annotations

import os
import shlex

import paramiko

from desync_core.plugin_api import StoreError, StorePermissionError
from desync_store_sftp.sshconfig import SSHSettings

#: Host key algorithms that use a known_hosts entry of type ``ssh-rsa``.
_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


# -- host keys ------------------------------------------------------------------------


def known_keys(settings: SSHSettings) -> list[tuple[str, paramiko.PKey]]:
    """(file, key) for every known_hosts entry of the host, in file order."""
    out = []
    name = settings.host_key_name
    for path in settings.known_hosts:
        if not os.path.isfile(path):
            continue
        keys = paramiko.HostKeys()
        try:
            keys.load(path)
        except (OSError, paramiko.SSHException) as exc:
            raise StoreError(f"known_hosts file {path}: {exc}") from None
        for key in (keys.lookup(name) or {}).values():
            out.append((path, key))
    return out


def prefer_known_key_types(transport: paramiko.Transport,
                            known: list[tuple[str, paramiko.PKey]]) -> None:
    """Ask for the host key types known_hosts has, so the check can succeed (OpenSSH
    does the same: an ed25519 entry is useless if the server sends its RSA key)."""
    wanted: list[str] = []
    for _, key in known:
        names = _RSA_ALGORITHMS if key.get_name() == "ssh-rsa" else (key.get_name(),)
        wanted += [n for n in names if n not in wanted]
    if not wanted:
        return
    options = transport.get_security_options()
    available = list(options.key_types)
    options.key_types = [k for k in wanted if k in available] + [
        k for k in available if k not in wanted]


def _trust_hint(settings: SSHSettings) -> str:
    port = "" if settings.port == 22 else f"-p {settings.port} "
    target = settings.known_hosts[0] if settings.known_hosts else "~/.ssh/known_hosts"
    return f"ssh-keyscan {port}{shlex.quote(settings.hostname)} >> {shlex.quote(target)}"


def check_host_key(transport: paramiko.Transport, settings: SSHSettings) -> None:
    """Accept the server's key only if known_hosts has it for this host."""
    key = transport.get_remote_server_key()
    known = known_keys(settings)
    name = settings.host_key_name
    if any(k == key for _, k in known):
        return
    what = f"{key.get_name()} key {key.fingerprint}"
    if any(k.get_name() == key.get_name() for _, k in known):
        path = next(p for p, k in known if k.get_name() == key.get_name())
        raise StoreError(
            f"host key of {name} has CHANGED (the server sent {what}, {path} has another "
            f"one; someone may be intercepting the connection); if the change is expected, "
            f"remove the old key with: ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(path)}"
            f" and add the new one with: {_trust_hint(settings)}")
    files = ", ".join(settings.known_hosts[:2]) or "known_hosts"
    raise StoreError(
        f"host key of {name} is not known ({what} is not in {files}); if you trust it, "
        f"add it with: {_trust_hint(settings)}")


# -- authentication -----------------------------------------------------------------------


def _agent_keys() -> list[paramiko.AgentKey]:
    if not os.environ.get("SSH_AUTH_SOCK"):
        return []
    try:
        return list(paramiko.Agent().get_keys())
    except (OSError, paramiko.SSHException):
        return []  # an unreachable agent is not an error, just no keys


def _candidate_keys(settings: SSHSettings) -> tuple[list[tuple[str, paramiko.PKey]], list[str]]:
    """(description, key) pairs to try, in OpenSSH's order, and notes on skipped files."""
    agent = _agent_keys()
    keys: list[tuple[str, paramiko.PKey]] = []
    notes: list[str] = []
    if not settings.identities_only:
        keys += [(f"agent key {k.fingerprint}", k) for k in agent]
    for path in settings.identity_files:
        if not os.path.isfile(path):
            if settings.identities_explicit:
                notes.append(f"{path} does not exist")
            continue
        try:
            keys.append((path, _load_private_key(path)))
        except paramiko.PasswordRequiredException:
            # BatchMode: no prompt. The agent may hold the decrypted key.
            public = _public_key(path)
            match = [k for k in agent if public is not None and k.asbytes() == public]
            if match:
                keys.append((f"{path} (from the agent)", match[0]))
            else:
                notes.append(f"{path} is encrypted and not in ssh-agent")
        except (OSError, paramiko.SSHException, ValueError) as exc:
            notes.append(f"{path}: {exc}")
    return keys, notes


def _load_private_key(path: str) -> paramiko.PKey:
    """The key in ``path``; PasswordRequiredException if it is encrypted."""
    try:
        return paramiko.PKey.from_path(path)
    except TypeError as exc:
        # cryptography's loader says so with a TypeError for new-format OpenSSH keys.
        if "password" in str(exc).lower():
            raise paramiko.PasswordRequiredException(str(exc)) from None
        raise


def _public_key(private_path: str) -> bytes | None:
    try:
        with open(private_path + ".pub") as f:
            return paramiko.PublicBlob.from_string(f.read().strip()).key_blob
    except (OSError, ValueError):
        return None


def authenticate(transport: paramiko.Transport, settings: SSHSettings) -> None:
    """Public-key authentication with the agent's and the configured keys."""
    keys, notes = _candidate_keys(settings)
    tried = []
    for description, key in keys:
        try:
            transport.auth_publickey(settings.user, key)
        except paramiko.BadAuthenticationType as exc:
            raise StorePermissionError(
                f"ssh {settings.user}@{settings.hostname}: the server does not accept "
                f"public keys (allowed: {', '.join(exc.allowed_types)})") from None
        except paramiko.AuthenticationException:
            tried.append(description)
            continue
        if transport.is_authenticated():
            return
    detail = "; ".join([f"tried {', '.join(tried)}" if tried else "no key to try", *notes])
    raise StorePermissionError(
        f"ssh {settings.user}@{settings.hostname} port {settings.port}: permission denied "
        f"(publickey): {detail}")


__all__ = ["authenticate", "check_host_key", "known_keys", "prefer_known_key_types"]
