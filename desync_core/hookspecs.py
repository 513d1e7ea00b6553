"""Hook specifications: the whole plugin interface of desync.

Every hook receives a *registry* object and adds entries to it. Registries, rather than
``firstresult`` chains, let the core list what each plugin provides, detect conflicts
and import implementations lazily (``"package.module:Class"`` strings).

Hooks are append-only: new arguments may be added (pluggy lets implementations accept
fewer arguments than the spec), existing ones are never removed or renamed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from desync_core.markers import hookspec

if TYPE_CHECKING:
    from desync_core.registry import CommandRegistry, Registry


@hookspec
def desync_register_chunk_stores(registry: Registry) -> None:
    """Register chunk-store factories by URL scheme.

    Called once, the first time a store location is opened or ``desync plugins`` runs.

    Args:
        registry: call ``registry.add(schemes, factory, description)``. ``factory`` is a
            ``"module:Class"`` string (imported only when the scheme is used) or a
            callable ``factory(location, options) -> ChunkStore``.
    """


@hookspec
def desync_register_index_stores(registry: Registry) -> None:
    """Register index-store factories by URL scheme.

    Args:
        registry: as for :func:`desync_register_chunk_stores`; the factory is called as
            ``factory(location, options) -> IndexStore`` with the location of the
            directory that holds the index files.
    """


@hookspec
def desync_register_archive_formats(registry: Registry) -> None:
    """Register archive formats (``tar --input-format``, ``untar --output-format``).

    Args:
        registry: ``registry.add(names, factory, description)``; the factory returns an
            :class:`desync_core.archive.base.ArchiveFormat`.
    """


@hookspec
def desync_register_seed_types(registry: Registry) -> None:
    """Register seed types usable by ``extract``.

    Args:
        registry: ``registry.add(names, factory, description)``; the factory returns a
            :class:`desync_core.seeds.base.SeedType`.
    """


@hookspec
def desync_register_config_sections(registry: Registry) -> None:
    """Register location sections of the config file that a plugin reads.

    For example ``registry.add("s3-credentials", "pkg.creds:validate", "S3 keys")``.
    ``desync config`` prints every registered section; the plugin reads entries with
    ``ctx.config.section_entry(name, location)`` (glob keys, ``store.md`` §5.2).

    Args:
        registry: ``registry.add(names, validator, description)``; ``validator(entry,
            where)`` (or ``"module:function"``) checks one entry and raises
            :class:`~desync_core.errors.ConfigError` naming ``where`` when it is wrong.
    """


@hookspec
def desync_add_commands(commands: CommandRegistry) -> None:
    """Add CLI subcommands (for example ``chunk-server``).

    Called once when the command line is built.

    Args:
        commands: call ``commands.add(Command(...))``.
    """
