"""The plugin's entry point stays cheap to import and registers what it should."""

from __future__ import annotations

import json
import subprocess
import sys

from desync_core.plugin_api import Context, get_registries

HEAVY = ("requests", "urllib3", "ssl", "http.server", "socketserver",
         "desync_store_http.client", "desync_store_http.server",
         "desync_store_http.listeners", "desync_store_http.handler",
         "desync_store_http.chunkserver", "desync_store_http.indexserver")


def test_entry_point_import_is_light() -> None:
    """Importing the entry point (done for every ``desync`` run) loads no HTTP code."""
    code = ("import json, sys, desync_store_http.plugin; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert json.loads(out.stdout) == []


def test_building_the_cli_is_light() -> None:
    """Even with every plugin's commands registered, nothing heavy is imported."""
    code = ("import json, sys\n"
            "from desync_core.cli import build_parser\n"
            "from desync_core.plugins import get_registries\n"
            "build_parser(get_registries().commands)\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m.startswith('desync_store_http') "
            "and m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert json.loads(out.stdout) == []


def test_registrations() -> None:
    regs = get_registries()
    for scheme in ("http", "https"):
        assert regs.chunk_stores.get(scheme).plugin == "store_http"
        assert regs.index_stores.get(scheme).plugin == "store_http"
    assert regs.commands.commands["chunk-server"].plugin == "store_http"
    assert regs.commands.commands["index-server"].plugin == "store_http"
    store = Context().open_chunk_store("https://example.invalid/store")
    assert type(store).__name__ == "HTTPChunkStore"
    assert store.url(bytes(32)) == ("https://example.invalid/store/0000/" + "00" * 32
                                    + ".cacnk")
