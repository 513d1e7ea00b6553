"""The output of ``extract``: the target file or device, temporary files, statistics."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
import time
from dataclasses import asdict, dataclass, field, fields

from desync_core.engine.interrupts import interrupts_held
from desync_core.errors import (
    StoreError,
    UsageError,
)
from desync_core.index import Index
from desync_core.seeds.extents import probe_clone


@dataclass
class ExtractStats:
    """``--print-stats`` (``extract.md`` §1.3), plus a breakdown by source.

    desync's keys keep desync's meaning: ``chunks-from-seeds`` counts chunks of seed
    segments (the null seed included), ``bytes-copied/cloned-from-seeds`` every byte
    copied or cloned from a seed or the self-seed, ``seeds`` includes the null seed.
    The extra keys split this up: null chunks, self-seed, store and in-place bytes.
    """

    chunks_from_seeds: int = 0
    chunks_from_store: int = 0
    chunks_in_place: int = 0
    bytes_copied_from_seeds: int = 0
    bytes_cloned_from_seeds: int = 0
    blocksize: int = 4096
    bytes_total: int = 0
    chunks_total: int = 0
    seeds: int = 1
    chunks_from_null_seed: int = 0
    bytes_from_null_seed: int = 0
    chunks_from_self_seed: int = 0
    bytes_from_self_seed: int = 0
    bytes_from_store: int = 0
    bytes_in_place: int = 0

    def as_json(self) -> dict[str, int]:
        """Keys as desync prints them (``chunks-from-store``…)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


COUNTER_FIELDS = [f.name for f in fields(ExtractStats)
             if f.name not in ("blocksize", "bytes_total", "chunks_total", "seeds")]


@dataclass
class Target:
    """The file or device being assembled (implements the seeds' ``WriteTarget``)."""

    index: Index
    fd: int
    path: str
    blank: bool
    device: bool
    blocksize: int
    #: The name shown in messages (the output, also while writing a temporary file).
    display: str = ""
    _clone_probes: dict[str, bool] = field(default_factory=dict)

    def size_to_blob(self) -> None:
        """Truncate or extend a file to the blob's length (devices are left alone).

        Done once the plan is validated, so that a run failing validation leaves an
        existing ``-k`` output untouched.
        """
        if self.device:
            return
        try:
            if os.fstat(self.fd).st_size != self.index.length:
                os.ftruncate(self.fd, self.index.length)
        except OSError as exc:
            raise StoreError(f"resizing {self.display}: {exc.strerror}") from exc

    def can_clone_from(self, src_dir: str) -> bool:
        """Whether files in ``src_dir`` can be cloned into the target (probed once each)."""
        if self.device:
            return False
        key = os.path.realpath(src_dir or ".")
        if key not in self._clone_probes:
            target_dir = os.path.dirname(os.path.abspath(self.path))
            # The probe creates files next to the output: an interrupt between creating
            # one and recording it for removal would leave it behind.
            with interrupts_held():
                self._clone_probes[key] = probe_clone(target_dir, key)
        return self._clone_probes[key]


def open_target(index: Index, path: str, *, in_place: bool, create_new: bool) -> Target:
    """Open (or create) the target and size it (``extract.md`` §1.1 steps 1-4).

    Args:
        index: the index being extracted.
        path: the file or device.
        in_place: ``-k``: existing content is inspected and reused.
        create_new: the path must not exist yet (a temporary file).
    """
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise StoreError(f"{path}: {exc.strerror}") from None
    device = st is not None and (stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode))
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is a directory")
    flags = os.O_RDWR | os.O_CLOEXEC
    if not device:
        flags |= os.O_CREAT | (os.O_EXCL if create_new else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise StoreError(f"opening {path}: {exc.strerror}") from exc
    try:
        if device:
            size = os.lseek(fd, 0, os.SEEK_END)
            if size < index.length:
                raise UsageError(
                    f"{path} is too small ({size} bytes) for the blob ({index.length} bytes)"
                )
            blank = False
        else:
            blank = st is None or st.st_size == 0 or not in_place
            if blank:
                os.ftruncate(fd, index.length)  # sparse; an existing file is sized later
        blocksize = os.fstat(fd).st_blksize or 4096
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"preparing {path}: {exc.strerror}") from exc
    except BaseException:
        os.close(fd)
        raise
    return Target(index, fd, path, blank, device, blocksize, display=path)


def add_counts(total: ExtractStats, part: ExtractStats) -> None:
    """Add ``part``'s counters (not the totals or settings) to ``total``."""
    for name in COUNTER_FIELDS:
        setattr(total, name, getattr(total, name) + getattr(part, name))


def temp_name(output: str) -> str:
    """``<dir>/.<basename>.<random>``, next to the output (same filesystem)."""
    directory, base = os.path.split(os.path.abspath(output))
    return os.path.join(directory, f".{base}.{secrets.randbits(32)}")


#: A temporary file unlocked and untouched this long belongs to a dead extract.
STALE_TEMP_SECONDS = 10.0


def remove_stale_temps(output: str) -> list[str]:
    """Remove temporary files of earlier extracts of ``output`` that were killed
    (``kill -9``, power loss): ``.<basename>.<digits>`` regular files next to it that
    no process holds locked (a running extract holds an ``flock`` on its temporary
    file from the moment it creates it) and that were not modified in the last
    :data:`STALE_TEMP_SECONDS`. Returns the paths removed."""
    directory, base = os.path.split(os.path.abspath(output))
    prefix = f".{base}."
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(directory)
                 if n.startswith(prefix) and n[len(prefix):].isdigit()]
    except OSError:
        return removed
    now = time.time()
    for name in names:
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_TEMP_SECONDS:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live extract holds it
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def check_output(output: str) -> None:
    """The output's directory must exist; a directory cannot be the output."""
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise UsageError(f"output directory {directory} does not exist")
    if os.path.isdir(output):
        raise UsageError(f"output {output} is a directory")


def is_device(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISBLK(mode) or stat.S_ISCHR(mode)


