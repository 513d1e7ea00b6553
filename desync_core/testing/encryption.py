"""Running store tests with chunk encryption on (``store.md`` §2.1, §5.1).

A store plugin runs its contract suite encrypted by opening its store through a
:class:`~desync_core.context.Context` whose config gives the location one of
:data:`ENCRYPTION_OPTION_SETS`::

    from desync_core.testing import (ENCRYPTION_OPTION_SETS, PrunableChunkStoreContract,
                                     encrypted_context, open_chunk_store)

    class TestEncryptedMyStore(PrunableChunkStoreContract):
        @pytest.fixture(params=sorted(ENCRYPTION_OPTION_SETS))
        def store(self, request, tmp_path, my_server):
            location = f"my://127.0.0.1:{my_server.port}/store"
            ctx = encrypted_context(tmp_path, location, request.param)
            return open_chunk_store(location, ctx)

        def put_raw(self, store, key, data): ...
        def get_raw(self, store, key): ...

The contract's raw helpers already encode with ``store.codec`` (so the raw objects are
encrypted), and its keys carry the codec's extension.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from desync_core.config import load_config
from desync_core.context import Context

#: desync's test key (``encrypt_test.go``); its key id is :data:`TEST_KEY_ID`.
TEST_ENCRYPTION_KEY = "6368616e676520746869732070617373776f726420746f206120736563726574"
TEST_KEY_ID = "50d64035"
#: desync's second test key (a wrong key for :data:`TEST_ENCRYPTION_KEY`'s chunks).
OTHER_ENCRYPTION_KEY = "746f74616c6c7920646966666572656e74206b65792075736564206865726521"

#: ``store-options`` entries (config-file form) covering both algorithms, with and
#: without compression, by name; a store's codec extension for each is in
#: :data:`ENCRYPTION_EXTENSIONS`.
ENCRYPTION_OPTION_SETS: dict[str, dict[str, Any]] = {
    "xchacha20-poly1305": {"encryption": True, "encryption-key": TEST_ENCRYPTION_KEY},
    "aes-256-gcm": {"encryption": True, "encryption-key": TEST_ENCRYPTION_KEY,
                    "encryption-algorithm": "aes-256-gcm"},
    "uncompressed-xchacha20-poly1305": {"encryption": True,
                                        "encryption-key": TEST_ENCRYPTION_KEY,
                                        "encryption-algorithm": "xchacha20-poly1305",
                                        "uncompressed": True},
    "uncompressed-aes-256-gcm": {"encryption": True, "encryption-key": TEST_ENCRYPTION_KEY,
                                 "encryption-algorithm": "aes-256-gcm", "uncompressed": True},
}

#: The chunk extension a store gets with each of :data:`ENCRYPTION_OPTION_SETS`.
ENCRYPTION_EXTENSIONS: dict[str, str] = {
    "xchacha20-poly1305": f".cacnk.xchacha20-poly1305-{TEST_KEY_ID}",
    "aes-256-gcm": f".cacnk.aes-256-gcm-{TEST_KEY_ID}",
    "uncompressed-xchacha20-poly1305": f".xchacha20-poly1305-{TEST_KEY_ID}",
    "uncompressed-aes-256-gcm": f".aes-256-gcm-{TEST_KEY_ID}",
}


def write_store_options(path: Path | str, entries: dict[str, dict[str, Any]]) -> Path:
    """Write a config file whose ``store-options`` are ``entries`` (location -> entry)."""
    path = Path(path)
    path.write_text(json.dumps({"store-options": entries}))
    return path


def encrypted_context(directory: Path | str, location: str,
                      option_set: str | dict[str, Any] = "xchacha20-poly1305") -> Context:
    """A context whose config encrypts the store at ``location``.

    Args:
        directory: where the config file is written (a test's ``tmp_path``).
        location: the store location exactly as it will be opened.
        option_set: a name from :data:`ENCRYPTION_OPTION_SETS` or an entry of its own.
    """
    entry = ENCRYPTION_OPTION_SETS[option_set] if isinstance(option_set, str) else option_set
    name = f"desync-encryption-{hashlib.sha256(location.encode()).hexdigest()[:12]}.json"
    config = write_store_options(Path(directory) / name, {location: entry})
    return Context(config=load_config(str(config)))


__all__ = [
    "ENCRYPTION_EXTENSIONS",
    "ENCRYPTION_OPTION_SETS",
    "OTHER_ENCRYPTION_KEY",
    "TEST_ENCRYPTION_KEY",
    "TEST_KEY_ID",
    "encrypted_context",
    "write_store_options",
]
