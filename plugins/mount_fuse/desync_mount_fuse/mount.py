"""``desync mount-index``: mount a blob index (one file) or a ``.caidx`` (a tree) over FUSE.

Signals: SIGHUP, SIGINT and SIGTERM get Python handlers before anything is mounted, so
libfuse never installs its own (mfusepy's reset of SIGINT to the default is suppressed
while the loop runs). Whichever thread the kernel delivers a signal to, CPython's
handler writes its number to the wakeup pipe, and one watcher thread acts on it:

* SIGHUP re-reads ``--store-file`` (an invalid file is reported and the old stores
  stay) and saves the copy-on-read state;
* SIGINT/SIGTERM end the FUSE loop: ``fuse_exit`` must be called on a FUSE thread, so
  the watcher provokes a request (a lookup of a new name) whose handler calls it.
  libfuse then unmounts and the process exits 0, as after ``fusermount3 -u``. A
  signal that comes before the mount is up is acted on as soon as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from desync_core.plugin_api import (
    Context,
    DesyncError,
    Index,
    UsageError,
    error_text,
    read_store_file,
)

#: casync's ``WITH_*`` metadata bits: an archive index (``.caidx``) has some, a blob
#: index (``.caibx``) none.
ARCHIVE_FEATURE_BITS = 0x1FFFFFFFF
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
WATCHED = {signal.SIGHUP, *STOP_SIGNALS}


def mount_name(location: str) -> str:
    """The file name of a blob mount: the index's base name without its extension."""
    base = location.rstrip("/").rsplit("/", 1)[-1]
    stem, dot, _ = base.rpartition(".")
    return stem if dot and stem else base


def is_archive_index(index: Index) -> bool:
    """Whether ``index`` describes a catar archive rather than a blob."""
    return bool(index.feature_flags & ARCHIVE_FEATURE_BITS)


def _load_fuse() -> Any:
    # mfusepy loads libfuse2 when both are installed (casync depends on libfuse2); this
    # mount is written for libfuse3 unless the user chose otherwise.
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    try:
        import mfusepy  # type: ignore[import-untyped,unused-ignore]
    except OSError as exc:  # no libfuse at all
        raise DesyncError(f"cannot load libfuse: {exc}") from None
    return mfusepy


