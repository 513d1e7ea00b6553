"""Every API call gives what its command gives for the same inputs (bytes, ids, counts),
and raises the core's errors where the command fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from desync_core import api
from desync_core.errors import (
    ChunkInvalidError,
    IntegrityError,
    SeedInvalidError,
    StoreError,
    UnknownSchemeError,
    UsageError,
)

Cli = Callable[..., Any]


def chunk_files(store: Path) -> dict[bytes, Path]:
    """The chunk files of a local store by id."""
    return {bytes.fromhex(p.name.split(".")[0]): p for p in store.glob("*/*.cacnk")}


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, Path, Path, bytes]:
    """A blob with repeated parts, its index and a store holding its chunks."""
    data = os.urandom(200_000) + bytes(100_000) + os.urandom(150_000) + bytes(100_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    store = tmp_path / "store"
    api.make(str(path), str(tmp_path / "blob.caibx"), store=str(store), chunk_size="2:8:32")
    return path, tmp_path / "blob.caibx", store, data


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small directory tree (files, a subdirectory, a symlink, an empty file)."""
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(120_000))
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    os.symlink("a.txt", root / "link")
    return root


# -- verify, verify-index ---------------------------------------------------------------

def test_verify_finds_reports_and_repairs_like_the_cli(blob: tuple[Path, Path, Path, bytes],
                                                       cli: Cli) -> None:
    _path, _index, store, _data = blob
    files = chunk_files(store)
    clean = api.verify(str(store))
    assert clean.ok
    assert clean.checked == len(files)
    assert clean.invalid == ()
    bad_id = sorted(files)[0]
    files[bad_id].write_bytes(b"invalid")
    found = api.verify(str(store), workers=2)
    assert found.invalid == (bad_id,)
    assert found.remaining == (bad_id,)
    assert not found.ok
    assert found.removed == ()
    result = cli("verify", "-s", store)
    assert result.code == IntegrityError.exit_code
    assert result.err.splitlines()[0] == found.messages[0]
    assert found.messages[0].startswith(f"invalid chunk {bad_id.hex()}")
    repaired = api.verify(str(store), repair=True)
    assert repaired.removed == (bad_id,)
    assert repaired.ok
    assert not files[bad_id].exists()
    assert api.verify(str(store)).checked == len(files) - 1


def test_verify_refuses_a_store_it_cannot_list() -> None:
    with pytest.raises(UsageError, match="cannot be listed"):
        api.verify("http://127.0.0.1:9/store/")


def test_verify_index(blob: tuple[Path, Path, Path, bytes], tmp_path: Path) -> None:
    path, index, _store, data = blob
    result = api.verify_index(str(index), str(path))
    assert result == api.VerifyIndexResult(chunks=len(api.read_index(str(index))),
                                           size=len(data))
    changed = tmp_path / "changed"
    changed.write_bytes(data[:1000] + b"X" + data[1001:])
    with pytest.raises(SeedInvalidError):
        api.verify_index(str(index), str(changed))
    with pytest.raises(UsageError, match="No such file"):
        api.verify_index(str(index), str(tmp_path / "missing"))


# -- prune, cache, chop -----------------------------------------------------------------

def test_prune_dry_run_lists_what_the_cli_lists_then_prunes(
        blob: tuple[Path, Path, Path, bytes], tmp_path: Path, ok: Cli) -> None:
    _path, index, store, data = blob
    other = tmp_path / "other"
    other.write_bytes(os.urandom(100_000))
    api.make(str(other), str(tmp_path / "other.caibx"), store=str(store), chunk_size="2:8:32")
    keep = set(api.read_index(str(index)).chunk_ids())
    before = set(chunk_files(store))
    dry = api.prune(str(store), [str(index)], dry_run=True)
    cli_ids = [bytes.fromhex(x) for x in ok("prune", "--dry-run", "-s", store, index)
               .out.decode().split()]
    assert list(dry.candidates) == cli_ids == sorted(before - keep)
    assert dry.dry_run
    assert dry.deleted == 0
    assert dry.kept == len(keep)
    assert set(chunk_files(store)) == before  # nothing deleted
    done = api.prune(str(store), [str(index)])
    assert done.deleted == len(before - keep)
    assert not done.dry_run
    assert set(chunk_files(store)) == keep
    api.extract(str(index), str(tmp_path / "out"), stores=[str(store)])
    assert (tmp_path / "out").read_bytes() == data
    # a keep list of ids (one per line) keeps chunks without an index
    first = sorted(keep)[0]
    (tmp_path / "keep.txt").write_text(first.hex() + "\n")
    assert api.prune(str(store), keep_lists=[str(tmp_path / "keep.txt")]).deleted == \
        len(keep) - 1
    assert set(chunk_files(store)) == {first}


