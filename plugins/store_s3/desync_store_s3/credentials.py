"""S3 credentials and region, resolved the way desync does (``store.md`` §5.3).

In order:

1. ``S3_ACCESS_KEY`` / ``S3_SECRET_KEY`` / ``S3_SESSION_TOKEN``; if both of the first
   two are empty, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
   ``AWS_SESSION_TOKEN``. The region is then ``S3_REGION``.
2. The ``s3-credentials`` entry whose key matches ``http(s)://host[:port]`` of the
   location (glob keys, a compatible superset of desync's exact lookup): static
   ``access-key``/``secret-key``, else ``aws-credentials-file`` (INI) with
   ``aws-profile`` (default ``$AWS_PROFILE``, else ``default``), re-read at most every
   minute; the region is ``aws-region``.
3. Nothing: anonymous (unsigned) requests.

Secrets never appear in a ``repr`` or an error message. No boto3 here.
"""

from __future__ import annotations

import configparser
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from desync_core.plugin_api import ConfigError, StoreError

SECTION = "s3-credentials"
_FIELDS = ("access-key", "secret-key", "aws-credentials-file", "aws-profile", "aws-region")
#: How long values read from an AWS credentials file are used before it is read again.
FILE_REFRESH_SECONDS = 60.0


def validate(entry: Any, where: str) -> None:
    """Check one ``s3-credentials`` entry (the registered config-section validator).

    Raises:
        ConfigError: a field is not a string. Unknown fields are ignored, as desync does.
    """
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: an entry must be a JSON object")
    for key in _FIELDS:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: {key!r} must be a string")


@dataclass(frozen=True)
class CredentialsEntry:
    """An ``s3-credentials`` entry of the config file (picklable: worker processes
    resolve credentials from it again)."""

    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    credentials_file: str = ""
    profile: str = ""
    region: str = ""

    @classmethod
    def from_json(cls, entry: dict[str, Any] | None) -> CredentialsEntry | None:
        """From a validated config entry (None stays None)."""
        if entry is None:
            return None
        return cls(access_key=entry.get("access-key") or "",
                   secret_key=entry.get("secret-key") or "",
                   credentials_file=entry.get("aws-credentials-file") or "",
                   profile=entry.get("aws-profile") or "",
                   region=entry.get("aws-region") or "")


@dataclass(frozen=True)
class Credentials:
    """Keys to sign requests with (all empty: anonymous) and the region.

    Attributes:
        source: where they came from, for messages (never the keys themselves).
    """

    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    region: str = ""
    source: str = "anonymous"

    @property
    def anonymous(self) -> bool:
        """No keys at all: requests are sent unsigned."""
        return not (self.access_key or self.secret_key)

    def secrets(self) -> tuple[str, ...]:
        """The secret values long enough to recognise, to scrub from server messages
        (real secret keys have 40 characters; a short test value would mangle text)."""
        return tuple(s for s in (self.secret_key, self.session_token) if len(s) >= 8)


def from_environment(env: dict[str, str] | os._Environ[str] | None = None) -> Credentials | None:
    """Credentials from ``S3_*`` (then ``AWS_*``) variables, or None if none are set."""
    env = os.environ if env is None else env
    access, secret = env.get("S3_ACCESS_KEY", ""), env.get("S3_SECRET_KEY", "")
    token, source = env.get("S3_SESSION_TOKEN", ""), "S3_ACCESS_KEY/S3_SECRET_KEY"
    if not access and not secret:
        access = env.get("AWS_ACCESS_KEY_ID", "")
        secret = env.get("AWS_SECRET_ACCESS_KEY", "")
        token, source = env.get("AWS_SESSION_TOKEN", ""), "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if not access and not secret:
        return None
    return Credentials(access, secret, token, env.get("S3_REGION", ""), f"environment ({source})")


def load_profile(path: str, profile: str) -> tuple[str, str, str]:
    """``(access key, secret key, session token)`` of a profile of an AWS credentials
    file (``key = value`` or ``key: value``).

    Raises:
        StoreError: the file cannot be read or parsed, the profile or a key is missing.
    """
    parser = configparser.ConfigParser(interpolation=None, default_section="\0none")
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        reason = reason.splitlines()[0] if reason else type(exc).__name__
        raise StoreError(f"failed to load shared credentials file {path}: {reason}") from None
    if not parser.has_section(profile):
        raise StoreError(f"failed to get profile {profile!r} from shared credentials file {path}")
    section = parser[profile]
    values = []
    for key in ("aws_access_key_id", "aws_secret_access_key"):
        value = section.get(key)
        if value is None:
            raise StoreError(f"shared credentials {profile} in {path} did not contain {key}")
        values.append(value.strip())
    return values[0], values[1], (section.get("aws_session_token") or "").strip()


class CredentialsResolver:
    """The credentials of one location, from the environment or its config entry.

    The environment is read once, when the store is opened. Values from an AWS
    credentials file are re-read when older than :data:`FILE_REFRESH_SECONDS`, so
    long-running servers pick up rotated keys.
    """

    def __init__(self, entry: CredentialsEntry | None) -> None:
        self.entry = entry
        self._env = from_environment()
        self._lock = threading.Lock()
        self._cached: Credentials | None = None
        self._read_at = 0.0

    @property
    def refreshes(self) -> bool:
        """Whether the credentials come from a file that is re-read."""
        e = self.entry
        return self._env is None and e is not None and not e.access_key and bool(e.credentials_file)

    def current(self) -> Credentials:
        """The credentials to use now.

        Raises:
            StoreError: the configured credentials file is unusable.
        """
        if self._env is not None:
            return self._env
        e = self.entry
        if e is None:
            return Credentials()
        if e.access_key:
            return Credentials(e.access_key, e.secret_key, "", e.region, "config access-key")
        if not e.credentials_file:
            return Credentials(region=e.region)
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._read_at >= FILE_REFRESH_SECONDS:
                profile = e.profile or os.environ.get("AWS_PROFILE") or "default"
                access, secret, token = load_profile(e.credentials_file, profile)
                self._cached = Credentials(access, secret, token, e.region,
                                           f"profile {profile} of {e.credentials_file}")
                self._read_at = now
            return self._cached


__all__ = [
    "SECTION",
    "Credentials",
    "CredentialsEntry",
    "CredentialsResolver",
    "from_environment",
    "load_profile",
    "validate",
]
