"""Test support for desync-store-s3: the SeaweedFS server and raw bucket access.

(A module with a unique name rather than ``conftest``: the repository has several
conftest files, and test modules import these helpers.)
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

#: Environment variables that select S3 credentials; tests start without any of them.
CREDENTIAL_VARS = ("S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SESSION_TOKEN", "S3_REGION",
                   "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                   "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")

_counter = itertools.count()


def new_bucket_name() -> str:
    """A bucket name no other test (or earlier run) uses."""
    return f"t{next(_counter)}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def list_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every object key under ``prefix`` (paginated)."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", ()))
    return sorted(keys)


def get_raw(client: Any, bucket: str, key: str) -> bytes | None:
    """An object's bytes, or None if it does not exist."""
    try:
        return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except client.exceptions.NoSuchKey:
        return None