def test_prune_needs_something_to_keep_and_a_store(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="keep"):
        api.prune(str(tmp_path))
    with pytest.raises(StoreError, match="does not exist"):
        api.prune(str(tmp_path / "nothing"), keep=[b"\0" * 32])


def test_cache_copies_what_the_cache_lacks(blob: tuple[Path, Path, Path, bytes],
                                           tmp_path: Path, ok: Cli) -> None:
    _path, index, store, _data = blob
    ids = set(api.read_index(str(index)).chunk_ids())
    cache = tmp_path / "cache"
    first = api.cache(str(index), stores=[str(store)], cache=str(cache))
    assert first == api.CacheResult(wanted=len(ids), copied=len(ids))
    assert set(chunk_files(cache)) == ids
    ok("cache", "-s", store, "-c", tmp_path / "cli-cache", index)
    files = chunk_files(cache)
    assert {i: p.read_bytes() for i, p in chunk_files(tmp_path / "cli-cache").items()} == \
        {i: p.read_bytes() for i, p in files.items()}
    assert api.cache([str(index)], stores=[str(store)], cache=str(cache)).copied == 0
    with pytest.raises(UsageError, match="no source store"):
        api.cache(str(index), stores=[], cache=str(cache))


def test_cache_skips_ignored_chunks(blob: tuple[Path, Path, Path, bytes],
                                    tmp_path: Path) -> None:
    _path, index, store, _data = blob
    ids = sorted(set(api.read_index(str(index)).chunk_ids()))
    (tmp_path / "skip.txt").write_text("\n".join(i.hex() for i in ids[:3]) + "\n")
    result = api.cache(str(index), stores=[str(store)], cache=str(tmp_path / "c"),
                       ignore_lists=[str(tmp_path / "skip.txt")])
    assert result.copied == len(ids) - 3
    assert set(chunk_files(tmp_path / "c")) == set(ids[3:])


def test_chop_stores_the_chunks_of_the_index(blob: tuple[Path, Path, Path, bytes],
                                             tmp_path: Path, ok: Cli) -> None:
    path, index, _store, data = blob
    target = tmp_path / "chopped"
    idx = api.read_index(str(index))
    result = api.chop(str(index), str(path), store=str(target))
    assert result == api.ChopResult(chunks=len(idx), stored=len(set(idx.chunk_ids())))
    assert set(chunk_files(target)) == set(idx.chunk_ids())
    ok("chop", "-s", tmp_path / "cli-chopped", index, path)
    assert {i: p.read_bytes() for i, p in chunk_files(tmp_path / "cli-chopped").items()} == \
        {i: p.read_bytes() for i, p in chunk_files(target).items()}
    assert api.chop(idx, str(path), store=str(target)).stored == 0
    api.extract(idx, str(tmp_path / "out"), stores=[str(target)])
    assert (tmp_path / "out").read_bytes() == data
    wrong = tmp_path / "wrong"
    wrong.write_bytes(bytes(len(data)))
    with pytest.raises(ChunkInvalidError):
        api.chop(idx, str(wrong), store=str(tmp_path / "w"))


# -- info, inspect-chunks ---------------------------------------------------------------

