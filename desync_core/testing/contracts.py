"""Contract tests every chunk and index store passes, local and remote alike.

A store package subclasses the classes here and provides fixtures::

    from desync_core.testing import WritableChunkStoreContract

    class TestMyStore(WritableChunkStoreContract):
        @pytest.fixture
        def store(self, my_server):
            return open_chunk_store("my://127.0.0.1:1234/store")

        def put_raw(self, store, key, data):      # bypasses the store under test
            ...

        def get_raw(self, store, key):            # None if the object does not exist
            ...

A store whose objects are files in a local directory (a local store, or a server in
front of one) can list :class:`LocalDirectoryRaw` before the contract instead of
writing ``put_raw``/``get_raw``.

Keys are casync layout keys relative to the store's base (``abcd/abcd….cacnk``).
Stores should be opened through the registry (:func:`open_chunk_store`) so that the
plugin's entry point is exercised too.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import threading
from typing import Any

import pytest

from desync_core.context import Context
from desync_core.digest import SHA512_256
from desync_core.errors import ChunkInvalidError, ChunkMissingError, IndexNotFoundError
from desync_core.stores.base import (
    ChunkStore,
    IndexStore,
    PrunableChunkStore,
    WritableChunkStore,
    WritableIndexStore,
    chunk_key,
)
from desync_core.stores.chunk import Chunk, compress
from desync_core.stores.wrappers import VerifyingStore


def open_chunk_store(location: str, ctx: Context | None = None) -> ChunkStore:
    """Open a chunk store through the plugin registry, as the CLI does."""
    return (ctx or Context()).open_chunk_store(location)


def open_index_store(location: str, ctx: Context | None = None) -> IndexStore:
    """Open an index store through the plugin registry."""
    return (ctx or Context()).open_index_store(location)


def sample_chunk(seed: int = 0, size: int = 3000) -> tuple[bytes, bytes]:
    """Deterministic chunk data and its SHA-512/256 id."""
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    data = data[:size]
    return SHA512_256.sum(data), data


def _stored_form(store: ChunkStore, data: bytes) -> bytes:
    # The store's codec: compression, then encryption when the store encrypts.
    return bytes(store.codec.encode(data))


def _worker_has(store: ChunkStore, chunk_id: bytes, queue: Any) -> None:
    try:
        queue.put(("ok", store.has_chunk(chunk_id), bytes(store.get_chunk(chunk_id).data())))
    except Exception as exc:  # report anything to the parent
        queue.put(("error", repr(exc), b""))


def _present_yet(store: ChunkStore, chunk_id: bytes) -> bool:
    """``has_chunk`` while another process writes: a transient error (one the retrying
    layer would retry, e.g. a registry answering 500 while it writes the same tag) means
    "not yet" here, as this store is used without that layer."""
    from desync_core.errors import StoreConnectionError

    try:
        return store.has_chunk(chunk_id)
    except StoreConnectionError:
        return False


def _worker_store_many(store: Any, chunks: list[tuple[bytes, bytes]]) -> None:
    """(in a spawned process) Store chunks one after another until killed."""
    for chunk_id, data in chunks:
        store.store_chunk(Chunk(chunk_id, data))


class _OptOuts:
    """Contract tests a store may leave out, each with the reason it cannot pass.

    Set ``OPT_OUTS = {"test_usable_in_spawned_worker": "an in-memory store cannot be
    shared with spawned workers"}`` on the subclass. A left-out test is reported as
    skipped with that reason (``pytest -ra`` lists them); an unknown test name or an
    empty reason is an error, so opt-outs cannot hide by accident.
    """

    OPT_OUTS: dict[str, str] = {}

    @pytest.fixture(autouse=True)
    def _contract_opt_outs(self, request: pytest.FixtureRequest) -> None:
        for name, reason in self.OPT_OUTS.items():
            if not hasattr(self, name) or not name.startswith("test_"):
                raise AssertionError(f"OPT_OUTS names no contract test: {name!r}")
            if not reason.strip():
                raise AssertionError(f"OPT_OUTS[{name!r}] needs a reason")
        opted = self.OPT_OUTS.get(getattr(request.node, "originalname", request.node.name))
        if opted:
            pytest.skip(f"opted out of the store contract: {opted}")


class ChunkStoreContract(_OptOuts):
    """Reading: every readable chunk store passes these."""

    @pytest.fixture
    def store(self) -> ChunkStore:
        """The store under test (override)."""
        raise NotImplementedError

    def cli_arguments(self, store: ChunkStore, tmp_path: Any) -> list[str]:
        """Global ``desync`` flags that make a CLI run open ``str(store)`` with the
        same options as the store under test (default: a config file holding its
        store options; override to add credentials or the like)."""
        import json

        path = tmp_path / "contract-config.json"
        path.write_text(json.dumps({"store-options": {str(store): store.options.to_json()}}))
        return ["--config", str(path)]

    def put_raw(self, store: ChunkStore, key: str, data: bytes) -> None:
        """Write an object bypassing the store's API (override)."""
        raise NotImplementedError

    def get_raw(self, store: ChunkStore, key: str) -> bytes | None:
        """Read an object bypassing the store's API; None if absent (override)."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------

    def put_chunk_raw(self, store: ChunkStore, seed: int = 0) -> tuple[bytes, bytes]:
        """Put a valid chunk with put_raw; returns (id, data)."""
        chunk_id, data = sample_chunk(seed)
        self.put_raw(store, chunk_key(chunk_id, store.codec.extension), _stored_form(store, data))
        return chunk_id, data

    # -- tests -------------------------------------------------------------------------

    def test_missing_chunk_raises_not_found(self, store: ChunkStore) -> None:
        """A missing chunk raises ChunkMissingError; it never returns empty data."""
        chunk_id, _ = sample_chunk(999)
        with pytest.raises(ChunkMissingError):
            store.get_chunk(chunk_id)

    def test_has_chunk_agrees_with_get(self, store: ChunkStore) -> None:
        """has_chunk is False for a missing chunk and True for a present one."""
        missing, _ = sample_chunk(998)
        assert store.has_chunk(missing) is False
        chunk_id, _ = self.put_chunk_raw(store, 1)
        assert store.has_chunk(chunk_id) is True

    def test_raw_put_reads_back(self, store: ChunkStore) -> None:
        """A chunk written at its layout key reads back (decoded) through the API."""
        chunk_id, data = self.put_chunk_raw(store, 2)
        assert bytes(store.get_chunk(chunk_id).data()) == data

    def test_get_chunks_yields_none_for_missing(self, store: ChunkStore) -> None:
        """get_chunks answers in request order with None for missing chunks."""
        present, data = self.put_chunk_raw(store, 3)
        missing, _ = sample_chunk(997)
        got = list(store.get_chunks([missing, present]))
        assert [cid for cid, _ in got] == [missing, present]
        assert got[0][1] is None
        assert got[1][1] is not None
        assert bytes(got[1][1].data()) == data

    def test_corrupt_chunk_detected_by_verifying_store(self, store: ChunkStore) -> None:
        """A chunk whose content is another chunk's is rejected on verified reads."""
        chunk_id, _ = sample_chunk(4)
        _, other = sample_chunk(5)
        self.put_raw(store, chunk_key(chunk_id, store.codec.extension), _stored_form(store, other))
        with pytest.raises(ChunkInvalidError):
            VerifyingStore(store, SHA512_256).get_chunk(chunk_id)

    def test_garbage_chunk_detected(self, store: ChunkStore) -> None:
        """Undecodable bytes under a chunk's key are an invalid chunk, not a crash."""
        chunk_id, _ = sample_chunk(6)
        self.put_raw(store, chunk_key(chunk_id, store.codec.extension), b"\x28\xb5\x2f\xfdgarbage")
        with pytest.raises(ChunkInvalidError):
            VerifyingStore(store, SHA512_256).get_chunk(chunk_id)

    def test_pickle_round_trip(self, store: ChunkStore) -> None:
        """A store pickles as its configuration and the copy is usable and equal."""
        chunk_id, data = self.put_chunk_raw(store, 7)
        copy = pickle.loads(pickle.dumps(store))
        assert copy == store
        assert str(copy) == str(store)
        assert bytes(copy.get_chunk(chunk_id).data()) == data
        copy.close()

    def test_usable_in_spawned_worker(self, store: ChunkStore) -> None:
        """A store re-opens from its location in a worker process (spawn)."""
        chunk_id, data = self.put_chunk_raw(store, 8)
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_worker_has, args=(store, chunk_id, queue))
        proc.start()
        status, has, got = queue.get(timeout=120)
        proc.join(60)
        assert status == "ok", has
        assert has is True
        assert got == data

    def test_reopen_from_str(self, store: ChunkStore) -> None:
        """``str(store)`` is a location that opens a store of the same kind."""
        again = open_chunk_store(str(store))
        assert type(again) is type(store)
        assert str(again) == str(store)
        again.close()

    def test_close_twice(self, store: ChunkStore) -> None:
        """close() may be called twice."""
        store.close()
        store.close()


