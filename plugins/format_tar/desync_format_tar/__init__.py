"""desync-format-tar: tar archives as a source and a destination of desync node streams.

* ``desync tar --input-format=tar ARCHIVE SRC``: GNU, PAX and USTAR tar files (or ``-``
  for stdin) become catar archives or indexes (:mod:`desync_format_tar.reader`);
* ``desync untar --output-format=gnu-tar SRC TARGET``: catar archives or indexes become
  GNU tar files (or ``-`` for stdout), byte-compatible with desync
  (:mod:`desync_format_tar.writer`).
"""

from __future__ import annotations

__version__ = "0.1.0"
