"""The commands with ``sftp://`` stores and indexes, through the ``desync-test`` Host
alias of ``~/.ssh/config`` (HostName, Port, User, IdentityFile, IdentitiesOnly), and the
one-line errors for a missing base, a wrong key and an unknown or changed host key.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from desync_core.testing.fixtures import CliResult, assert_one_line_error
from desync_core.testing.servers import SSHServer

Cli = Callable[..., CliResult]

ALIAS = SSHServer.alias


def blob(path: Path, size: int, seed: int = 0) -> bytes:
    """Random data with some repetition (so that chunks repeat)."""
    rng = random.Random(seed)
    part = rng.randbytes(size // 4)
    data = (part + rng.randbytes(size // 4)) * 2
    path.write_bytes(data)
    return data


def chunk_files(base: Path) -> set[str]:
    return {p.name for p in base.rglob("*") if p.is_file()}


def test_make_extract_prune_through_host_alias(ok: Cli, remote: tuple[Path, str],
                                               tmp_path: Path) -> None:
    """make -s sftp:// writes the chunks, extract reads them back byte for byte, and
    prune keeps only the chunks of the index it is given."""
    base, url = remote
    data = blob(tmp_path / "a.bin", 600_000)
    blob(tmp_path / "b.bin", 400_000, seed=1)
    ok("make", "-s", url, tmp_path / "a.caibx", tmp_path / "a.bin")
    ok("make", "-s", url, tmp_path / "b.caibx", tmp_path / "b.bin")
    a_ids = set(ok("list-chunks", tmp_path / "a.caibx").text.split())
    assert {n.removesuffix(".cacnk") for n in chunk_files(base)} > a_ids
    ok("extract", "-s", url, tmp_path / "a.caibx", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    ok("prune", "-s", url, "-y", tmp_path / "a.caibx")
    assert {n.removesuffix(".cacnk") for n in chunk_files(base)} == a_ids
    ok("extract", "-s", url, tmp_path / "a.caibx", tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == data


def test_indexes_on_sftp(ok: Cli, remote: tuple[Path, str], tmp_path: Path) -> None:
    """An index written to and read from sftp://host/dir/x.caibx (temp + rename)."""
    _, url = remote
    data = blob(tmp_path / "blob", 300_000)
    idx_dir = tmp_path / "indexes"
    idx_dir.mkdir()
    index_url = f"sftp://{ALIAS}{idx_dir}/blob.caibx"
    ok("make", "-s", url, index_url, tmp_path / "blob")
    assert os.listdir(idx_dir) == ["blob.caibx"]
    ok("make", tmp_path / "local.caibx", tmp_path / "blob")
    assert (idx_dir / "blob.caibx").read_bytes() == (tmp_path / "local.caibx").read_bytes()
    ok("extract", "-s", url, index_url, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    ok("verify-index", index_url, tmp_path / "out")


def test_sftp_store_as_cache_and_cache_command(ok: Cli, remote: tuple[Path, str],
                                               tmp_path: Path) -> None:
    """An sftp store as the -c cache of an extract, and as the target of ``cache``."""
    base, url = remote
    data = blob(tmp_path / "blob", 300_000)
    local = tmp_path / "local.castr"
    ok("make", "-s", local, tmp_path / "i.caibx", tmp_path / "blob")
    ok("extract", "-s", local, "-c", url, tmp_path / "i.caibx", tmp_path / "out1")
    assert (tmp_path / "out1").read_bytes() == data
    assert chunk_files(base) == chunk_files(local)
    # the cache alone now serves the blob
    ok("extract", "-s", url, tmp_path / "i.caibx", tmp_path / "out2")
    assert (tmp_path / "out2").read_bytes() == data
    other = tmp_path / "other"
    other.mkdir()
    ok("cache", "-s", local, "-c", f"sftp://{ALIAS}{other}", tmp_path / "i.caibx")
    assert chunk_files(other) == chunk_files(local)


def test_verify_repairs_a_corrupt_chunk(cli: Cli, ok: Cli, remote: tuple[Path, str],
                                        tmp_path: Path) -> None:
    """verify -r lists the store over SFTP, reports the bad chunk and removes it."""
    base, url = remote
    blob(tmp_path / "blob", 200_000)
    ok("make", "-s", url, tmp_path / "i.caibx", tmp_path / "blob")
    victim = sorted(p for p in base.rglob("*.cacnk"))[0]
    victim.write_bytes(b"\x28\xb5\x2f\xfd-not-zstd")
    result = cli("verify", "-s", url, "-r")
    assert result.code == 0, result.err
    assert victim.name.removesuffix(".cacnk") in result.err
    assert "removed" in result.err
    assert not victim.exists()


def test_missing_base_is_failed_to_stat(cli: Cli, tmp_path: Path) -> None:
    """A base path that does not exist: desync's message, exit 4, one line."""
    blob(tmp_path / "blob", 100_000)
    result = cli("make", "-s", f"sftp://{ALIAS}{tmp_path}/nowhere", tmp_path / "i.caibx",
                 tmp_path / "blob")
    assert_one_line_error(result, 4, f"failed to stat '{tmp_path}/nowhere/'")


def test_url_user_and_port_beat_the_config(ok: Cli, sshd: SSHServer, tmp_path: Path) -> None:
    """sftp://root@127.0.0.1:PORT/path works without any Host alias (default key and
    known_hosts entry under [127.0.0.1]:PORT)."""
    data = blob(tmp_path / "blob", 100_000)
    (tmp_path / "s").mkdir()
    url = f"sftp://root@127.0.0.1:{sshd.port}{tmp_path}/s"
    ok("make", "-s", url, tmp_path / "i.caibx", tmp_path / "blob")
    ok("extract", "-s", url, tmp_path / "i.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data


# -- refusals -------------------------------------------------------------------------------


def _home_with(tmp_path: Path, sshd: SSHServer, monkeypatch: pytest.MonkeyPatch,
               **changes: str) -> Path:
    home = tmp_path / "home"
    ssh = sshd.write_user_files(home)
    for name, text in changes.items():
        (ssh / name).write_text(text)
    monkeypatch.setenv("HOME", str(home))
    return ssh


def test_wrong_key_is_permission_denied(cli: Cli, sshd: SSHServer, remote: tuple[Path, str],
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key the server does not accept: one line naming user, host and key; exit 4."""
    ssh = _home_with(tmp_path, sshd, monkeypatch)
    config = (ssh / "config").read_text().replace(str(ssh / "id_ed25519"), str(sshd.wrong_key))
    (ssh / "config").write_text(config)
    blob(tmp_path / "blob", 50_000)
    result = cli("make", "-s", remote[1], tmp_path / "i.caibx", tmp_path / "blob")
    line = assert_one_line_error(result, 4, "permission denied (publickey)",
                                 "root@127.0.0.1", str(sshd.wrong_key))
    assert "PRIVATE" not in line


def test_unknown_host_key_is_refused(cli: Cli, sshd: SSHServer, remote: tuple[Path, str],
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No known_hosts entry: refused, with the ssh-keyscan line to trust it."""
    _home_with(tmp_path, sshd, monkeypatch, known_hosts="")
    blob(tmp_path / "blob", 50_000)
    result = cli("make", "-s", remote[1], tmp_path / "i.caibx", tmp_path / "blob")
    assert_one_line_error(result, 4, f"host key of [127.0.0.1]:{sshd.port} is not known",
                          f"ssh-keyscan -p {sshd.port} 127.0.0.1 >>")
    assert list(remote[0].iterdir()) == []


def test_changed_host_key_is_refused(cli: Cli, sshd: SSHServer, remote: tuple[Path, str],
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """known_hosts has another ed25519 key for the host: refused as CHANGED, with the
    ssh-keygen -R line."""
    other = " ".join(Path(f"{sshd.wrong_key}.pub").read_text().split()[:2])
    ssh = _home_with(tmp_path, sshd, monkeypatch,
                     known_hosts=f"[127.0.0.1]:{sshd.port} {other}\n")
    blob(tmp_path / "blob", 50_000)
    result = cli("make", "-s", remote[1], tmp_path / "i.caibx", tmp_path / "blob")
    assert_one_line_error(result, 4, "has CHANGED",
                          f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {ssh / 'known_hosts'}")


def test_proxy_jump_points_to_casync_ssh_path(cli: Cli, sshd: SSHServer, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """ProxyJump is not built in: a one-line error saying how to use OpenSSH instead."""
    ssh = _home_with(tmp_path, sshd, monkeypatch)
    (ssh / "config").write_text((ssh / "config").read_text() + "  ProxyJump elsewhere\n")
    blob(tmp_path / "blob", 50_000)
    result = cli("make", "-s", f"sftp://{ALIAS}{tmp_path}", tmp_path / "i.caibx",
                 tmp_path / "blob")
    assert_one_line_error(result, 4, "ProxyJump", "CASYNC_SSH_PATH=ssh")


# -- CASYNC_SSH_PATH ----------------------------------------------------------------------


def test_casync_ssh_path_runs_the_session_over_the_command(
        ok: Cli, sshd: SSHServer, remote: tuple[Path, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With CASYNC_SSH_PATH set, SFTP runs over ``$CASYNC_SSH_PATH -s -- HOST sftp``
    (desync's argv); here a wrapper around OpenSSH's ssh with the server's config."""
    argv_log = tmp_path / "argv"
    wrapper = tmp_path / "ssh-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {argv_log}\n'
                       f'exec ssh -F {sshd.ssh_config} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CASYNC_SSH_PATH", str(wrapper))
    _, url = remote
    data = blob(tmp_path / "blob", 300_000)
    ok("make", "-s", url, tmp_path / "i.caibx", tmp_path / "blob")
    ok("extract", "-s", url, tmp_path / "i.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    calls = argv_log.read_text().splitlines()
    assert calls
    assert set(calls) == {f"-s -- {ALIAS} sftp"}


def test_casync_ssh_path_failure_is_one_line(cli: Cli, remote: tuple[Path, str],
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that exits at once: a one-line store error naming it and its status."""
    wrapper = tmp_path / "broken-ssh"
    wrapper.write_text("#!/bin/sh\necho 'ssh: nope' >&2\nexit 255\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("CASYNC_SSH_PATH", str(wrapper))
    blob(tmp_path / "blob", 50_000)
    result = cli("make", "-s", remote[1], "--error-retry", "1", tmp_path / "i.caibx",
                 tmp_path / "blob")
    assert result.code == 4, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "broken-ssh -s -- desync-test sftp" in errors[0]
    assert "exited with status 255" in errors[0]
    assert "Traceback" not in result.err


def test_hashed_known_hosts(ok: Cli, sshd: SSHServer, remote: tuple[Path, str],
                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """known_hosts hashed by ``ssh-keygen -H`` (HashKnownHosts) is understood."""
    import subprocess

    ssh = _home_with(tmp_path, sshd, monkeypatch)
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(ssh / "known_hosts")], check=True,
                   capture_output=True, timeout=30)
    assert (ssh / "known_hosts").read_text().startswith("|1|")
    data = blob(tmp_path / "blob", 100_000)
    ok("make", "-s", remote[1], tmp_path / "i.caibx", tmp_path / "blob")
    ok("extract", "-s", remote[1], tmp_path / "i.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data


def test_proxy_command(ok: Cli, sshd: SSHServer, remote: tuple[Path, str], tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """ProxyCommand from the config carries the connection (here OpenSSH's ``ssh -W``
    through the same server)."""
    ssh = _home_with(tmp_path, sshd, monkeypatch)
    log = tmp_path / "proxy.log"
    proxy = f"sh -c 'echo %h:%p >> {log}; exec ssh -F {sshd.ssh_config} -W %h:%p {ALIAS}'"
    (ssh / "config").write_text((ssh / "config").read_text() + f"  ProxyCommand {proxy}\n")
    data = blob(tmp_path / "blob", 100_000)
    ok("make", "-n", "2", "-s", remote[1], tmp_path / "i.caibx", tmp_path / "blob")
    ok("extract", "-n", "2", "-s", remote[1], tmp_path / "i.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    used = log.read_text().splitlines()
    assert used
    assert set(used) == {f"127.0.0.1:{sshd.port}"}