class WritableChunkStoreContract(ChunkStoreContract):
    """Writing: stores that accept chunks pass these too."""

    def test_is_writable(self, store: ChunkStore) -> None:
        """The store declares the capability."""
        assert isinstance(store, WritableChunkStore)

    def test_store_then_get(self, store: WritableChunkStore) -> None:
        """A stored chunk reads back and sits at its casync layout key."""
        chunk_id, data = sample_chunk(20)
        store.store_chunk(Chunk(chunk_id, data))
        assert bytes(store.get_chunk(chunk_id).data()) == data
        raw = self.get_raw(store, chunk_key(chunk_id, store.codec.extension))
        assert raw is not None
        assert store.codec.decode(raw, chunk_id) == data

    def test_store_is_idempotent(self, store: WritableChunkStore) -> None:
        """Storing the same chunk twice succeeds."""
        chunk_id, data = sample_chunk(21)
        store.store_chunk(Chunk(chunk_id, data))
        store.store_chunk(Chunk(chunk_id, data))
        assert bytes(store.get_chunk(chunk_id).data()) == data

    def test_concurrent_writers_of_one_chunk(self, store: WritableChunkStore) -> None:
        """Eight threads storing the same chunk all succeed."""
        chunk_id, data = sample_chunk(22, 200_000)
        errors: list[BaseException] = []

        def write() -> None:
            try:
                store.store_chunk(Chunk(chunk_id, data))
            except BaseException as exc:  # collect for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=write) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert bytes(VerifyingStore(store, SHA512_256).get_chunk(chunk_id).data()) == data

    def test_stored_bytes_match_casync(self, store: WritableChunkStore) -> None:
        """Compressed stores write casync's exact bytes (zstd level 3, no checksum);
        encrypted ones seal those bytes (a random nonce each time)."""
        chunk_id, data = sample_chunk(23)
        store.store_chunk(Chunk(chunk_id, data))
        raw = self.get_raw(store, chunk_key(chunk_id, store.codec.extension))
        assert raw is not None
        plain_layer = compress(data) if store.codec.compressed else data
        assert store.codec.unseal(raw, chunk_id) == plain_layer

    def test_interrupted_writes_leave_no_partial_object(self, store: WritableChunkStore) -> None:
        """A writer killed (SIGKILL) in the middle of storing large chunks leaves each
        chunk either absent or complete under its final name, never a partial object."""
        import signal
        import time

        chunks = [sample_chunk(100 + k, 4 << 20) for k in range(12)]
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=_worker_store_many, args=(store, chunks))
        proc.start()
        try:
            deadline = time.monotonic() + 120
            while not _present_yet(store, chunks[0][0]):  # killed while writing the next
                assert proc.is_alive() or proc.exitcode == 0, "the writer failed"
                assert time.monotonic() < deadline, "the first chunk never appeared"
                time.sleep(0.01)
            time.sleep(0.05)
        finally:
            if proc.pid is not None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(60)
        present = 0
        for chunk_id, data in chunks:
            raw = self.get_raw(store, chunk_key(chunk_id, store.codec.extension))
            if raw is None:
                continue
            present += 1
            assert store.codec.decode(raw, chunk_id) == data, \
                f"partial object under the final name of chunk {chunk_id.hex()}"
            assert bytes(VerifyingStore(store, SHA512_256).get_chunk(chunk_id).data()) == data
        assert present >= 1

    def test_cli_make_then_extract(self, store: WritableChunkStore, tmp_path: Any) -> None:
        """End to end through the CLI and the plugin's entry point: ``make -s STORE``
        then ``extract -s STORE`` gives the same bytes, and ``verify-index`` agrees."""
        from desync_core.cli import run

        blob = tmp_path / "contract-blob"
        blob.write_bytes(os.urandom(300_000) + bytes(100_000) + os.urandom(200_000))
        index, out = tmp_path / "contract.caibx", tmp_path / "contract-out"
        flags = self.cli_arguments(store, tmp_path)
        assert run([*flags, "make", "-s", str(store), str(index), str(blob)]) == 0
        assert run([*flags, "extract", "-s", str(store), str(index), str(out)]) == 0
        assert out.read_bytes() == blob.read_bytes()
        assert run([*flags, "verify-index", str(index), str(out)]) == 0

    def test_stored_encoded_chunk_is_passed_through(self, store: WritableChunkStore) -> None:
        """A chunk that arrives already encoded is stored without re-encoding."""
        chunk_id, data = sample_chunk(24)
        stored = _stored_form(store, data)
        store.store_chunk(Chunk(chunk_id, encoded=stored, codec=store.codec))
        assert self.get_raw(store, chunk_key(chunk_id, store.codec.extension)) == stored


