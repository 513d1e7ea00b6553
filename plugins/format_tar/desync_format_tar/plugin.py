"""Entry-point module: registers the formats by name only (imports nothing heavy)."""

from __future__ import annotations

from desync_core.plugin_api import hookimpl


@hookimpl
def desync_register_archive_formats(registry) -> None:  # type: ignore[no-untyped-def]
    """``tar`` (input: GNU/PAX/USTAR) and ``gnu-tar`` (output)."""
    registry.add("tar", "desync_format_tar.reader:TarInputFormat",
                 "tar file or stream (GNU, PAX, USTAR), for 'tar --input-format'")
    registry.add("gnu-tar", "desync_format_tar.writer:GnuTarFormat",
                 "GNU tar file or stream, for 'untar --output-format'")
