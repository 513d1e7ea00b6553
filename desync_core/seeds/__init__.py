"""Seeds for ``extract``: data already on this machine that matches parts of an index.

* :mod:`~desync_core.seeds.base` - the :class:`Seed` and :class:`SeedType` interfaces;
* :mod:`~desync_core.seeds.file` - file seeds (``--seed``, ``--seed-dir``);
* :mod:`~desync_core.seeds.null` - the null seed (zero runs become holes);
* :mod:`~desync_core.seeds.selfseed` - the self-seed (repeated chunks);
* :mod:`~desync_core.seeds.planner` - longest-match planning and validation;
* :mod:`~desync_core.seeds.extents` - reflink clones, copies, hole punching.

Seed types are registered through the ``desync_register_seed_types`` hook; the
built-ins (``file``, ``null``, ``self``) use it too (:mod:`desync_core.seeds.plugin`).
This package module stays import-light (the plugin module is loaded with every
command); the submodules import numpy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from desync_core.index import Index
    from desync_core.seeds.base import Seed, SeedType, Warn


def __getattr__(name: str) -> Any:
    if name in ("Seed", "SeedType"):
        from desync_core.seeds import base

        return getattr(base, name)
    raise AttributeError(name)


def _seed_type(name: str) -> SeedType:
    from desync_core.plugins import get_registries

    factory = get_registries().seed_types.get(name).load()
    return factory() if isinstance(factory, type) else factory


def resolve_seed_value(value: str) -> tuple[str, str]:
    """``(seed type, spec)`` for a ``--seed`` value.

    desync's forms (``X.caibx``, ``INDEX:DATA[:options]``) are file seeds. A value
    ``TYPE:SPEC`` whose ``TYPE`` is a registered, user-selectable seed type (and not an
    existing path) goes to that type; ``file:`` may be written explicitly.
    """
    from desync_core.plugins import get_registries

    prefix, sep, rest = value.partition(":")
    if value.endswith(".caibx") and not (sep and prefix == "file"):
        return "file", value
    if sep and prefix and not os.path.exists(prefix):
        registry = get_registries().seed_types
        if prefix in registry:
            return prefix, rest
    return "file", value


def open_seeds(ctx: Any, target: Index, seeds: Iterable[str], seed_dirs: Iterable[str], *,
               index_location: str | None, warn: Warn) -> list[Seed]:
    """Open the seeds of ``--seed`` values and ``--seed-dir`` directories, in that order.

    Args:
        ctx: the run's :class:`~desync_core.context.Context`.
        target: the index being extracted.
        seeds: ``--seed`` values.
        seed_dirs: ``--seed-dir`` values.
        index_location: the index being extracted, skipped in seed directories.
        warn: prints a warning.
    """
    from desync_core.errors import UsageError
    from desync_core.seeds.file import find_dir_seeds, open_file_seed

    opened: list[Seed] = []
    try:
        for value in seeds:
            kind, spec = resolve_seed_value(value)
            seed_type = _seed_type(kind)
            if not seed_type.user_selectable:
                raise UsageError(f"seed type {kind!r} cannot be given with --seed")
            opened.extend(seed_type.open(ctx, spec, target=target, warn=warn))
        exclude = index_location if index_location not in (None, "-") else None
        for directory in seed_dirs:
            for index_path, data in find_dir_seeds(directory, exclude):
                opened.append(open_file_seed(ctx, index_path, data, target))
    except BaseException:
        for seed in opened:
            seed.close()
        raise
    return opened


__all__ = ["Seed", "SeedType", "open_seeds", "resolve_seed_value"]
