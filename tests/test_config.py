"""Configuration: glob matching, precedence of flags over the file, ``desync config``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from desync_core.cli import build_parser, make_context
from desync_core.config import glob_match, load_config, location_matches, parse_config
from desync_core.errors import ConfigError
from desync_core.plugins import get_registries

MATCHING = [
    ("http://host/path", "http://host/path/"),
    ("https://host/path*", "https://host/path/"),
    ("https://*", "https://example.com"),
    ("https://example.com/*/*/", "https://example.com/path/another/"),
    ("*://example.com", "https://example.com"),
    ("/path", "/path/../path"),
    ("path/..", "."),
    ("/path/*/", "/path/to"),
    ("s3+https://127.0.0.1:[0-9]*/bucket", "s3+https://127.0.0.1:9000/bucket"),
]
NOT_MATCHING = [
    ("http://host:8080/path", "http://host/path"),
    ("https://*", "https://example.com/path"),
    ("https://example.com/path/*", "https://example.com/path"),
    ("*", "https://example.com/path"),
    ("/path/to", "/path/to/.."),
    ("ssh://host/path", "/path"),
    ("[", "["),  # malformed patterns never match
]


@pytest.mark.parametrize(("pattern", "location"), MATCHING)
def test_location_matches(pattern: str, location: str) -> None:
    assert location_matches(pattern, location)


@pytest.mark.parametrize(("pattern", "location"), NOT_MATCHING)
def test_location_does_not_match(pattern: str, location: str) -> None:
    assert not location_matches(pattern, location)


def test_go_glob_rules() -> None:
    assert glob_match("a?c", "abc")
    assert not glob_match("a?c", "a/c")
    assert glob_match("[^x]b", "ab")
    assert glob_match("\\*", "*")
    assert not glob_match("\\*", "a")
    assert glob_match("[a-c]", "b")
    assert not glob_match("[]", "a")


def write_config(tmp_path: Path, doc: object) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return str(path)


def context_for(argv: list[str]):  # type: ignore[no-untyped-def]
    args = build_parser(get_registries().commands).parse_args(argv)
    return make_context(args)


def test_desync_options_precedence(tmp_path: Path) -> None:
    """desync's options test: config values, defaults, and flags that beat both."""
    cfg = write_config(tmp_path, {"store-options": {
        "/store/*/": {"error-retry": 20, "error-retry-base-interval": 250000000}}})
    ctx = context_for(["--config", cfg, "info", "x.caibx"])
    opts = ctx.store_options("/store/20230901")
    assert (opts.error_retry, opts.error_retry_base_interval) == (20, 0.25)
    opts = ctx.store_options("/missingStore")
    assert (opts.error_retry, opts.error_retry_base_interval) == (3, 0.5)
    ctx = context_for(["--config", cfg, "info", "--error-retry", "10",
                       "--error-retry-base-interval", "1s", "x.caibx"])
    for location in ("/store/20230901", "/missingStore"):
        opts = ctx.store_options(location)
        assert (opts.error_retry, opts.error_retry_base_interval) == (10, 1.0)


def test_flags_override_tls_options_and_n(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"store-options": {"https://h/s": {
        "ca-cert": "/cfg/ca.pem", "trust-insecure": False, "n": 3}}})
    ctx = context_for(["--config", cfg, "cat", "-n", "7", "-t", "--ca-cert", "/flag/ca.pem",
                       "x.caibx"])
    opts = ctx.store_options("https://h/s/")
    assert opts.ca_cert == "/flag/ca.pem"
    assert opts.trust_insecure is True
    assert opts.n == 7
    ctx = context_for(["--config", cfg, "cat", "x.caibx"])
    opts = ctx.store_options("https://h/s")
    assert (opts.ca_cert, opts.trust_insecure, opts.n) == ("/cfg/ca.pem", False, 10)


def test_entry_without_keys_gets_defaults_and_timeout_rules(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, {"store-options": {
        "/a": {}, "/b": {"timeout": 0}, "/c": {"timeout": -1}, "/d": {"timeout": 2_000_000_000},
        "/e": {"error-retry": 0}}}))
    assert cfg.options_for("/a").error_retry == 3
    assert cfg.options_for("/b").timeout == 60.0
    assert cfg.options_for("/c").timeout is None
    assert cfg.options_for("/d").timeout == 2.0
    assert cfg.options_for("/e").error_retry == 0


def test_more_than_one_match_is_an_error(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, {"store-options": {
        "/path/to/store/": {"uncompressed": True}, "/path/to/store": {}}}))
    with pytest.raises(ConfigError, match="multiple store-options entries match the location"):
        cfg.options_for("/path/to/store")


def test_bad_option_types_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="error-retry"):
        parse_config(json.dumps({"store-options": {"/a": {"error-retry": "x"}}}), "c.json")
    with pytest.raises(ConfigError, match=r"c\.json"):
        parse_config("{not json", "c.json")
    with pytest.raises(ConfigError, match=r"reading e\.json: Expecting value"):
        parse_config("", "e.json")  # like desync: an empty file is not valid JSON
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "missing.json"))
    # A missing *default* file is fine: built-in defaults.
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    default = load_config(None)
    assert default.path == str(tmp_path / "empty-home" / ".config" / "desync" / "config.json")
    assert default.store_options is None
    assert default.options_for("/x").error_retry == 3


def test_unknown_keys_are_kept_for_plugins(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, {"store-options": {"/a": {"x-plugin-opt": 5}},
                                              "unknown-section": 1}))
    assert dict(cfg.options_for("/a").extra) == {"x-plugin-opt": 5}


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HOME=str(home))
    return subprocess.run([sys.executable, "-m", "desync_core", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_config_command_defaults(tmp_path: Path) -> None:
    proc = run_cli("config", home=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout == ('{\n  "s3-credentials": null,\n  "oci-credentials": null,\n'
                           '  "store-options": null\n}\n')


def test_config_command_prints_and_writes(tmp_path: Path) -> None:
    src = write_config(tmp_path, {"store-options": {"/cache": {"uncompressed": True},
                                                    "https://h/*": {"error-retry": 5,
                                                                    "http-auth": "Bearer x"}},
                                  "s3-credentials": {"http://localhost": {
                                      "access-key": "A", "secret-key": "S"}}})
    proc = run_cli("--config", src, "config", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc) == ["s3-credentials", "oci-credentials", "store-options"]
    assert doc["store-options"]["/cache"] == {
        "n": 10, "timeout": 60000000000, "error-retry": 3,
        "error-retry-base-interval": 500000000, "uncompressed": True}
    assert doc["store-options"]["https://h/*"]["http-auth"] == "Bearer x"
    assert doc["s3-credentials"]["http://localhost"]["access-key"] == "A"
    target = tmp_path / "new" / "config.json"
    proc = run_cli("--config", src, "config", "-w", home=tmp_path)
    assert proc.stdout == f"Writing config to {src}\n"
    proc = run_cli("--config", str(target), "config", "-w", home=tmp_path)
    assert proc.returncode != 0  # an explicitly named missing file is fatal
    # -w without --config writes the default location, creating directories, mode 0600.
    env_home = tmp_path / "home"
    proc = run_cli("config", "-w", home=env_home)
    default = env_home / ".config" / "desync" / "config.json"
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(default.stat().st_mode) == 0o600
    assert json.loads(default.read_text())["store-options"] is None


def test_invalid_config_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    proc = run_cli("--config", str(bad), "list-chunks", "x.caibx", home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"Error: reading {bad}:")
    assert proc.stderr.count("\n") == 1
