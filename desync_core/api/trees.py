"""Directory trees: ``tar``, ``untar`` and ``mtree``."""

from __future__ import annotations

from collections.abc import Generator, Sequence

from desync_core.api._base import context
from desync_core.api.results import MtreeEntry, TarResult, UntarResult
from desync_core.context import Context


def tar(output: str, source: str, *, store: str | None = None,
        chunk_size: str = "16:64:256", input_format: str = "disk", no_time: bool = False,
        tar_add_root: bool = False, one_file_system: bool = False,
        workers: int | None = None, ctx: Context | None = None) -> TarResult:
    """Encode a directory tree (or a tar file) as a catar archive or a ``.caidx``.

    With ``store`` the archive is chunked into it and ``output`` is the archive index
    (``desync tar -i``); without, ``output`` is the catar file.

    Args:
        output: the catar or ``.caidx`` to write (``-``: stdout).
        source: a directory, or with ``input_format="tar"`` a tar file.
        store: writable store for the chunks; makes ``output`` an index.
        chunk_size: ``"MIN:AVG:MAX"`` in KiB (with ``store``).
        input_format: ``disk`` or (plugin ``desync-format-tar``) ``tar``.
        no_time: record zero timestamps.
        tar_add_root: give tar members a common root directory.
        one_file_system: do not cross mount points.
        workers: chunking threads (default: number of CPUs).
        ctx: settings; default :func:`~desync_core.api.context`.
    """
    from desync_core.ops.tree import tar as run_tar

    index = run_tar(ctx or context(), output, source, index=store is not None,
                    store=store, chunk_size=chunk_size, input_format=input_format,
                    no_time=no_time, tar_add_root=tar_add_root,
                    one_file_system=one_file_system, workers=workers)
    return TarResult(output=output, index=index)


def untar(source: str, target: str, *, stores: Sequence[str] = (), cache: str | None = None,
          index: bool | None = None, output_format: str = "disk", no_same_owner: bool = False,
          no_same_permissions: bool = False, ctx: Context | None = None) -> UntarResult:
    """Extract a catar file, or a ``.caidx`` whose chunks are in ``stores``.

    Args:
        source: catar file or archive index location.
        target: directory to extract into (for ``gnu-tar``: a file).
        stores: source stores; given, ``source`` is read as an index.
        cache: cache store location.
        index: force reading ``source`` as an index (default: when ``stores`` are given).
        output_format: ``disk`` or (plugin ``desync-format-tar``) ``gnu-tar``.
        no_same_owner: do not restore owners or xattrs.
        no_same_permissions: do not restore permissions and ACLs.
        ctx: settings; default :func:`~desync_core.api.context`.
    """
    from desync_core.ops.tree import untar as run_untar

    run_untar(ctx or context(), source, target, index=bool(stores) if index is None else index,
              stores=stores, cache=cache, output_format=output_format,
              no_same_owner=no_same_owner, no_same_permissions=no_same_permissions)
    return UntarResult(target=target, output_format=output_format)


def mtree(source: str, *, stores: Sequence[str] = (), cache: str | None = None,
          index: bool | None = None,
          ctx: Context | None = None) -> Generator[MtreeEntry, None, None]:
    """The entries of a local directory, catar file or ``.caidx``, in archive order.

    A generator: the archive is read (and regular files hashed) as it is consumed;
    closing it early (``contextlib.closing``, or dropping it) closes the stores.
    ``"#mtree v1.0\\n"`` followed by each entry's ``line`` and a newline is what
    ``desync mtree`` prints.

    Args:
        source: directory, catar file or archive index location.
        stores: source stores; given, ``source`` is read as an index.
        cache: cache store location.
        index: force reading ``source`` as an index (default: when ``stores`` are given).
        ctx: settings (``digest`` picks the file digests); default
            :func:`~desync_core.api.context`.
    """
    from desync_core.archive.base import Node
    from desync_core.archive.mtree import mtree_line
    from desync_core.ops.tree import tree_nodes

    ctx = ctx or context()
    with tree_nodes(ctx, source, index=bool(stores) if index is None else index,
                    stores=stores, cache=cache) as nodes:
        for node in nodes:
            if isinstance(node, Node):
                yield _entry(node, mtree_line(node, ctx.digest))


def _entry(node: object, line: str) -> MtreeEntry:
    from desync_core.archive.base import Node

    assert isinstance(node, Node)
    # Each field is read back from the line mtree_line printed, so an entry and the
    # CLI's listing never disagree; the raw path and target come from the node.
    keys = dict(part.split("=", 1) for part in line.split(" ")[1:])
    digest = next((v for k, v in keys.items() if k.endswith("digest")), None)
    return MtreeEntry(path=node.path, type=keys["type"], mode=int(keys["mode"], 8),
                      uid=node.uid, gid=node.gid, mtime_ns=node.mtime,
                      size=int(keys.get("size", 0)), target=node.target if "target" in keys
                      else b"", digest=digest, line=line)


__all__ = ["mtree", "tar", "untar"]
