"""desync-store-oci: chunk stores in OCI registries (``oci+https://``, ``oci+http://``).

Each chunk is its own artifact (``remote.md`` §8). The package is split so that loading
the plugin stays cheap:

* :mod:`desync_store_oci.plugin` — the entry point (registrations only);
* :mod:`desync_store_oci.credentials` — where credentials come from (environment,
  ``oci-credentials``, Docker's config file and credential helpers);
* :mod:`desync_store_oci.client` — the distribution API over a pooled ``requests``
  session, with Bearer-token and Basic authentication;
* :mod:`desync_store_oci.store` — the chunk store.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
