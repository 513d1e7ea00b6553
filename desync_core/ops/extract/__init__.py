"""``extract``: assemble a blob from its index (``extract.md`` §1-§5).

Without ``-k`` the blob is assembled in a temporary file next to the output and renamed
onto it only when complete, so the output is either untouched or complete, also when
the run fails or is interrupted (SIGINT/SIGTERM). With ``-k`` the output (a file or a
block device) is written in place and kept on failure; a rerun hashes what is there
and fetches only what is missing or wrong.

Where the data comes from, cheapest first:

1. the **null seed** - runs of all-zero chunks are never fetched: on a blank target
   they stay holes (a sparse file);
2. **file seeds** (``--seed``, ``--seed-dir``, plugin seed types) - planned by longest
   match, cloned (reflink) or copied, and hash-checked as they are written; when an
   invalid seed must be left out or regenerated, or with ``-k``, seeds are also
   validated before anything is written;
3. for the remaining chunks, one at a time: the target itself when it already holds
   the chunk (``-k``), the **self-seed** (an earlier copy of the same chunk in the
   target), and finally the **store chain** (verified by hash, size-checked).

Execution (:class:`Assembler`) has two phases. The first writes the seed segments and
every single chunk that is not a repeat of an earlier one; the second the repeats,
which by then are all copies (or clones) of their first occurrence - the self-seed.
Tasks are seed segments and runs of consecutive single chunks, done with positional
I/O on the shared target descriptor.

Speed (``README`` "Performance"; 400 MB from a local store on the 2-core benchmark
machine: ~0.6 s, casync ~1.4 s):

* with local stores and plain file seeds, the first phase runs on forked worker
  processes, one per CPU (:class:`~desync_core.engine.ForkPool`): measured, two threads spent ~0.5 s
  more CPU per 400 MB than one, passing the interpreter lock back and forth;
  processes share nothing at run time. Otherwise (remote stores, plugin seeds) it runs
  on ``-n`` threads, like the second phase;
* runs of single chunks from a plain store into a new file are batches
  (:class:`StoreBatches`): each chunk file is read into a reused buffer and zstd-decoded
  straight into its place in the run, the run is verified with one call of an 8-lane
  SHA-512/256 kernel (:mod:`desync_core.batchhash`, ~3x OpenSSL's speed per core) and
  written with one ``pwrite``. Anything unusual falls back to the chunk-by-chunk path,
  which reports errors exactly as before;
* memory stays bounded: a few MiB of buffers per worker, at most ``2 * workers``
  queued thread tasks, task numbers (4 bytes each) for the processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from desync_core.engine import hold_interrupts, release_interrupts
from desync_core.errors import SeedInvalidError, StoreError, UsageError
from desync_core.index import Index
from desync_core.ops.extract.assembler import (
    Assembler,
    WorkerState,
    invalid_seed_error,
    split_segment,
)
from desync_core.ops.extract.fetch import BatchState, DirectFetcher, StoreBatches, runs
from desync_core.ops.extract.parallelism import assembly_processes, assembly_threads
from desync_core.ops.extract.target import (
    ExtractStats,
    Target,
    add_counts,
    check_output,
    is_device,
    open_target,
    remove_stale_temps,
    temp_name,
)
from desync_core.progress import Progress
from desync_core.seeds.base import Seed, Warn
from desync_core.seeds.null import NullSeed, null_mask
from desync_core.seeds.planner import make_plan, validate_plan
from desync_core.seeds.selfseed import SelfSeed

#: What to do with seeds whose data does not match their index (``extract.md`` §4).
INVALID_SEED_ACTIONS = ("fail", "skip", "regenerate")
ProgressFactory = Callable[[str, int], Progress]


def _no_progress(prefix: str, total: int) -> Progress:
    return Progress()


def _same_file(path: str | None, st: os.stat_result) -> bool:
    if not path:
        return False
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino) and \
        (other.st_rdev == st.st_rdev)


def usable_seeds(seeds: Sequence[Seed], target: Target, *, in_place: bool,
                 invalid_seeds: str, warn: Warn) -> list[Seed]:
    """The seeds to plan with: unreadable ones fail or are skipped; none may be the target.

    With ``-k`` a seed whose data is the output itself would be overwritten while it
    is read; it is left out (the in-place check reuses whatever is already right).
    """
    usable: list[Seed] = []
    target_st = os.fstat(target.fd)
    for seed in seeds:
        error = getattr(seed, "error", None)
        if error:
            if invalid_seeds == "skip":
                warn(f"skipping seed {seed.name}: {error}")
                continue
            raise SeedInvalidError(error)
        if in_place and _same_file(seed.data_path, target_st):
            warn(f"not using seed {seed.name}: it is the output being written in place")
            continue
        usable.append(seed)
    return usable


def extract(
    index: Index,
    output: str,
    source: Any,
    *,
    in_place: bool = False,
    workers: int = 10,
    progress: Progress | None = None,
    seeds: Sequence[Seed] = (),
    invalid_seeds: str = "fail",
    progress_factory: ProgressFactory | None = None,
    warn: Warn | None = None,
) -> ExtractStats:
    """Assemble the blob described by ``index`` into ``output``.

    Args:
        index: the blob's index.
        output: file (or, with ``in_place``, block device) to write.
        source: the store chain (a :class:`~desync_core.stores.wrappers.ChunkReader`).
        in_place: write directly into ``output`` and keep it on failure (``-k``).
        workers: worker threads (fetches, copies and writes in flight).
        progress: receives chunk counts of the assembly (alternative to
            ``progress_factory``).
        seeds: open seeds (:func:`desync_core.seeds.open_seeds`), in priority order;
            the null seed and the self-seed are always used. They are not closed.
        invalid_seeds: ``fail`` (default), ``skip`` or ``regenerate`` (§4).
        progress_factory: ``(prefix, total) -> Progress`` for the ``Attempt n:
            Validating / Chunking Seed k / Assembling`` bars.
        warn: receives warnings for the user (default: ignored).

    Raises:
        SeedInvalidError: a seed's data does not match its index (and ``fail``), or
            changed while it was being copied.
        ChunkMissingError, ChunkInvalidError, StoreError: fetching failed.
        OperationCancelledError, KeyboardInterrupt: interrupted; without ``in_place``
            nothing is left behind.
    """
    if invalid_seeds not in INVALID_SEED_ACTIONS:
        raise UsageError(f"invalid_seeds must be one of {', '.join(INVALID_SEED_ACTIONS)}")
    check_output(output)
    warn = warn or (lambda _msg: None)
    if progress_factory is None:
        progress_factory = _no_progress
    if is_device(output) and not in_place:
        raise UsageError(f"{output} is a device: extracting to a device requires -k (--in-place)")
    stats = ExtractStats(bytes_total=index.length, chunks_total=len(index))
    if not in_place:
        for stale in remove_stale_temps(output):
            warn(f"removed {stale}, left by an earlier extract that did not finish")
    path = output if in_place else temp_name(output)
    target: Target | None = None
    ok = False
    assemblers: list[Assembler] = []
    # SIGINT/SIGTERM wait while the output is created: once it exists, the clean-up
    # below must know about it, or an interrupt right then would leave it behind.
    held = hold_interrupts()
    try:
        target = open_target(index, path, in_place=in_place, create_new=not in_place)
        if not in_place:
            # Marks the file as in use (see remove_stale_temps); the lock goes with the
            # last descriptor of this file, i.e. when this process and its workers end.
            fcntl.flock(target.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        release_interrupts(held)
        held = None
        target.display = output
        stats.blocksize = target.blocksize
        if len(index):
            _assemble(index, target, source, stats, list(seeds), in_place=in_place,
                      workers=workers, invalid_seeds=invalid_seeds, progress=progress,
                      progress_factory=progress_factory, warn=warn, started=assemblers)
        else:
            target.size_to_blob()
        if not in_place:
            try:
                os.replace(path, output)
            except OSError as exc:
                raise StoreError(f"renaming {path} to {output}: {exc.strerror}") from exc
        ok = True
    finally:
        if target is not None:
            if not ok and not in_place:
                # Remove the temporary file first: a second interrupt during the rest of
                # the clean-up must not leave it behind. (After an interrupt that came
                # just after the rename, there is nothing left to remove.)
                with contextlib.suppress(OSError):
                    os.unlink(path)
            # Workers left behind by an interruption may still use the descriptor;
            # closing it could let a new file reuse the number under their writes.
            if not any(a.abandoned for a in assemblers):
                os.close(target.fd)
        if held is not None:
            release_interrupts(held)
    return stats


def _assemble(index: Index, target: Target, source: Any, stats: ExtractStats,
              seeds: list[Seed], *, in_place: bool, workers: int, invalid_seeds: str,
              progress: Progress | None, progress_factory: ProgressFactory,
              warn: Warn, started: list[Assembler]) -> None:
    """Plan, validate (with retries per ``invalid_seeds``) and execute the plan.

    The assembler is appended to ``started`` before it runs, so the caller can tell
    whether workers were left behind even when this raises.
    """
    user_seeds = usable_seeds(seeds, target, in_place=in_place, invalid_seeds=invalid_seeds,
                              warn=warn)
    all_seeds: list[Seed] = [NullSeed(), *user_seeds]
    stats.seeds = len(all_seeds)
    for seed in all_seeds:
        seed.prepare(target)
    mask = null_mask(index)
    cancelled = threading.Event()
    attempt = 1
    # Seed data is hashed again as it is written. When an invalid seed can only fail the
    # run and the output is a temporary file, that check alone has the same outcome
    # (an error, nothing replaced) at half the reading and hashing; the up-front
    # validation is needed to re-plan (skip, regenerate) and, with -k, to fail before
    # anything is written.
    validate_first = invalid_seeds != "fail" or in_place
    while True:
        plan = make_plan(index, all_seeds, mask)
        if not validate_first:
            break
        prefix = f"Attempt {attempt}: Validating "

        def validating_bar(total: int, prefix: str = prefix) -> Progress:
            return progress_factory(prefix, total)

        invalid = validate_plan(plan, index, workers=workers, cancelled=cancelled.is_set,
                                progress=validating_bar)
        if not invalid:
            break
        if invalid_seeds == "fail":
            raise invalid_seed_error(invalid[0])
        for seed in invalid:
            if invalid_seeds == "skip":
                warn(f"skipping invalid seed {seed.name}: its data doesn't match its index")
                continue
            if getattr(seed, "regenerated", False):
                raise SeedInvalidError(
                    f"seed index for {seed.name} doesn't match its data, even after "
                    "regenerating it (is the seed changing?)"
                )
            number = all_seeds.index(seed)
            with progress_factory(f"Attempt {attempt}: Chunking Seed {number} ", 0) as bar:
                seed.regenerate(workers=workers, progress=bar)
        attempt += 1
    target.size_to_blob()
    self_seed = SelfSeed(index)
    self_seed.prepare(target)
    bar = progress or progress_factory(f"Attempt {attempt}: Assembling ", len(index))
    assembler = Assembler(index, target, source, plan, self_seed, bar,
                          repair_bad_seed_chunks=invalid_seeds == "regenerate",
                          validated=validate_first)
    started.append(assembler)
    try:
        counters = assembler.execute(assembly_threads(source, workers),
                                     assembly_processes(source, workers, all_seeds))
    finally:
        if progress is None:
            bar.close()
    add_counts(stats, counters)


__all__ = [
    "INVALID_SEED_ACTIONS",
    "Assembler",
    "BatchState",
    "DirectFetcher",
    "ExtractStats",
    "StoreBatches",
    "Target",
    "WorkerState",
    "add_counts",
    "assembly_processes",
    "assembly_threads",
    "check_output",
    "extract",
    "open_target",
    "remove_stale_temps",
    "runs",
    "split_segment",
    "temp_name",
    "usable_seeds",
]