class PrunableChunkStoreContract(WritableChunkStoreContract):
    """Listing and deleting: prunable stores pass these too."""

    def test_iter_and_remove(self, store: PrunableChunkStore) -> None:
        """Stored chunks are listed; removed ones are gone; non-chunk keys are ignored."""
        ids = []
        for seed in (30, 31, 32):
            chunk_id, data = sample_chunk(seed)
            store.store_chunk(Chunk(chunk_id, data))
            ids.append(chunk_id)
        self.put_raw(store, "abcd/not-a-chunk.txt", b"x")
        assert set(ids) <= set(store.iter_chunk_ids())
        store.remove_chunk(ids[0])
        assert not store.has_chunk(ids[0])
        with pytest.raises(ChunkMissingError):
            store.remove_chunk(ids[0])

    def test_prune_keeps_only_referenced(self, store: PrunableChunkStore) -> None:
        """prune deletes exactly the chunks not kept."""
        ids = []
        for seed in (40, 41, 42, 43):
            chunk_id, data = sample_chunk(seed)
            store.store_chunk(Chunk(chunk_id, data))
            ids.append(chunk_id)
        store.prune({ids[0], ids[2]})
        assert set(store.iter_chunk_ids()) == {ids[0], ids[2]}

    def test_cli_make_extract_prune(self, store: PrunableChunkStore, tmp_path: Any) -> None:
        """End to end through the CLI: two blobs made into the store, ``prune`` with
        the second's index keeps exactly its chunks, and it still extracts."""
        from desync_core.cli import run
        from desync_core.index import Index

        flags = self.cli_arguments(store, tmp_path)
        blobs = []
        for k in (1, 2):
            blob = tmp_path / f"contract-blob{k}"
            blob.write_bytes(os.urandom(250_000))
            index = tmp_path / f"contract{k}.caibx"
            assert run([*flags, "make", "-s", str(store), str(index), str(blob)]) == 0
            blobs.append((blob, index))
        keep = set(Index.from_bytes((tmp_path / "contract2.caibx").read_bytes()).chunk_ids())
        gone = set(Index.from_bytes((tmp_path / "contract1.caibx").read_bytes()).chunk_ids())
        assert run([*flags, "prune", "-y", "-s", str(store), str(blobs[1][1])]) == 0
        listed = set(store.iter_chunk_ids())
        assert keep <= listed
        assert not (gone - keep) & listed
        out = tmp_path / "contract-out"
        assert run([*flags, "extract", "-s", str(store), str(blobs[1][1]), str(out)]) == 0
        assert out.read_bytes() == blobs[1][0].read_bytes()