def test_info_equals_the_cli_json(blob: tuple[Path, Path, Path, bytes], tmp_path: Path,
                                  ok: Cli) -> None:
    _path, index, store, data = blob
    seed = tmp_path / "seed"
    seed.write_bytes(data[:250_000])
    api.make(str(seed), str(tmp_path / "seed.caibx"), chunk_size="2:8:32")
    cache = tmp_path / "cache"
    api.chop(str(tmp_path / "seed.caibx"), str(seed), store=str(cache))
    inspected = api.inspect_chunks(str(index), store=str(store),
                                   output=str(tmp_path / "chunks.json"))
    result = api.info(str(index), stores=[str(store)], seeds=[str(tmp_path / "seed.caibx")],
                      cache=str(cache), chunks_info=inspected)
    cli_json = json.loads(ok("info", "-s", store, "--seed", tmp_path / "seed.caibx",
                             "-c", cache, "--chunks-info", tmp_path / "chunks.json",
                             index).out)
    assert result.to_dict() == cli_json
    assert list(result.to_dict()) == list(cli_json)  # same keys, same order
    assert result.size == len(data)
    assert result.in_store == result.unique
    assert 0 < result.in_seed < result.unique
    assert result.dedup_size_not_in_seed_nor_cache_compressed > 0
    assert api.InfoResult.from_dict(cli_json) == result
    # the chunks-info file and parsed JSON do the same
    assert api.info(str(index), chunks_info=str(tmp_path / "chunks.json")) == \
        api.info(str(index), chunks_info=inspected.as_json())


def test_inspect_chunks_equals_the_cli(blob: tuple[Path, Path, Path, bytes], tmp_path: Path,
                                       ok: Cli) -> None:
    _path, index, store, _data = blob
    result = api.inspect_chunks(str(index), store=str(store))
    assert result.text.encode() == ok("inspect-chunks", "-s", store, index).out
    idx = api.read_index(str(index))
    assert [c.id for c in result.chunks] == [c.id for c in idx]
    assert [c.size for c in result.chunks] == [c.size for c in idx]
    files = chunk_files(store)
    assert all(c.stored_size == files[c.id].stat().st_size for c in result.chunks)
    plain = api.inspect_chunks(idx)
    assert all(c.stored_size is None for c in plain.chunks)
    with pytest.raises(UsageError, match="not a local store"):
        api.inspect_chunks(idx, store="http://127.0.0.1:9/")


# -- tar, untar, mtree ------------------------------------------------------------------

def test_tar_writes_what_the_cli_writes(tree: Path, tmp_path: Path, ok: Cli) -> None:
    result = api.tar(str(tmp_path / "api.catar"), str(tree))
    assert result == api.TarResult(output=str(tmp_path / "api.catar"), index=None)
    ok("tar", tmp_path / "cli.catar", tree)
    assert (tmp_path / "api.catar").read_bytes() == (tmp_path / "cli.catar").read_bytes()
    made = api.tar(str(tmp_path / "api.caidx"), str(tree), store=str(tmp_path / "s1"),
                   chunk_size="2:8:32")
    ok("tar", "-i", "-s", tmp_path / "s2", "-m", "2:8:32", tmp_path / "cli.caidx", tree)
    assert made.index is not None
    assert (tmp_path / "api.caidx").read_bytes() == (tmp_path / "cli.caidx").read_bytes() \
        == made.index.to_bytes()
    assert set(chunk_files(tmp_path / "s1")) == set(chunk_files(tmp_path / "s2"))


