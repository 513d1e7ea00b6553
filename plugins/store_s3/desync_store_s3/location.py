"""S3 locations: endpoint, bucket, prefix and addressing style (``remote.md`` §6).

``s3+https://host[:port]/bucket/some/prefix?lookup=auto|dns|path``: the endpoint is the
URL's host, TLS when the scheme is ``s3+https``; the first path segment is the bucket,
the remaining segments joined by ``/`` the prefix (with ``/`` appended when non-empty).
No boto3 here: this module is imported to parse and name a location.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from desync_core.plugin_api import UsageError

#: ``lookup`` values and the botocore ``addressing_style`` each one asks for.
LOOKUPS = {"": "auto", "auto": "auto", "dns": "virtual", "path": "path"}

# Region in an AWS endpoint name: s3.eu-west-3.amazonaws.com, s3-eu-west-3.amazonaws.com,
# s3.dualstack.us-east-1.amazonaws.com (minio reads it the same way).
_AWS_REGION = re.compile(
    r"^s3[.-](?:dualstack\.)?([a-z]{2}(?:-gov)?-[a-z]+-\d)\.amazonaws\.com(?:\.cn)?$")
_AWS_HOST = re.compile(r"(^|\.)amazonaws\.com(\.cn)?$")
_GOOGLE_HOST = "storage.googleapis.com"
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Location:
    """Where an S3 store's objects are.

    Attributes:
        raw: the location as given (``s3+http://…``).
        endpoint_url: ``http(s)://host[:port]`` to send requests to.
        bucket: the bucket name.
        prefix: the key prefix, ``""`` or ending in ``/``.
        addressing: botocore's ``addressing_style``: ``virtual`` (``bucket.host``) or
            ``path`` (``host/bucket``).
        credentials_key: the ``s3-credentials`` key for it: ``http(s)://host[:port]``.
    """

    raw: str
    endpoint_url: str
    bucket: str
    prefix: str
    addressing: str
    credentials_key: str

    @property
    def host(self) -> str:
        """``host[:port]`` of the endpoint."""
        return self.endpoint_url.split("://", 1)[1]

    def default_region(self) -> str:
        """The region named by an AWS endpoint, else ``us-east-1`` (what SigV4 signs
        with when neither ``S3_REGION`` nor ``aws-region`` says otherwise)."""
        m = _AWS_REGION.match(self.host.split(":")[0])
        return m.group(1) if m else DEFAULT_REGION


def parse_s3_location(raw: str) -> S3Location:
    """Parse an ``s3+http(s)://`` location.

    Raises:
        UsageError: no bucket in the path, or an unknown ``lookup`` value.
    """
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("s3+http", "s3+https"):
        raise UsageError(f"invalid scheme '{parts.scheme}', expected 's3+http' or 's3+https'")
    http_scheme = scheme.removeprefix("s3+")
    if not parts.netloc:
        raise UsageError(f"expected host name in '{raw}'")
    segments = parts.path.strip("/")
    if not segments:
        raise UsageError(f"expected bucket name in path of '{raw}'")
    bucket, *rest = segments.split("/")
    prefix = "/".join(rest)
    if prefix:
        prefix += "/"
    lookup = parse_qs(parts.query).get("lookup", [""])[-1]
    style = LOOKUPS.get(lookup)
    if style is None:
        raise UsageError(f'unknown S3 bucket lookup type: "{lookup}"')
    host = parts.netloc.rpartition("@")[2]
    if style == "auto":
        style = _auto_style(host, bucket, secure=http_scheme == "https")
    endpoint = f"{http_scheme}://{host}"
    return S3Location(raw=raw, endpoint_url=endpoint, bucket=bucket, prefix=prefix,
                      addressing=style, credentials_key=endpoint)


def _auto_style(host: str, bucket: str, *, secure: bool) -> str:
    """minio's ``auto`` rule: virtual-host style for AWS and Google endpoints (unless
    the bucket name has dots and TLS is used: the wildcard certificate would not match),
    path style for every other server (MinIO, SeaweedFS, Ceph…)."""
    name = host.split(":")[0].lower()
    if _AWS_HOST.search(name) or name == _GOOGLE_HOST:
        if secure and "." in bucket:
            return "path"
        return "virtual"
    return "path"


__all__ = ["DEFAULT_REGION", "S3Location", "parse_s3_location"]