class IndexStoreContract(_OptOuts):
    """Index stores: get (and, if writable, put) index files by name."""

    @pytest.fixture
    def index_store(self) -> IndexStore:
        """The index store under test (override)."""
        raise NotImplementedError

    def put_raw_index(self, store: IndexStore, name: str, data: bytes) -> None:
        """Write an index file bypassing the API (override)."""
        raise NotImplementedError

    @staticmethod
    def sample_index() -> bytes:
        """A small valid index file."""
        from desync_core.chunker import ChunkerParams
        from desync_core.index import Index, blob_index_flags

        ids = [sample_chunk(i)[0] for i in range(3)]
        return Index.from_chunks([100, 250, 300], ids, ChunkerParams(64, 256, 1024),
                                 blob_index_flags(SHA512_256)).to_bytes()

    def test_non_index_is_rejected_at_its_header(self, index_store: IndexStore) -> None:
        """A 16 MiB blob stored under an index name is rejected after its header by the
        readers' bounded read over ``iter_index``, without the store holding it whole."""
        import tracemalloc

        from desync_core.errors import IndexFormatError, StoreError
        from desync_core.index import PieceReader, read_index_stream

        blob = bytes(range(256)) * (64 * 1024)
        self.put_raw_index(index_store, "blob.caibx", blob)
        del blob
        index_store.has_index("missing.caibx")  # connected (client set-up is not counted)
        tracemalloc.start()
        try:
            pieces = index_store.iter_index("blob.caibx")
            # (an index server may refuse to serve it at all: a store error)
            with pytest.raises((IndexFormatError, StoreError)):
                read_index_stream(PieceReader(pieces), "blob.caibx")  # type: ignore[arg-type]
            getattr(pieces, "close", lambda: None)()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20, f"the store held {peak >> 20} MiB to read an index header"

    def test_missing_index(self, index_store: IndexStore) -> None:
        """A missing index raises IndexNotFoundError."""
        with pytest.raises(IndexNotFoundError):
            index_store.get_index("missing.caibx")
        assert index_store.has_index("missing.caibx") is False

    def test_raw_put_reads_back(self, index_store: IndexStore) -> None:
        """An index put directly reads back byte for byte."""
        data = self.sample_index()
        self.put_raw_index(index_store, "a.caibx", data)
        assert index_store.get_index("a.caibx") == data
        assert index_store.has_index("a.caibx") is True

    def test_store_index(self, index_store: IndexStore) -> None:
        """Writable index stores accept an index and return it unchanged."""
        if not isinstance(index_store, WritableIndexStore):
            pytest.skip("read-only index store")
        data = self.sample_index()
        index_store.store_index("b.caibx", data)
        index_store.store_index("b.caibx", data)
        assert index_store.get_index("b.caibx") == data

    def test_rejects_path_traversal(self, index_store: IndexStore) -> None:
        """Names with slashes or ``..`` are refused, for reads and writes."""
        for name in ("../evil.caibx", "a/b.caibx", ".."):
            with pytest.raises(Exception):  # noqa: B017,PT011 - any refusal is fine
                index_store.get_index(name)

    def test_pickle_round_trip(self, index_store: IndexStore) -> None:
        """Index stores pickle as their configuration."""
        data = self.sample_index()
        self.put_raw_index(index_store, "c.caibx", data)
        copy = pickle.loads(pickle.dumps(index_store))
        assert copy.get_index("c.caibx") == data


