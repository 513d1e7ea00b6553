"""desync-store-http: ``http://`` and ``https://`` chunk and index stores, and the
``chunk-server`` and ``index-server`` commands.

The package is split so that loading the plugin stays cheap:

* :mod:`desync_store_http.plugin` — the entry point (registrations and commands only);
* :mod:`desync_store_http.client` — the HTTP client stores (imports ``requests``);
* :mod:`desync_store_http.server` — the threaded HTTP(S) server shared by both servers
  (listener groups and their lifecycle), built from :mod:`~desync_store_http.listeners`,
  :mod:`~desync_store_http.handler`, :mod:`~desync_store_http.replies`,
  :mod:`~desync_store_http.uploads` and :mod:`~desync_store_http.settings`;
* :mod:`desync_store_http.chunkserver`, :mod:`desync_store_http.indexserver` — the two
  request handlers and their command implementations.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
