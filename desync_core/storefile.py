"""``--store-file``: stores and cache from a JSON document (``store.md`` §4).

Shared by the commands that reload their stores on SIGHUP (``chunk-server``,
``mount-index``).
"""

from __future__ import annotations

import json

from desync_core.errors import ConfigError


def read_store_file(path: str) -> tuple[list[str], str]:
    """The ``stores`` and ``cache`` of a store file.

    ``stores`` entries use the ``-s`` syntax (``A|B`` groups included); ``cache`` is
    optional (``""`` when absent).

    Raises:
        ConfigError: the file cannot be read or is not such a JSON document.
    """

    def bad(why: str) -> ConfigError:
        return ConfigError(f"failed to read store-file '{path}': {why}")

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise bad(exc.strerror or str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(str(exc)) from None
    except RecursionError:  # arrays/objects nested ~1000 deep
        raise bad("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise bad("expected a JSON object")
    stores = doc.get("stores", [])
    cache = doc.get("cache")
    if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores):
        raise bad('"stores" must be a list of store locations')
    # Each entry is what one -s value may be (commas separate locations there too):
    # an empty location, as in [","] or [""], names no store (#19.9).
    stores = [part.strip() for entry in stores for part in entry.split(",")]
    if any(not part or "" in (m.strip() for m in part.split("|")) for part in stores):
        raise bad('"stores" contains an empty store location')
    if cache is None:
        cache = ""
    if not isinstance(cache, str):  # false, 0, [] are not "no cache"
        raise bad('"cache" must be a store location')
    return stores, cache


__all__ = ["read_store_file"]
