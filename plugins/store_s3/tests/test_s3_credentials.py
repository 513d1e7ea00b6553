"""Every credential path of desync (``store.md`` §5.3), end to end against SeaweedFS.

A path "works" when ``make -s`` uploads to the store and ``cat`` reads the blob back;
it "is not used" when the request goes out anonymously or with other keys and the
server refuses it (one ``Error:`` line, exit 4, no secret printed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from desync_core.testing.fixtures import CliResult, assert_one_line_error
from desync_store_s3 import credentials as creds_module
from desync_store_s3.credentials import CredentialsEntry, CredentialsResolver, load_profile
from desync_store_s3.seaweedfs import SeaweedFS

Cli = Callable[..., CliResult]


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(200_000))
    return path


def roundtrip(cli: Cli, store: str, blob: Path, *config: str) -> CliResult:
    """``make -s store`` then ``cat``; returns the failing result, or the cat result."""
    index = blob.with_suffix(".caibx")
    made = cli(*config, "make", "-s", store, index, blob)
    if made.code != 0:
        return made
    result = cli(*config, "cat", "-s", store, index)
    if result.code == 0:
        assert result.out == blob.read_bytes()
    return result


def write_config(tmp_path: Path, section: dict[str, Any]) -> list[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"s3-credentials": section}))
    return ["--config", str(path)]


def refused(result: CliResult, *fragments: str) -> str:
    return assert_one_line_error(result, 4, *fragments)


# -- environment -------------------------------------------------------------------------

def test_s3_variables(cli: Cli, store_url: str, blob: Path, seaweedfs: SeaweedFS,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY", seaweedfs.access_key)
    monkeypatch.setenv("S3_SECRET_KEY", seaweedfs.secret_key)
    assert roundtrip(cli, store_url, blob).code == 0


def test_aws_variables(cli: Cli, store_url: str, blob: Path, seaweedfs: SeaweedFS,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    assert roundtrip(cli, store_url, blob).code == 0


def test_s3_variables_beat_aws_variables(cli: Cli, store_url: str, blob: Path,
                                         seaweedfs: SeaweedFS,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.setenv("S3_ACCESS_KEY", seaweedfs.access_key)
    monkeypatch.setenv("S3_SECRET_KEY", "not-the-secret")
    line = refused(roundtrip(cli, store_url, blob), store_url, "SignatureDoesNotMatch")
    assert "not-the-secret" not in line


def test_environment_beats_config(cli: Cli, store_url: str, blob: Path, tmp_path: Path,
                                  seaweedfs: SeaweedFS,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, {"http://127.0.0.1:*": {
        "access-key": seaweedfs.access_key, "secret-key": "wrong-in-config"}})
    monkeypatch.setenv("S3_ACCESS_KEY", seaweedfs.access_key)
    monkeypatch.setenv("S3_SECRET_KEY", seaweedfs.secret_key)
    assert roundtrip(cli, store_url, blob, *config).code == 0


def test_s3_region_variable_sets_the_signing_region(s3_url: str, bucket: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from desync_core.testing import open_chunk_store

    monkeypatch.setenv("S3_ACCESS_KEY", "k")
    monkeypatch.setenv("S3_SECRET_KEY", "s")
    monkeypatch.setenv("S3_REGION", "eu-west-3")
    store: Any = open_chunk_store(f"{s3_url}/{bucket}")
    assert store.conn.client().meta.region_name == "eu-west-3"
    monkeypatch.delenv("S3_REGION")
    store = open_chunk_store(f"{s3_url}/{bucket}/other")
    assert store.conn.client().meta.region_name == "us-east-1"


# -- config file ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["http://127.0.0.1:*", "EXACT", "*://127.0.0.1:*"])
def test_config_static_keys(cli: Cli, store_url: str, blob: Path, tmp_path: Path,
                            seaweedfs: SeaweedFS, key: str) -> None:
    key = seaweedfs.endpoint if key == "EXACT" else key
    config = write_config(tmp_path, {key: {"access-key": seaweedfs.access_key,
                                           "secret-key": seaweedfs.secret_key}})
    assert roundtrip(cli, store_url, blob, *config).code == 0


def test_config_entry_of_another_host_is_not_used(cli: Cli, store_url: str, blob: Path,
                                                  tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    # The key names scheme://host[:port] only; a different port (or a path) is another key.
    config = write_config(tmp_path, {"http://127.0.0.1:1": {
        "access-key": seaweedfs.access_key, "secret-key": seaweedfs.secret_key}})
    refused(roundtrip(cli, store_url, blob, *config), store_url, "AccessDenied")


def test_config_region(tmp_path: Path, s3_url: str, bucket: str, seaweedfs: SeaweedFS) -> None:
    from desync_core.plugin_api import Context, load_config

    config = write_config(tmp_path, {seaweedfs.endpoint: {
        "access-key": "k", "secret-key": "s", "aws-region": "ap-south-1"}})
    ctx = Context(config=load_config(config[1]))
    store: Any = ctx.open_chunk_store(f"{s3_url}/{bucket}")
    assert store.conn.client().meta.region_name == "ap-south-1"


def test_config_two_matching_keys(cli: Cli, store_url: str, blob: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"http://127.0.0.1:*": {}, "http://*": {}})
    result = cli(*config, "make", "-s", store_url, tmp_path / "x.caibx", blob)
    assert_one_line_error(result, 2, "multiple s3-credentials entries match")


def test_config_entry_with_a_wrong_type(cli: Cli, store_url: str, blob: Path,
                                        tmp_path: Path) -> None:
    config = write_config(tmp_path, {"http://127.0.0.1:*": {"access-key": 5}})
    result = cli(*config, "make", "-s", store_url, tmp_path / "x.caibx", blob)
    assert_one_line_error(result, 2, "s3-credentials", "'access-key' must be a string")


def test_desync_config_prints_the_section(ok: Cli, tmp_path: Path) -> None:
    section = {"http://localhost": {"access-key": "A", "secret-key": "S"}}
    config = write_config(tmp_path, section)
    assert json.loads(ok(*config, "config").out)["s3-credentials"] == section


# -- AWS credentials file --------------------------------------------------------------------

def test_credentials_file_profiles_of_desyncs_example(cli: Cli, store_url: str, blob: Path,
                                                      tmp_path: Path,
                                                      cmd_testdata: Path) -> None:
    # example.ini's keys (accessKey/secret) are an identity of the test server.
    ini = str(cmd_testdata / "example.ini")
    for profile in ("no_token", "with_colon"):
        config = write_config(tmp_path, {"http://127.0.0.1:*": {
            "aws-credentials-file": ini, "aws-profile": profile}})
        assert roundtrip(cli, store_url, blob, *config).code == 0, profile


def test_credentials_file_profile_from_aws_profile(cli: Cli, store_url: str, blob: Path,
                                                   tmp_path: Path, seaweedfs: SeaweedFS,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ini = tmp_path / "credentials"
    ini.write_text(f"[default]\naws_access_key_id = nobody\naws_secret_access_key = x\n"
                   f"[seaweed]\naws_access_key_id = {seaweedfs.access_key}\n"
                   f"aws_secret_access_key = {seaweedfs.secret_key}\n")
    config = write_config(tmp_path, {"http://127.0.0.1:*": {"aws-credentials-file": str(ini)}})
    refused(roundtrip(cli, store_url, blob, *config), "InvalidAccessKeyId")  # [default]
    monkeypatch.setenv("AWS_PROFILE", "seaweed")
    assert roundtrip(cli, store_url, blob, *config).code == 0


def test_static_keys_beat_the_credentials_file(cli: Cli, store_url: str, blob: Path,
                                               tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    config = write_config(tmp_path, {"http://127.0.0.1:*": {
        "access-key": seaweedfs.access_key, "secret-key": seaweedfs.secret_key,
        "aws-credentials-file": str(tmp_path / "missing")}})
    assert roundtrip(cli, store_url, blob, *config).code == 0


def test_credentials_file_missing_or_without_the_profile(cli: Cli, store_url: str,
                                                         blob: Path, tmp_path: Path,
                                                         cmd_testdata: Path) -> None:
    config = write_config(tmp_path, {"http://127.0.0.1:*": {
        "aws-credentials-file": str(tmp_path / "missing.ini")}})
    refused(cli(*config, "make", "-s", store_url, tmp_path / "x.caibx", blob),
            "failed to load shared credentials file", "missing.ini")
    config = write_config(tmp_path, {"http://127.0.0.1:*": {
        "aws-credentials-file": str(cmd_testdata / "example.ini"), "aws-profile": "nope"}})
    refused(cli(*config, "make", "-s", store_url, tmp_path / "x.caibx", blob),
            "profile 'nope'")


def test_load_profile_reads_desyncs_example(cmd_testdata: Path) -> None:
    ini = str(cmd_testdata / "example.ini")
    assert load_profile(ini, "default") == ("accessKey", "secret", "token")
    assert load_profile(ini, "no_token") == ("accessKey", "secret", "")
    assert load_profile(ini, "with_colon") == ("accessKey", "secret", "")


def test_credentials_file_is_read_again_after_a_minute(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ini = tmp_path / "credentials"
    ini.write_text("[default]\naws_access_key_id = one\naws_secret_access_key = s1\n")
    resolver = CredentialsResolver(CredentialsEntry(credentials_file=str(ini)))
    assert resolver.current().access_key == "one"
    ini.write_text("[default]\naws_access_key_id = two\naws_secret_access_key = s2\n")
    assert resolver.current().access_key == "one"  # cached for a minute
    monkeypatch.setattr(creds_module, "FILE_REFRESH_SECONDS", 0.0)
    assert resolver.current().access_key == "two"


# -- refusals -----------------------------------------------------------------------------------

def test_wrong_secret_is_one_line_without_the_secret(cli: Cli, store_url: str, blob: Path,
                                                     seaweedfs: SeaweedFS,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY", seaweedfs.access_key)
    monkeypatch.setenv("S3_SECRET_KEY", "very-secret-but-wrong")
    line = refused(roundtrip(cli, store_url, blob), store_url, "SignatureDoesNotMatch")
    assert "very-secret-but-wrong" not in line


def test_unknown_access_key(cli: Cli, store_url: str, blob: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY", "nobody")
    monkeypatch.setenv("S3_SECRET_KEY", "nothing")
    line = refused(roundtrip(cli, store_url, blob), store_url, "InvalidAccessKeyId")
    assert "nothing" not in line


def test_reading_with_wrong_credentials(cli: Cli, ok: Cli, store_url: str, blob: Path,
                                        tmp_path: Path, seaweedfs: SeaweedFS,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY", seaweedfs.access_key)
    monkeypatch.setenv("S3_SECRET_KEY", seaweedfs.secret_key)
    ok("make", "-s", store_url, tmp_path / "b.caibx", blob)
    monkeypatch.setenv("S3_SECRET_KEY", "wrong")
    refused(cli("extract", "-s", store_url, tmp_path / "b.caibx", tmp_path / "out"),
            store_url, "reading chunk", "SignatureDoesNotMatch")
    assert not (tmp_path / "out").exists()


def test_anonymous_requests_are_refused(cli: Cli, store_url: str, blob: Path) -> None:
    refused(roundtrip(cli, store_url, blob), store_url, "AccessDenied")
