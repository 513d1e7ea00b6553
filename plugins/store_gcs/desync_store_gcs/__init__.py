"""desync-store-gcs: ``gs://bucket[/prefix]`` chunk and index stores on Google Cloud Storage.

* :mod:`desync_store_gcs.plugin` — the entry point (registrations only; imports nothing
  heavy);
* :mod:`desync_store_gcs.client` — the per-process storage client (credentials, the
  connection pool, error translation; imports ``google-cloud-storage``);
* :mod:`desync_store_gcs.store` — the chunk store and the index store.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