class ArchiveFormatContract:
    """Archive formats: a node stream written by one format reads back unchanged.

    A subclass provides ``writer_name`` and ``reader_name`` (the registered format names;
    often the same) and may adjust ``mtime_granularity`` (ns) and ``target_is_dir``.
    Formats are opened through the registry, so the plugin's entry point is exercised.
    """

    writer_name = ""
    reader_name = ""
    #: Resolution of modification times the pair keeps (1 = nanoseconds).
    mtime_granularity = 1
    #: The writer's target is a directory (``disk``) rather than a file.
    target_is_dir = False

    @staticmethod
    def open_format(name: str) -> Any:
        """The registered archive format called ``name``."""
        from desync_core.plugins import get_registries

        return get_registries().archive_formats.get(name).load()()

    @staticmethod
    def sample_nodes() -> list[Any]:
        """A small tree: files (empty and not), nested directories, a symlink, a fifo."""
        from desync_core.archive.base import DIR_END, BytesPayload, Node

        def file(path: bytes, data: bytes, mode: int = 0o100644) -> Node:
            return Node(mode=mode, name=path.rsplit(b"/", 1)[-1], path=path, uid=1000,
                        gid=100, mtime=1_700_000_000_123_456_789, size=len(data),
                        payload=BytesPayload(data))

        def directory(path: bytes) -> Node:
            return Node(mode=0o040755, name=path.rsplit(b"/", 1)[-1], path=path, uid=1000,
                        gid=100, mtime=1_600_000_000_000_000_000)

        return [
            directory(b""),
            file(b"a.txt", b"hello\n" * 1000),
            file(b"empty", b"", 0o100600),
            directory(b"sub"),
            directory(b"sub/deeper"),
            file(b"sub/deeper/x.bin", bytes(range(256)) * 300, 0o100755),
            DIR_END,
            file(b"sub/z", b"z"),
            DIR_END,
            Node(mode=0o120777, name=b"to-a", path=b"to-a", uid=1000, gid=100,
                 mtime=1_700_000_000_000_000_000, target=b"a.txt"),
            DIR_END,
        ]

    def summarize(self, nodes: Any) -> dict[bytes, tuple[Any, ...]]:
        """path -> comparable facts, reading payloads as the stream goes."""
        import stat as st

        out: dict[bytes, tuple[Any, ...]] = {}
        for node in nodes:
            if not hasattr(node, "mode"):
                continue  # DIR_END
            content = node.payload.read_all() if node.payload is not None else node.target
            mtime = None if st.S_ISLNK(node.mode) else node.mtime // self.mtime_granularity
            out[node.path] = (st.S_IFMT(node.mode), st.S_IMODE(node.mode), node.uid,
                              node.gid, mtime, content)
        return out

    def test_formats_are_registered(self) -> None:
        """Both formats are found by name and can do their part."""
        assert self.open_format(self.writer_name).can_write
        assert self.open_format(self.reader_name).can_read

    def test_round_trip(self, tmp_path: Any) -> None:
        """Write the sample tree, read it back: same paths, types, modes, owners,
        times (at the pair's resolution), contents and link targets."""
        from desync_core.archive.base import ArchiveOptions

        target = tmp_path / ("tree" if self.target_is_dir else "archive")
        options = ArchiveOptions()
        self.open_format(self.writer_name).write(iter(self.sample_nodes()), str(target),
                                                 options)
        got = self.summarize(self.open_format(self.reader_name).read(str(target), options))
        expected = self.summarize(self.sample_nodes())
        if self.target_is_dir:  # the root's metadata follows the target directory
            got.pop(b"", None)
            expected.pop(b"", None)
        assert got == expected


