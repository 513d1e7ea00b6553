"""``s3+https://``: certificate checks, ``--ca-cert``/``ca-cert`` and ``-t``, against
SeaweedFS serving desync's test certificate (CN localhost, IP 127.0.0.1)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from desync_core.testing.fixtures import CliResult, assert_one_line_error
from desync_store_s3.seaweedfs import SeaweedFS

Cli = Callable[..., CliResult]

pytestmark = pytest.mark.usefixtures("s3_env")


@pytest.fixture
def https_store(seaweedfs: SeaweedFS, bucket: str, prefix: str) -> str:
    return f"s3+{seaweedfs.https_endpoint}/{bucket}/{prefix.rstrip('/')}"


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(random.Random(31).randbytes(200_000))
    return path


def test_untrusted_certificate_is_one_line(cli: Cli, https_store: str, blob: Path,
                                           tmp_path: Path) -> None:
    result = cli("make", "-s", https_store, tmp_path / "b.caibx", blob)
    assert_one_line_error(result, 4, https_store, "TLS: certificate verify failed")


def test_ca_cert_flag_and_option(ok: Cli, https_store: str, blob: Path, tmp_path: Path,
                                 cmd_testdata: Path) -> None:
    ca = str(cmd_testdata / "ca.crt")
    ok("make", "-s", https_store, "--ca-cert", ca, tmp_path / "b.caibx", blob)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {https_store: {"ca-cert": ca}}}))
    ok("--config", config, "extract", "-s", https_store, tmp_path / "b.caibx", tmp_path / "o")
    assert (tmp_path / "o").read_bytes() == blob.read_bytes()


def test_trust_insecure(ok: Cli, https_store: str, blob: Path, tmp_path: Path) -> None:
    made = ok("make", "-s", https_store, "-t", tmp_path / "b.caibx", blob)
    assert made.err == ""  # no warning per request
    ok("extract", "-s", https_store, "-t", tmp_path / "b.caibx", tmp_path / "o")
    assert (tmp_path / "o").read_bytes() == blob.read_bytes()
