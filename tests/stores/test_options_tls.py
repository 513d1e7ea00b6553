"""The TLS helpers of the store options that the HTTP and OCI stores share."""

from __future__ import annotations

from pathlib import Path

import pytest

from desync_core.errors import ConfigError
from desync_core.plugin_api import StoreOptions, environment_ca_bundle


def test_check_files_accepts_existing_or_unset_files(tmp_path: Path) -> None:
    pem = tmp_path / "a.pem"
    pem.write_text("not checked for content here\n")
    StoreOptions().check_files("https://example.invalid/")
    StoreOptions(ca_cert=str(pem), client_cert=str(pem),
                 client_key=str(pem)).check_files("https://example.invalid/")


@pytest.mark.parametrize("key", ["ca-cert", "client-cert", "client-key"])
def test_check_files_names_the_store_and_the_missing_file(tmp_path: Path, key: str) -> None:
    pem = tmp_path / "a.pem"
    pem.write_text("x\n")
    missing = tmp_path / "missing.pem"
    values = {"ca_cert": str(pem), "client_cert": str(pem), "client_key": str(pem),
              key.replace("-", "_"): str(missing)}
    with pytest.raises(ConfigError) as info:
        StoreOptions(**values).check_files("https://example.invalid/")
    assert str(info.value) == (f"store options for 'https://example.invalid/': {key} file "
                               f"{missing} does not exist")


def test_environment_ca_bundle_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert environment_ca_bundle() is None
    monkeypatch.setenv("CURL_CA_BUNDLE", "/curl.pem")
    assert environment_ca_bundle() == "/curl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/requests.pem")
    assert environment_ca_bundle() == "/requests.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "")  # set but empty: as unset
    assert environment_ca_bundle() == "/curl.pem"
