"""desync-store-sftp: ``sftp://[user@]host[:port]/path`` chunk and index stores.

* :mod:`desync_store_sftp.plugin` — the entry point (registrations only; no paramiko);
* :mod:`desync_store_sftp.sshconfig` — the settings ``~/.ssh/config`` gives a host;
* :mod:`desync_store_sftp.trust` — strict ``known_hosts`` checks, agent and key login;
* :mod:`desync_store_sftp.connect` — opening SFTP sessions (paramiko with TCP_NODELAY,
  or over ``$CASYNC_SSH_PATH``);
* :mod:`desync_store_sftp.wire` — pipelined whole-file reads and atomic writes;
* :mod:`desync_store_sftp.pool` — a pool of sessions shared by worker threads;
* :mod:`desync_store_sftp.store` — the chunk and index stores.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
