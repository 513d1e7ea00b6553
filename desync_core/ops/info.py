"""What ``info`` and ``inspect-chunks`` do with their arguments, for the CLI and the API.

The statistics themselves are computed by :func:`desync_core.ops.read.info` and
:func:`desync_core.ops.read.inspect_chunks`; this module resolves seeds, reads the
chunks-info file, opens the stores and writes the output file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from desync_core.errors import StoreError, UsageError

if TYPE_CHECKING:
    from desync_core.context import Context
    from desync_core.index import Index


def seed_index_locations(index: str | None, seeds: Sequence[str],
                         seed_dirs: Sequence[str]) -> list[str]:
    """Seed index locations of ``--seed`` values and ``--seed-dir`` directories.

    ``index`` (the index being described) is never counted as its own seed.
    """
    from desync_core.seeds.file import INDEX_EXTENSION, find_dir_seeds

    locations = []
    for value in seeds:
        # desync's info takes index locations; extract's INDEX:DATA also works here.
        whole = value.endswith(INDEX_EXTENSION) or "://" in value or ":" not in value
        locations.append(value if whole else value.split(":", 1)[0])
    exclude = index if index != "-" else None
    for directory in seed_dirs:
        locations.extend(found for found, _data in find_dir_seeds(directory, exclude))
    return locations


def load_chunks_info(path: str) -> list[dict[str, Any]]:
    """The JSON ``inspect-chunks`` wrote (``--chunks-info``)."""
    try:
        with open(path, encoding="utf-8") as f:
            data: list[dict[str, Any]] = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"reading {path}: {exc}") from None
    return data


def index_info(ctx: Context, index: str | Index, *, stores: Sequence[str] = (),
               seeds: Sequence[str] = (), seed_dirs: Sequence[str] = (),
               cache: str | None = None,
               chunks_info: str | list[dict[str, Any]] | None = None) -> dict[str, int]:
    """``info``: desync's statistics of an index (the keys of its JSON output)."""
    from desync_core.ops.read import info

    idx = index if not isinstance(index, str) else ctx.read_index(index)
    seed_ids: set[bytes] = set()
    for location in seed_index_locations(index if isinstance(index, str) else None,
                                         seeds, seed_dirs):
        seed_ids.update(ctx.read_index(location).chunk_ids())
    table = load_chunks_info(chunks_info) if isinstance(chunks_info, str) else chunks_info
    store = ctx.open_source(list(stores), None, idx.digest) if stores else None
    reader = ctx.open_reader(cache, idx.digest) if cache else None
    try:
        return info(idx, store=store, seed_ids=seed_ids, cache=reader, chunks_info=table,
                    workers=ctx.concurrency)
    finally:
        for opened in (store, reader):
            if opened is not None:
                opened.close()


def inspect_index(ctx: Context, index: str | Index, store: str | None = None) -> str:
    """``inspect-chunks``: the JSON text (sizes, and stored sizes from a local store).

    Raises:
        UsageError: ``store`` is not a local store.
    """
    from desync_core.location import parse_location
    from desync_core.ops.read import inspect_chunks
    from desync_core.stores.chunk import ChunkCodec

    ext = None
    if store:
        if not parse_location(store).is_local:
            raise UsageError(f"'{store}' is not a local store")
        # Stored sizes only when they differ from the plain ones (compressed and/or
        # encrypted), read from the files of the store's own format.
        ext = ChunkCodec.for_options(ctx.store_options(store)).extension or None
    idx = index if not isinstance(index, str) else ctx.read_index(index)
    return inspect_chunks(idx, store or None, ext)


def write_text_output(path: str, text: str) -> None:
    """Write a command's text output to a file atomically.

    Raises:
        UsageError: the directory does not exist.
        StoreError: the file cannot be written.
    """
    from desync_core.stores.local import atomic_write

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"output directory {directory} does not exist")
    try:
        atomic_write(path, text.encode())
    except OSError as exc:
        raise StoreError(f"writing {path}: {exc.strerror or exc}") from None


__all__ = ["index_info", "inspect_index", "load_chunks_info", "seed_index_locations",
           "write_text_output"]