def test_tar_refuses_bad_combinations(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--tar-add-root"):
        api.tar(str(tmp_path / "x.catar"), str(tree), tar_add_root=True)
    with pytest.raises(UsageError, match="input and output"):
        api.tar(str(tree), str(tree))


def _tree_files(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = ("-> " + os.readlink(p) if p.is_symlink() else
                        "dir" if p.is_dir() else p.read_bytes())
    return out


def test_untar_restores_the_tree(tree: Path, tmp_path: Path) -> None:
    api.tar(str(tmp_path / "t.catar"), str(tree))
    assert api.untar(str(tmp_path / "t.catar"), str(tmp_path / "from_catar")) == \
        api.UntarResult(target=str(tmp_path / "from_catar"), output_format="disk")
    api.tar(str(tmp_path / "t.caidx"), str(tree), store=str(tmp_path / "s"))
    api.untar(str(tmp_path / "t.caidx"), str(tmp_path / "from_index"),
              stores=[str(tmp_path / "s")])
    assert _tree_files(tmp_path / "from_catar") == _tree_files(tree) == \
        _tree_files(tmp_path / "from_index")
    with pytest.raises(UsageError, match="-i requires"):
        api.untar(str(tmp_path / "t.caidx"), str(tmp_path / "x"), index=True)


def test_mtree_entries_are_the_cli_listing(tree: Path, tmp_path: Path, ok: Cli) -> None:
    api.tar(str(tmp_path / "t.catar"), str(tree))
    api.tar(str(tmp_path / "t.caidx"), str(tree), store=str(tmp_path / "s"))
    listings = {
        "dir": (list(api.mtree(str(tree))), ok("mtree", tree).out),
        "catar": (list(api.mtree(str(tmp_path / "t.catar"))),
                  ok("mtree", tmp_path / "t.catar").out),
        "caidx": (list(api.mtree(str(tmp_path / "t.caidx"), stores=[str(tmp_path / "s")])),
                  ok("mtree", "-i", "-s", tmp_path / "s", tmp_path / "t.caidx").out),
    }
    for entries, cli_out in listings.values():
        text = "#mtree v1.0\n" + "".join(e.line + "\n" for e in entries)
        assert text.encode() == cli_out
    by_path = {e.path: e for e in listings["caidx"][0]}
    assert by_path[b""].type == "dir"
    assert by_path[b"link"].type == "link"
    assert by_path[b"link"].target == b"a.txt"
    hello = by_path[b"a.txt"]
    assert (hello.type, hello.size) == ("file", 6)
    assert hello.digest == api.context().digest.sum(b"hello\n").hex()
    assert hello.mode == os.stat(tree / "a.txt").st_mode & 0o777
    assert hello.mtime_ns == os.stat(tree / "a.txt").st_mtime_ns
    assert by_path[b"sub/deeper/empty"].size == 0
    # stopping early closes the archive and its stores
    with closing(api.mtree(str(tmp_path / "t.caidx"), stores=[str(tmp_path / "s")])) as it:
        assert next(it).path == b""


# -- servers ------------------------------------------------------------------------------

def test_chunk_server_serves_a_store(blob: tuple[Path, Path, Path, bytes],
                                     tmp_path: Path) -> None:
    _path, index, store, data = blob
    with api.chunk_server(str(store)) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/"
        stats = api.extract(str(index), str(tmp_path / "out"), stores=[server.url])
        assert (tmp_path / "out").read_bytes() == data
        assert stats.chunks_from_store > 0
        (tmp_path / "new").write_bytes(os.urandom(50_000))
        with pytest.raises(StoreError):  # read-only: no uploads
            api.make(str(tmp_path / "new"), store=server.url)
    with pytest.raises(urllib.error.URLError):  # closed: nothing listens any more
        urllib.request.urlopen(server.url, timeout=5)


def test_writable_chunk_server_takes_chunks(blob: tuple[Path, Path, Path, bytes],
                                            tmp_path: Path) -> None:
    path, index, _store, _data = blob
    target = tmp_path / "uploaded"
    target.mkdir()
    server = api.chunk_server(str(target), writable=True)
    try:
        result = api.chop(str(index), str(path), store=server.url)
        assert result.stored == len(set(api.read_index(str(index)).chunk_ids()))
    finally:
        server.close()
    server.close()  # twice is fine
    assert set(chunk_files(target)) == set(api.read_index(str(index)).chunk_ids())


def test_chunk_server_store_file_reload_auth_and_log(blob: tuple[Path, Path, Path, bytes],
                                                    tmp_path: Path) -> None:
    """``store_file`` + ``reload()`` swap the upstream like SIGHUP; ``authorization`` is
    required of clients; ``log`` gets one line per request."""
    import dataclasses

    _path, index, store, data = blob
    empty = tmp_path / "empty"
    empty.mkdir()
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(empty)]}))
    log = tmp_path / "requests.log"
    ctx = api.context()
    with api.chunk_server(store_file=str(store_file), authorization="Bearer s3cret",
                          log=str(log), ctx=ctx) as server:
        client = dataclasses.replace(ctx, overrides={"http_auth": "Bearer s3cret"})
        with pytest.raises(StoreError):  # the empty store serves nothing
            api.extract(str(index), str(tmp_path / "out"), stores=[server.url], ctx=client)
        store_file.write_text(json.dumps({"stores": [str(store)]}))
        assert server.reload()  # type: ignore[attr-defined]
        api.extract(str(index), str(tmp_path / "out"), stores=[server.url], ctx=client)
        assert (tmp_path / "out").read_bytes() == data
        with pytest.raises(StoreError):  # no Authorization header
            api.extract(str(index), str(tmp_path / "out2"), stores=[server.url])
    lines = log.read_text().splitlines()
    assert lines
    assert all("GET" in line or "HEAD" in line for line in lines)


