"""desync-store-ssh: the casync protocol over ssh.

* ``ssh://[user@]host[:port]/path``: a read-only chunk store served by a remote
  ``casync`` (or ``desync pull``), :mod:`desync_store_ssh.client`;
* ``desync pull - - - STORE``: serves any chunk store on stdin/stdout,
  :mod:`desync_store_ssh.server`;
* the framing shared by both, :mod:`desync_store_ssh.protocol` (``remote.md`` §4).
"""