class Mount:
    """One mount: its stores, reader, filesystem, and the signal watcher."""

    def __init__(self, args: argparse.Namespace, ctx: Context) -> None:
        self.args = args
        self.ctx = ctx
        self.mountpoint = os.path.abspath(args.mountpoint)
        self.stopping = threading.Event()
        self.ops: Any = None
        self.blob: Any = None
        self.holder: Any = None
        self._probes = itertools.count()

    # -- stores ----------------------------------------------------------------------------

    def open_source(self, digest: Any) -> Any:
        """The store chain of ``-s``/``-c`` or of the store file, as a
        :class:`~desync_mount_fuse.blob.Source`: unverified for the loader's batch
        verification, and verifying for chunks that fail it."""
        from desync_mount_fuse.blob import Source

        args = self.args
        stores, cache = ((read_store_file(args.store_file)) if args.store_file
                         else (args.store, args.cache))
        careful = self.ctx.open_source(stores, cache or None, digest)
        unverified = dataclasses.replace(self.ctx,
                                         overrides={**self.ctx.overrides, "skip_verify": True})
        try:
            fast = unverified.open_source(stores, cache or None, digest)
        except BaseException:
            careful.close()
            raise
        return Source(fast, careful)

    def reload(self) -> None:
        """SIGHUP: swap in the stores of the store file; save the copy-on-read state."""
        if self.args.store_file and self.holder is not None:
            try:
                source = self.open_source(self.digest)
            except Exception as exc:  # the old stores stay
                print(f"failed to reload configuration: {error_text(exc)}", file=sys.stderr,
                      flush=True)
            else:
                self.holder.swap(source)
        save = getattr(self.blob, "save_state", None)
        if save is not None:
            try:
                save()
            except OSError as exc:
                print(f"failed to save state: {error_text(exc)}", file=sys.stderr, flush=True)

    # -- signals ---------------------------------------------------------------------------

    def on_signal(self, sig: int) -> None:
        """The watcher's action for one signal."""
        if sig == signal.SIGHUP:
            self.reload()
        elif sig in STOP_SIGNALS:
            self.stop()

    def stop(self) -> None:
        """End the FUSE loop (from any thread; before the mount is up, once it is)."""
        self.stopping.set()
        ops = self.ops
        if ops is not None and ops.started.is_set():
            self.provoke_request()

    def provoke_request(self) -> None:
        """Make the kernel send us a request (a lookup of a new name): its handler sees
        ``stopping`` and calls ``fuse_exit`` on a FUSE thread, as it must."""
        probe = os.path.join(self.mountpoint, f".desync-stop-{os.getpid()}-{next(self._probes)}")
        with contextlib.suppress(OSError):
            os.lstat(probe)

    # -- running ---------------------------------------------------------------------------

    def run(self) -> int:
        """Read the index, open the stores, mount, serve until stopped; the exit code."""
        args = self.args
        if not os.path.isdir(self.mountpoint):
            raise UsageError(f"mount point {args.mountpoint} is not a directory")
        index = self.ctx.read_index(args.index)
        self.digest = index.digest
        mfusepy = _load_fuse()
        from desync_mount_fuse.blob import ChunkLoader, MemoryBlob, SourceHolder

        self.holder = SourceHolder(self.open_source(index.digest))
        loader = ChunkLoader(index, self.holder, self.ctx.concurrency)
        try:
            if args.cor_file:
                from desync_mount_fuse.sparse import SparseBlob

                self.blob = SparseBlob(loader, args.cor_file, state_save=args.cor_state_save,
                                       state_init=args.cor_state_init,
                                       init_workers=args.cor_init_n)
            else:
                self.blob = MemoryBlob(loader)
            self.ops = self.filesystem(index)
            return self.serve(mfusepy)
        finally:
            if self.blob is not None:
                self.blob.close()
            else:
                loader.close()
            self.holder.close()

    def filesystem(self, index: Index) -> Any:
        """The Operations: a tree for an archive index, else the one blob file."""
        from desync_mount_fuse.fs import BlobFS, TreeFS

        if is_archive_index(index):
            from desync_mount_fuse.tree import Tree, build_tree

            ops: Any = TreeFS(self.blob, Tree(build_tree(self.blob, name=self.args.index)))
        else:
            ops = BlobFS(self.blob, mount_name(self.args.index))
        ops.stopping = self.stopping
        ops.provoke_request = self.provoke_request
        return ops

    def serve(self, mfusepy: Any) -> int:
        """Run the FUSE loop in this thread until unmounted or stopped."""
        options: dict[str, Any] = {
            "foreground": True, "ro": True, "fsname": f"desync:{mount_name(self.args.index)}",
            "subtype": "desync", "default_permissions": True, "use_ino": True,
            "entry_timeout": 3600, "attr_timeout": 3600, "negative_timeout": 1,
        }
        if os.geteuid() == 0:
            options["allow_other"] = True  # like casync: other users see the tree
        if mfusepy.fuse_version_major >= 3:
            # libfuse 3.14's default idle-thread limit prints a warning on every mount
            options.update(max_threads=max(16, self.ctx.concurrency + 4), max_idle_threads=8)
        if self.stopping.is_set():  # stopped while the index or the tree was read
            return 0
        try:
            with sigint_kept(mfusepy):
                mfusepy.FUSE(self.ops, self.mountpoint, raw_fi=True, **options)
        except RuntimeError as exc:
            if not self.ops.started.is_set():
                raise DesyncError(f"failed to mount {self.args.mountpoint} "
                                  f"(libfuse error {exc})") from None
            raise DesyncError(f"FUSE loop of {self.args.mountpoint} failed "
                              f"(libfuse error {exc})") from None
        return 0


def _ignore(sig: int, frame: Any) -> None:
    """Python-level handler: the work is done by the watcher thread."""


@contextlib.contextmanager
def watched_signals(action: Callable[[int], None]) -> Iterator[None]:
    """Deliver SIGHUP/SIGINT/SIGTERM to ``action`` on a watcher thread while the block
    runs (from the main thread)."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(write_fd, False)
    old_handlers = {sig: signal.signal(sig, _ignore) for sig in WATCHED}
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watch() -> None:
        while data := os.read(read_fd, 64):
            for sig in data:
                try:
                    action(sig)
                except Exception as exc:  # keep watching
                    print(f"Error: {error_text(exc)}", file=sys.stderr, flush=True)
        os.close(read_fd)

    watcher = threading.Thread(target=watch, name="desync-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        os.close(write_fd)  # the watcher reads EOF and ends


@contextlib.contextmanager
def sigint_kept(mfusepy: Any) -> Iterator[None]:
    """Stop mfusepy from resetting SIGINT to the default around the FUSE loop (libfuse
    would then install its handler, which does not wake the loop from other threads)."""
    original = getattr(mfusepy, "signal", None)
    if original is None:  # another mfusepy layout: libfuse handles SIGINT itself
        yield
        return

    def keep(sig: int, handler: Any) -> Any:
        if sig == signal.SIGINT:
            return signal.getsignal(sig)
        return original(sig, handler)

    mfusepy.signal = keep
    try:
        yield
    finally:
        mfusepy.signal = original


def main(args: argparse.Namespace, ctx: Context) -> int:
    """The ``mount-index`` command."""
    if args.store_file:
        if args.store:
            raise UsageError("--store and --store-file can't be used together")
        if args.cache:
            raise UsageError("--cache and --store-file can't be used together")
    elif not args.store:
        raise UsageError("no store provided")
    if args.cor_init_n < 1:
        raise UsageError("--cor-init-n must be at least 1")
    mount = Mount(args, ctx)
    with watched_signals(mount.on_signal):
        return mount.run()


__all__ = ["Mount", "is_archive_index", "main", "mount_name"]
