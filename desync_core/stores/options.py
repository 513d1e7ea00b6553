"""Per-store options (``store.md`` §5.1)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from desync_core.errors import ConfigError

DEFAULT_TIMEOUT = 60.0
DEFAULT_ERROR_RETRY = 3
DEFAULT_ERROR_RETRY_BASE_INTERVAL = 0.5


@dataclass(frozen=True)
class StoreOptions:
    """Options of one store. Durations are in seconds (the config file uses nanoseconds).

    Attributes:
        n: concurrency (connections, sessions, workers).
        timeout: whole-request timeout; ``None`` means no timeout.
        error_retry: total attempts for transient errors (0 or 1: a single attempt).
        error_retry_base_interval: attempt *k* waits ``k * interval`` before retrying.
        extra: options this version does not know; plugins may read them.
    """

    n: int = 10
    timeout: float | None = DEFAULT_TIMEOUT
    error_retry: int = DEFAULT_ERROR_RETRY
    error_retry_base_interval: float = DEFAULT_ERROR_RETRY_BASE_INTERVAL
    client_cert: str = ""
    client_key: str = ""
    ca_cert: str = ""
    trust_insecure: bool = False
    http_auth: str = ""
    http_cookie: str = ""
    skip_verify: bool = False
    uncompressed: bool = False
    encryption: bool = False
    encryption_algorithm: str = ""
    encryption_key: str = ""
    extra: tuple[tuple[str, Any], ...] = field(default=())

    def with_(self, **changes: Any) -> StoreOptions:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def validate(self, location: str) -> None:
        """Check option combinations; raise ConfigError naming the location."""
        if bool(self.client_cert) != bool(self.client_key):
            raise ConfigError(
                f"store options for {location!r}: client-cert and client-key must be "
                "given together"
            )
        if self.encryption or self.encryption_key or self.encryption_algorithm:
            from desync_core.stores.encryption import resolve_settings

            try:
                # desync's rules and messages (store.md §5.1); the key falls back to
                # $DESYNC_ENCRYPTION_KEY. The cipher library is loaded by the store.
                resolve_settings(self.encryption, self.encryption_key,
                                 self.encryption_algorithm)
            except ConfigError as exc:
                raise ConfigError(f"store options for {location!r}: {exc}") from None

    def check_files(self, name: str) -> None:
        """Raise ConfigError when the ``ca-cert``, ``client-cert`` or ``client-key`` file
        is missing; ``name`` is how the message names the store. TLS stores call it
        before connecting: the TLS library's own error would not say which file."""
        for key, path in (("ca-cert", self.ca_cert), ("client-cert", self.client_cert),
                          ("client-key", self.client_key)):
            if path and not os.path.isfile(path):
                raise ConfigError(f"store options for '{name}': {key} file {path} "
                                  "does not exist")

    # -- JSON (config file) form ------------------------------------------------

    _NS_FIELDS = ("timeout", "error_retry_base_interval")

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> StoreOptions:
        """Build from a ``store-options`` entry (durations in nanoseconds)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: store options must be a JSON object")
        known = {f.name.replace("_", "-"): f for f in fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {}
        extra = []
        for key, value in data.items():
            f = known.get(key)
            if f is None:
                extra.append((key, value))
                continue
            values[f.name] = _convert(f.name, value, where)
        return cls(**values, extra=tuple(extra))

    def to_json(self) -> dict[str, Any]:
        """The config-file form: ``uncompressed`` always, other fields when non-zero."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name in self._NS_FIELDS:
                value = -1 if value is None else round(value * 1e9)
            key = f.name.replace("_", "-")
            if key == "uncompressed" or value:
                out[key] = value
        for key, value in self.extra:
            out[key] = value
        return out


def _convert(name: str, value: Any, where: str) -> Any:
    def bad(kind: str) -> ConfigError:
        return ConfigError(f"{where}: store option {name.replace('_', '-')!r} must be {kind}")

    if name in ("n", "error_retry"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        return value
    if name in StoreOptions._NS_FIELDS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer number of nanoseconds")
        if name == "timeout":
            if value == 0:
                return DEFAULT_TIMEOUT
            if value < 0:
                return None
        return value / 1e9
    if name in ("trust_insecure", "skip_verify", "uncompressed", "encryption"):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if not isinstance(value, str):
        raise bad("a string")
    return value


def environment_ca_bundle() -> str | None:
    """The CA bundle the environment names for TLS stores without ``ca-cert``:
    ``$REQUESTS_CA_BUNDLE``, else ``$CURL_CA_BUNDLE`` (as requests reads them); ``None``
    when neither is set (the store's own default applies: certifi's bundle)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


__all__ = ["StoreOptions", "environment_ca_bundle"]