def test_chunk_server_refuses_bad_flags(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no store"):
        api.chunk_server([])
    with pytest.raises(UsageError, match="Only one upstream"):
        api.chunk_server([str(tmp_path / "a"), str(tmp_path / "b")], writable=True)
    with pytest.raises(UsageError, match="--key and --cert"):
        api.chunk_server(str(tmp_path), cert="x.pem")


def test_index_server_serves_and_takes_indexes(blob: tuple[Path, Path, Path, bytes],
                                               tmp_path: Path) -> None:
    _path, index, _store, _data = blob
    with api.index_server(str(tmp_path)) as server:
        assert api.read_index(server.url + "blob.caibx").to_bytes() == index.read_bytes()
        with pytest.raises(StoreError):
            api.write_index(server.url + "new.caibx", api.read_index(str(index)))
    up = tmp_path / "up"
    up.mkdir()
    with api.index_server(str(up), writable=True) as server:
        api.write_index(server.url + "new.caibx", api.read_index(str(index)))
    assert (up / "new.caibx").read_bytes() == index.read_bytes()
    with pytest.raises(StoreError, match="not a directory"):
        api.index_server(str(tmp_path / "missing"))


def test_servers_without_the_http_plugin_name_the_package() -> None:
    code = ("from desync_core import api\n"
            "from desync_core.errors import UnknownSchemeError\n"
            "try:\n    api.chunk_server('/tmp')\n"
            "except UnknownSchemeError as exc:\n    print(exc)\n")
    env = {**os.environ, "DESYNC_DISABLE_PLUGINS": "store_http"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "the chunk-server command needs the desync-store-http plugin" in out
    assert UnknownSchemeError.exit_code == 3


def test_command_api_of_other_commands() -> None:
    from desync_core.api.servers import command_api
    from desync_core.errors import PluginError
    from desync_core.plugins import get_registries

    with pytest.raises(UnknownSchemeError, match="no installed plugin provides"):
        command_api("no-such-command")
    with pytest.raises(PluginError, match="no Python API"):
        command_api("make")  # a core command: its API is desync_core.api itself
    commands = get_registries().commands.commands
    if "pull" in commands:  # desync-store-ssh installed: a plugin command without an API
        with pytest.raises(PluginError, match=r"no module desync_store_ssh\.api"):
            command_api("pull")


def test_errors_are_desync_errors_never_exits(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        api.cache(str(tmp_path / "missing.caibx"), stores=[str(tmp_path)], cache="")
    with pytest.raises(StoreError):
        api.info(str(tmp_path / "missing.caibx"))
