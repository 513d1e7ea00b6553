"""Fuzzing the parsers of untrusted inputs: index files, chunk files and the config
file. Every input gives success or a one-line error with a documented exit code, and
memory stays bounded (#19)."""

from __future__ import annotations

import io
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from fuzz_util import FUZZ, MEMORY_GROWTH_MB, check_cli_result, mutated, peak_rss_mb
from hypothesis import given
from hypothesis import strategies as st

from desync_core.chunker import ChunkerParams
from desync_core.config import parse_config
from desync_core.digest import SHA512_256
from desync_core.errors import ChunkInvalidError, ConfigError, IndexFormatError
from desync_core.flags import BLOB_INDEX_FLAGS
from desync_core.index import Index, read_index_stream
from desync_core.stores.chunk import COMPRESSED, compress

COUNTER = itertools.count()


def seed_index(chunks: int = 6) -> bytes:
    rng = np.random.default_rng(19)
    sizes = rng.integers(64, 4096, chunks)
    ids = rng.bytes(32 * chunks)
    return Index.from_chunks(np.cumsum(sizes), ids, ChunkerParams(64, 1024, 4096),
                             BLOB_INDEX_FLAGS).to_bytes()


SEED_INDEX = seed_index()
INDEX_INPUTS = st.one_of(mutated(SEED_INDEX), st.binary(max_size=256),
                         st.binary(max_size=64).map(lambda b: SEED_INDEX[:64] + b))


@FUZZ
@given(INDEX_INPUTS)
def test_index_parser(data: bytes) -> None:
    """from_bytes and the bounded stream reader agree: the same bytes, or both fail
    with an index format error (nothing else)."""
    try:
        parsed = Index.from_bytes(data, "fuzz")
    except IndexFormatError:
        parsed = None
    try:
        streamed = read_index_stream(io.BytesIO(data), "fuzz")
        Index.from_bytes(streamed, "fuzz")
    except IndexFormatError:
        streamed = None
    if parsed is None:
        assert streamed is None
    else:
        assert streamed == data
        assert parsed.to_bytes() == data


def test_index_commands(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    before = peak_rss_mb()

    @FUZZ
    @given(INDEX_INPUTS)
    def run(data: bytes) -> None:
        path = tmp_path / f"{next(COUNTER)}.caibx"
        path.write_bytes(data)
        check_cli_result(cli("info", path), {0, 6})
        check_cli_result(cli("list-chunks", "-", input=data), {0, 6})
        path.unlink()

    run()
    assert peak_rss_mb() - before < MEMORY_GROWTH_MB


CHUNK_DATA = os.urandom(3000) + bytes(3000)
CHUNK_ID = SHA512_256.sum(CHUNK_DATA)
CHUNK_INPUTS = st.one_of(mutated(compress(CHUNK_DATA)), st.binary(max_size=128),
                         st.just(compress(bytes(10 * 1024 * 1024))))


@FUZZ
@given(CHUNK_INPUTS)
def test_chunk_decoder(stored: bytes) -> None:
    """Decoding is bounded by the size the caller expects; errors are ChunkInvalidError."""
    try:
        data = COMPRESSED.decode(stored, CHUNK_ID, len(CHUNK_DATA))
    except ChunkInvalidError:
        return
    assert len(data) <= len(CHUNK_DATA)


def test_chunk_files_in_verify(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    before = peak_rss_mb()
    hexid = CHUNK_ID.hex()

    @FUZZ
    @given(CHUNK_INPUTS)
    def run(stored: bytes) -> None:
        store = tmp_path / f"store{next(COUNTER)}"
        (store / hexid[:4]).mkdir(parents=True)
        (store / hexid[:4] / f"{hexid}.cacnk").write_bytes(stored)
        result = cli("verify", "-s", store)
        check_cli_result(result, {0, 5})
        if result.code == 0:
            assert COMPRESSED.decode(stored, CHUNK_ID) == CHUNK_DATA

    run()
    assert peak_rss_mb() - before < MEMORY_GROWTH_MB


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["store-options", "s3-credentials", "oci-credentials", "/x",
                         "http://h/*", "*", "timeout", "n", "error-retry", "uncompressed",
                         "http-auth", "skip-verify", "cache"]) | st.text(max_size=6),
        inner, max_size=4),
    max_leaves=12)
VALID_CONFIG = json.dumps({"store-options": {"/tmp/*": {"timeout": "1s", "n": 2,
                                                        "uncompressed": True}}})
CONFIG_TEXTS = st.one_of(JSON_VALUES.map(json.dumps),
                         mutated(VALID_CONFIG.encode()).map(lambda b: b.decode("latin-1")),
                         st.integers(900, 3000).map(lambda n: "[" * n + "]" * n))


@FUZZ
@given(CONFIG_TEXTS)
def test_config_parser(text: str) -> None:
    try:
        cfg = parse_config(text, "fuzz.json")
    except ConfigError:
        return
    cfg.options_for("/tmp/x")
    cfg.to_json()


def test_config_in_commands(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    @FUZZ
    @given(CONFIG_TEXTS)
    def run(text: str) -> None:
        path = tmp_path / "config.json"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        check_cli_result(cli("--config", path, "config"), {0, 2})

    run()


@pytest.mark.parametrize("doc", ['{"stores": [","]}', '{"stores": [], "cache": false}',
                                 "[" * 5000 + "]" * 5000])
def test_store_file_parser_edge_cases(tmp_path: Path, doc: str) -> None:
    from desync_core.storefile import read_store_file

    (tmp_path / "s.json").write_text(doc)
    with pytest.raises(ConfigError):
        read_store_file(str(tmp_path / "s.json"))
