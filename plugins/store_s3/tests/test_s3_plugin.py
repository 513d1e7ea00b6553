"""The entry point stays cheap; locations parse by desync's rules (no server needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from desync_core.plugin_api import Context, UsageError, get_registries
from desync_store_s3.location import parse_s3_location

HEAVY = ("boto3", "botocore", "desync_store_s3.client", "desync_store_s3.store")


def test_entry_point_and_cli_start_up_import_no_boto3() -> None:
    code = ("import json, sys\n"
            "from desync_core.cli import build_parser\n"
            "from desync_core.plugins import get_registries\n"
            "import desync_store_s3.plugin\n"
            "build_parser(get_registries().commands)\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert json.loads(out.stdout) == []


def test_opening_a_store_does_not_connect_or_import_boto3() -> None:
    code = ("import json, sys\n"
            "from desync_core.plugin_api import Context\n"
            "s = Context().open_chunk_store('s3+https://s3.example.invalid/bucket/p')\n"
            "print(json.dumps([m for m in ('boto3', 'botocore') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert json.loads(out.stdout) == []


def test_registrations() -> None:
    regs = get_registries()
    for scheme in ("s3+http", "s3+https"):
        assert regs.chunk_stores.get(scheme).plugin == "store_s3"
        assert regs.index_stores.get(scheme).plugin == "store_s3"
    assert "s3-credentials" in regs.config_sections.names()
    store = Context().open_chunk_store("s3+https://s3.example.invalid/bucket/a/b")
    assert type(store).__name__ == "S3ChunkStore"
    assert store.key(bytes(32)) == "0000/" + "00" * 32 + ".cacnk"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("location", "endpoint", "bucket", "prefix", "style"), [
    ("s3+https://s3-eu-west-3.amazonaws.com/desync.bucket/prefix",
     "https://s3-eu-west-3.amazonaws.com", "desync.bucket", "prefix/", "path"),
    ("s3+https://s3.amazonaws.com/bucket/a/b/", "https://s3.amazonaws.com", "bucket", "a/b/",
     "virtual"),
    ("s3+http://127.0.0.1:9000/bucket", "http://127.0.0.1:9000", "bucket", "", "path"),
    ("s3+http://127.0.0.1:9000/bucket/?lookup=dns", "http://127.0.0.1:9000", "bucket", "",
     "virtual"),
    ("s3+https://s3.amazonaws.com/bucket?lookup=path", "https://s3.amazonaws.com", "bucket",
     "", "path"),
    # as desync: only the ends are trimmed, inner empty segments stay
    ("s3+http://minio:9000//b//x//", "http://minio:9000", "b", "/x/", "path"),
])
def test_location_rules(location: str, endpoint: str, bucket: str, prefix: str,
                        style: str) -> None:
    s3 = parse_s3_location(location)
    assert (s3.endpoint_url, s3.bucket, s3.prefix, s3.addressing) == (endpoint, bucket,
                                                                       prefix, style)
    assert s3.credentials_key == endpoint


def test_region_of_aws_endpoints() -> None:
    assert parse_s3_location("s3+https://s3-eu-west-3.amazonaws.com/b").default_region() \
        == "eu-west-3"
    assert parse_s3_location("s3+https://s3.us-west-2.amazonaws.com/b").default_region() \
        == "us-west-2"
    assert parse_s3_location("s3+http://127.0.0.1:9000/b").default_region() == "us-east-1"


@pytest.mark.parametrize(("location", "message"), [
    ("s3+http://host/", "expected bucket name in path"),
    ("s3+http://host", "expected bucket name in path"),
    ("s3+http://host/b?lookup=virtual", 'unknown S3 bucket lookup type: "virtual"'),
])
def test_bad_locations(location: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_s3_location(location)
