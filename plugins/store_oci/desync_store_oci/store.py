"""Chunk stores in OCI registries: ``oci+https://registry/repo``, ``oci+http://…``.

Every chunk is its own artifact (``remote.md`` §8), byte-for-byte what desync writes:

* a blob holding the chunk in storage format (the store's codec: compressed or not,
  and whatever else the codec applies), media type ``application/octet-stream``;
* an image manifest (``application/vnd.oci.image.manifest.v1+json``) with
  ``artifactType`` ``application/vnd.desync.chunk.v1``, the OCI empty JSON descriptor as
  config, that one blob as its only layer and the annotation
  ``org.opencontainers.image.title`` = the tag;
* tagged ``<id><ext>``: the chunk id in hex and the codec's storage extension, the
  naming of chunk files elsewhere. The tag is the only place the id appears, so any
  digest algorithm works and stores of different formats can share a repository.

Reading fetches the manifest by tag (a manifest without the artifact type is some
other artifact: the chunk is missing) and then its single layer. Writing pushes the
shared config blob once, the chunk blob, then the manifest under its tag: the tag
appears only when everything it references is there (atomic). Pruning lists tags (pages
of 1000, following ``Link`` headers) and deletes the manifests of unreferenced chunks;
the blobs are left to the registry's garbage collection. Index files cannot be stored.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from desync_core.plugin_api import (
    Chunk,
    ChunkMissingError,
    PrunableChunkStore,
    StoreConnectionError,
    StoreError,
    StoreLocation,
    StoreOptions,
    UsageError,
    parse_location,
)
from desync_store_oci.client import RegistryClient, registry_message
from desync_store_oci.credentials import CredentialSource, resolve

ARTIFACT_TYPE = "application/vnd.desync.chunk.v1"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
LAYER_MEDIA_TYPE = "application/octet-stream"
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DESCRIPTOR = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}
TITLE_ANNOTATION = "org.opencontainers.image.title"
#: Largest blob a chunk manifest may reference: far above any real chunk, it only stops
#: a corrupt manifest from driving a huge allocation.
MAX_BLOB_SIZE = 1 << 30
#: Tags per page when listing (registries answer everything at once without it).
TAG_PAGE_SIZE = 1000

# The distribution spec's repository name grammar.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SCHEMES = {"oci+https": "https", "oci+http": "http"}
_BLOB_RACE = re.compile(r"\b(MANIFEST_BLOB_UNKNOWN|DIGEST_INVALID)\b")


def _reopen(cls: type[OCIChunkStore], location: str, options: StoreOptions,
            credentials: CredentialSource) -> OCIChunkStore:
    return cls(parse_location(location), options, credentials)


def chunk_manifest(tag: str, blob_digest: str, blob_size: int) -> bytes:
    """The manifest of one chunk, serialized as desync (Go's ``encoding/json``) does."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": EMPTY_CONFIG_DESCRIPTOR,
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": blob_digest, "size": blob_size}],
        "annotations": {TITLE_ANNOTATION: tag},
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


class OCIChunkStore(PrunableChunkStore):
    """Chunks as artifacts in one repository of an OCI registry.

    Args:
        location: ``oci+https://registry[:port]/repo`` or ``oci+http://…``.
        options: store options (``n`` sizes the connection pool and prune's fan-out;
            TLS and timeout as for HTTP stores; ``uncompressed``).
        credentials: where credentials come from (default: resolved from the
            environment, the config file and Docker's config, see
            :mod:`desync_store_oci.credentials`).

    Raises:
        UsageError: the location names no valid repository.
    """

    returns_stored_bytes = True

    def __init__(self, location: StoreLocation, options: StoreOptions | None = None,
                 credentials: CredentialSource | None = None) -> None:
        super().__init__(location, options)
        url = location.url
        scheme = _SCHEMES.get(location.scheme)
        repository = url.path.strip("/")
        if scheme is None or not url.netloc:
            raise UsageError(f"failed to initialize oci registry store {location}: "
                             "expected oci+https://registry/repository or oci+http://…")
        if not _REPOSITORY.fullmatch(repository):
            raise UsageError(f"failed to initialize oci registry store {location}: "
                             f"invalid repository name {repository!r} (lower-case "
                             "letters, digits and separators . _ - /)")
        self.credentials = credentials if credentials is not None else resolve(location.raw)
        self.repository = repository
        self.client = RegistryClient(scheme, url.netloc, repository, self.options,
                                     self.credentials, location.raw)
        self._config_pushed = False
        self._config_lock = threading.Lock()
        self._writes_lock = threading.Lock()
        self._writes: dict[bytes, threading.Event] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        # The resolved credentials travel along: a worker process need not find the
        # config file the command was given.
        return (_reopen, (type(self), str(self.location), self.options, self.credentials))

    def tag(self, chunk_id: bytes) -> str:
        """The tag of a chunk in this store's format: ``<id><ext>``."""
        return chunk_id.hex() + self.codec.extension

    def chunk_id_of(self, tag: str) -> bytes | None:
        """The chunk id a tag names in this store's format, else None."""
        ext = self.codec.extension
        if ext:
            if not tag.endswith(ext):
                return None
            tag = tag[: -len(ext)]
        return bytes.fromhex(tag) if _HEX64.fullmatch(tag) else None

    # -- reading ------------------------------------------------------------------------

    def _manifest(self, chunk_id: bytes) -> tuple[dict[str, Any], str] | None:
        """The chunk's manifest and its digest; None when the tag is absent or names
        another kind of artifact (an unrelated artifact may sit under an id-shaped tag,
        most of all in uncompressed stores whose tags have no extension)."""
        tag = self.tag(chunk_id)
        what = f"GET manifest {tag}"
        resp = self.client.request("GET", f"manifests/{tag}", action="pull", what=what,
                                   headers={"Accept": MANIFEST_MEDIA_TYPE})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self.client.error(what, resp)
        try:
            manifest = json.loads(resp.content)
        except ValueError:
            raise StoreError(f"store {self}: invalid manifest for chunk {tag}") from None
        if not isinstance(manifest, dict) or manifest.get("artifactType") != ARTIFACT_TYPE:
            return None
        digest = (resp.headers.get("Docker-Content-Digest")
                  or "sha256:" + hashlib.sha256(resp.content).hexdigest())
        return manifest, digest

    def get_chunk(self, chunk_id: bytes) -> Chunk:
        found = self._manifest(chunk_id)
        if found is None:
            raise ChunkMissingError(chunk_id, self)
        manifest, _ = found
        tag = self.tag(chunk_id)
        layers = manifest.get("layers")
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
            count = len(layers) if isinstance(layers, list) else 0
            raise StoreError(f"store {self}: manifest for chunk {tag} references {count} "
                             "blobs, expected exactly one")
        digest, size = layers[0].get("digest"), layers[0].get("size")
        if not isinstance(size, int) or not 0 <= size <= MAX_BLOB_SIZE:
            raise StoreError(f"store {self}: manifest for chunk {tag} references a blob of "
                             f"invalid size {size}")
        if not isinstance(digest, str) or not re.fullmatch(r"[a-z0-9+._-]+:[a-zA-Z0-9=_-]+",
                                                           digest):
            raise StoreError(f"store {self}: manifest for chunk {tag} has an invalid digest")
        what = f"GET blob of {tag}"
        resp = self.client.request("GET", f"blobs/{digest}", action="pull", what=what)
        if resp.status_code == 404:
            # A manifest whose blob is gone: missing, so that other stores are tried.
            raise ChunkMissingError(chunk_id, self)
        if resp.status_code != 200:
            raise self.client.error(what, resp)
        if len(resp.content) != size:
            raise StoreConnectionError(f"store {self}: {what}: got {len(resp.content)} of "
                                       f"{size} bytes")
        return Chunk(chunk_id, encoded=resp.content, codec=self.codec)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self._manifest(chunk_id) is not None

    # -- writing ------------------------------------------------------------------------

    def _push_blob(self, data: bytes, digest: str, what: str) -> None:
        """POST an upload session, then PUT the whole blob into it (monolithic)."""
        resp = self.client.request("POST", "blobs/uploads/", action="push",
                                   what=f"{what}: start upload")
        if resp.status_code == 201:  # a registry that took it whole (none in practice)
            return
        location = resp.headers.get("Location")
        if resp.status_code != 202 or not location:
            raise self.client.error(f"{what}: start upload", resp)
        resp = self.client.request("PUT", location, action="push", what=f"{what}: upload",
                                   params={"digest": digest}, data=data,
                                   headers={"Content-Type": "application/octet-stream"})
        if resp.status_code not in (201, 204):
            raise self.client.error(f"{what}: upload", resp)

    def _ensure_config(self) -> None:
        """Push the empty config blob every manifest references, once per store."""
        with self._config_lock:
            if self._config_pushed:
                return
            digest = str(EMPTY_CONFIG_DESCRIPTOR["digest"])
            what = "HEAD config blob"
            resp = self.client.request("HEAD", f"blobs/{digest}", action="push", what=what)
            if resp.status_code == 404:
                self._push_blob(EMPTY_CONFIG, digest, "push config blob")
            elif resp.status_code != 200:
                raise self.client.error(what, resp)
            self._config_pushed = True

    def store_chunk(self, chunk: Chunk) -> None:
        # One upload per chunk at a time in this process: the registry (distribution
        # 2.8 at least) races when the same blob is uploaded concurrently, and a
        # manifest pushed meanwhile is refused as referencing an unknown blob.
        while True:
            with self._writes_lock:
                running = self._writes.get(chunk.id)
                if running is None:
                    done = self._writes[chunk.id] = threading.Event()
                    break
            running.wait()
            if self._manifest(chunk.id) is not None:
                return  # the other writer stored it
        try:
            self._store(chunk)
        finally:
            with self._writes_lock:
                del self._writes[chunk.id]
            done.set()

    def _store(self, chunk: Chunk) -> None:
        data = bytes(chunk.encoded(self.codec))
        tag = self.tag(chunk.id)
        self._ensure_config()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self._push_blob(data, digest, f"push blob of {tag}")
        manifest = chunk_manifest(tag, digest, len(data))
        what = f"PUT manifest {tag}"
        resp = self.client.request("PUT", f"manifests/{tag}", action="push", what=what,
                                   data=manifest, headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        if resp.status_code == 400 and _BLOB_RACE.search(registry_message(resp)):
            # The blob was uploaded a moment ago; another process uploading the same
            # blob (or the config) at once leaves the registry's view of it briefly
            # inconsistent. Another attempt (the core's retry) succeeds.
            raise StoreConnectionError(self.client.error(what, resp).args[0])
        if resp.status_code not in (200, 201):
            raise self.client.error(what, resp)

    # -- listing and deleting -----------------------------------------------------------

    def tags(self) -> Iterator[str]:
        """Every tag of the repository, page by page (none if it does not exist yet)."""
        path: str | None = "tags/list"
        params: dict[str, str] | None = {"n": str(TAG_PAGE_SIZE)}
        while path is not None:
            what = "list tags"
            resp = self.client.request("GET", path, action="pull", what=what, params=params)
            if resp.status_code == 404:
                return  # NAME_UNKNOWN: nothing was ever pushed
            if resp.status_code != 200:
                raise self.client.error(what, resp)
            try:
                tags = resp.json().get("tags") or []
            except (ValueError, AttributeError):
                raise StoreError(f"store {self}: invalid tag list") from None
            yield from (t for t in tags if isinstance(t, str))
            next_url = resp.links.get("next", {}).get("url")
            # The next page's URL carries its own query (n, last).
            path, params = (self.client.url(next_url), None) if next_url else (None, None)

    def iter_chunk_ids(self) -> Iterator[bytes]:
        for tag in self.tags():
            chunk_id = self.chunk_id_of(tag)
            if chunk_id is not None:
                yield chunk_id

    def remove_chunk(self, chunk_id: bytes) -> None:
        """Delete the chunk's manifest (only one of the desync artifact type)."""
        found = self._manifest(chunk_id)
        if found is None:
            raise ChunkMissingError(chunk_id, self)
        _, digest = found
        what = f"DELETE manifest {self.tag(chunk_id)}"
        resp = self.client.request("DELETE", f"manifests/{digest}", action="delete", what=what)
        if resp.status_code == 404:
            raise ChunkMissingError(chunk_id, self)
        if resp.status_code not in (200, 202, 204):
            raise self.client.error(what, resp)

    def prune(self, keep: set[bytes]) -> int:
        """Delete every chunk not in ``keep``, ``n`` removals at a time (each is two
        round trips; the listing stays sequential); returns how many were deleted."""
        doomed = [cid for cid in self.iter_chunk_ids() if cid not in keep]
        return self._remove_all(doomed)

    def _remove_all(self, chunk_ids: Iterable[bytes]) -> int:
        """Remove chunks concurrently; returns how many were removed (a tag that
        names another kind of artifact, or one already gone, is not)."""
        def remove(chunk_id: bytes) -> bool:
            try:
                self.remove_chunk(chunk_id)
            except ChunkMissingError:
                return False
            return True

        with ThreadPoolExecutor(max(1, self.options.n)) as pool:
            return sum(pool.map(remove, chunk_ids))

    def close(self) -> None:
        self.client.close()


__all__ = ["ARTIFACT_TYPE", "OCIChunkStore", "chunk_manifest"]