def local_put_raw(base: str, key: str, data: bytes) -> None:
    """put_raw for stores backed by a local directory."""
    path = os.path.join(base, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def local_get_raw(base: str, key: str) -> bytes | None:
    """get_raw for stores backed by a local directory."""
    try:
        with open(os.path.join(base, key), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


class LocalDirectoryRaw:
    """``put_raw``/``get_raw`` for stores whose objects are files in a local directory:
    list it before the contract, ``class TestMine(LocalDirectoryRaw,
    WritableChunkStoreContract)``, and override :meth:`raw_base` if that directory is
    not the store's own location (a server's upstream store, say)."""

    def raw_base(self, store: ChunkStore) -> str:
        """The directory holding the store's objects."""
        return store.location.path

    def put_raw(self, store: ChunkStore, key: str, data: bytes) -> None:
        local_put_raw(self.raw_base(store), key, data)

    def get_raw(self, store: ChunkStore, key: str) -> bytes | None:
        return local_get_raw(self.raw_base(store), key)


__all__ = [
    "ArchiveFormatContract",
    "ChunkStoreContract",
    "IndexStoreContract",
    "LocalDirectoryRaw",
    "PrunableChunkStoreContract",
    "WritableChunkStoreContract",
    "local_get_raw",
    "local_put_raw",
    "open_chunk_store",
    "open_index_store",
    "sample_chunk",
]
