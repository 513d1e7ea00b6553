"""What a seed is, and the interface seed types implement (``extract.md`` §2).

A *seed* is data already on this machine that holds some of the chunks of the blob
being extracted: the built-in null seed (runs of all-zero chunks), file seeds (an index
plus the blob it describes) and whatever plugins add through the
``desync_register_seed_types`` hook. ``extract`` plans which runs of target chunks each
seed provides (:mod:`desync_core.seeds.planner`), validates the seeds that need it,
and asks each seed to write its segments into the target.

Plugins implement a :class:`SeedType` (which turns a ``--seed TYPE:SPEC`` value into
seeds) and usually subclass :class:`IndexedSeed`, which does the matching from a seed
index and needs only a way to read the seed's bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from desync_core.seeds.extents import Moved

if TYPE_CHECKING:
    from desync_core.index import Index
    from desync_core.progress import Progress

#: Without reflinks a seed segment covers at most this many chunks, so that work is
#: spread over the workers (``extract.md`` §3).
COPY_RUN_CAP = 100
#: At most this many occurrences of a chunk in one seed are tried as match starts.
MAX_CANDIDATES = 64

Warn = Callable[[str], None]


class WriteTarget(Protocol):
    """The file being assembled, as seeds see it."""

    #: The index being extracted.
    index: Index
    #: Open read-write descriptor (positional I/O only; shared by all workers).
    fd: int
    path: str
    #: Freshly created or empty: every byte reads as zero and nothing needs checking.
    blank: bool
    #: A block or character device (no holes, no truncation).
    device: bool
    blocksize: int

    def can_clone_from(self, src_dir: str) -> bool:
        """Whether files in ``src_dir`` can be cloned into the target (probed once)."""


@dataclass(eq=False)
class SeedSegment:
    """A run of consecutive target chunks that one seed provides.

    Attributes:
        seed: the seed.
        first: index of the first target chunk.
        count: number of chunks.
        start, end: the target byte range.
        seed_first: index of the first matching chunk in the seed's own index (-1 for
            seeds without one, like the null seed).
    """

    seed: Seed
    first: int
    count: int
    start: int
    end: int
    seed_first: int = -1

    @property
    def size(self) -> int:
        """Bytes covered."""
        return self.end - self.start


@dataclass
class SegmentResult:
    """What writing one seed segment did.

    Attributes:
        moved: bytes copied and cloned into the target.
        in_place: the target already held the segment; nothing was written.
        bad: target chunk indexes whose data from the seed did not hash to the expected
            id (the seed changed after validation). They were not written.
    """

    moved: Moved = field(default_factory=Moved)
    in_place: bool = False
    bad: list[int] = field(default_factory=list)


class Matcher(ABC):
    """A seed prepared against one target index, for the planner."""

    #: bool array: target positions where this seed may start a match.
    candidates: np.ndarray

    @abstractmethod
    def longest(self, i: int, cap: int | None) -> tuple[int, int]:
        """``(count, seed_first)`` of the longest match starting at target chunk ``i``.

        ``count`` is 0 if there is none; ``cap`` limits ``count`` (None: no limit).
        """


class Seed(ABC):
    """A source of chunks for ``extract``.

    Attributes:
        name: shown in messages (usually the data file).
        kind: the seed type's name (``null``, ``file``...).
        valid: False once validation found the seed's data does not match.
        needs_validation: whether planned segments must be checked before writing.
    """

    name: str = "seed"
    kind: ClassVar[str] = "seed"
    #: Capability: the seed object may be used in forked worker processes (it holds
    #: only file descriptors, no connections or threads). ``extract`` forks only when
    #: every seed declares it.
    fork_safe: ClassVar[bool] = False
    needs_validation: ClassVar[bool] = True
    valid: bool = True

    @abstractmethod
    def matcher(self, target: Index, null_mask: np.ndarray) -> Matcher:
        """Prepare matching against ``target``.

        Args:
            target: the index being extracted.
            null_mask: bool array, True where the target chunk is the null chunk. File
                seeds never match those: the null seed provides them without I/O.
        """

    def prepare(self, target: WriteTarget) -> None:  # noqa: B027 - optional hook
        """Called once the target is open (e.g. to probe reflink support)."""

    @property
    def can_clone(self) -> bool:
        """Whether segments are cloned rather than copied (uncaps segment length)."""
        return False

    @abstractmethod
    def write_segment(self, segment: SeedSegment, target: WriteTarget) -> SegmentResult:
        """Write ``segment`` into the target; thread-safe (several run at once).

        Seeds whose data could change (files) must check what they write against the
        target's chunk ids and report mismatches in :attr:`SegmentResult.bad`.
        """

    def verify_segments(self, segments: list[SeedSegment], target: Index, *, workers: int,
                        progress: Progress, cancelled: Callable[[], bool]) -> bool:
        """Check the seed's data for ``segments``; False if it does not match (§4)."""
        return True

    def regenerate(self, *, workers: int, progress: Progress) -> None:
        """Rebuild the seed's index from its data (``--regenerate-invalid-seeds``)."""
        raise NotImplementedError(f"seed {self.name} cannot be regenerated")

    @property
    def data_path(self) -> str | None:
        """Local file holding the seed's data, if any (to detect seed == target)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release open files."""

    def __str__(self) -> str:
        return self.name


class SeedType(ABC):
    """A kind of seed that plugins register with ``desync_register_seed_types``.

    ``registry.add("myseed", "mypkg.seeds:MySeedType", "what it is")``; users then
    write ``--seed myseed:SPEC``. ``user_selectable = False`` hides built-ins that are
    always present (the null seed, the self-seed).
    """

    name: ClassVar[str] = ""
    user_selectable: ClassVar[bool] = True

    @abstractmethod
    def open(self, ctx: Any, spec: str, *, target: Index, warn: Warn) -> list[Seed]:
        """Open the seeds described by ``spec`` (the ``--seed`` value after ``TYPE:``).

        Args:
            ctx: the :class:`~desync_core.context.Context` (to read indexes).
            spec: type-specific text.
            target: the index being extracted (e.g. to check its digest).
            warn: prints a warning for the user.
        """


__all__ = [
    "COPY_RUN_CAP",
    "MAX_CANDIDATES",
    "Matcher",
    "Seed",
    "SeedSegment",
    "SeedType",
    "SegmentResult",
    "Warn",
    "WriteTarget",
]
