"""The plugin system: discovery, reporting, blocking, failures, conflicts, install hints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from desync_core import hookimpl
from desync_core.context import Context
from desync_core.errors import PluginConflictError, PluginLoadError, UnknownSchemeError
from desync_core.plugins import make_plugin_manager, set_plugin_manager
from desync_core.registry import Command

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_manager() -> Iterator[object]:
    """A plugin manager with built-ins only, installed process-wide for the test."""
    pm = make_plugin_manager(load_entrypoints=False)
    set_plugin_manager(pm)
    try:
        yield pm
    finally:
        set_plugin_manager(None)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "desync_core", *args], capture_output=True,
                          text=True, env=full, timeout=120)


def test_every_in_repo_plugin_is_an_installed_entry_point() -> None:
    """Each plugin and example in the repo is installed under the desync group."""
    names = {ep.name for ep in entry_points(group="desync")}
    expected = set()
    for pyproject in [*REPO.glob("plugins/*/pyproject.toml"),
                      *REPO.glob("examples/*/pyproject.toml")]:
        text = pyproject.read_text()
        section = text.split("[project.entry-points.desync]", 1)
        assert len(section) == 2, f"{pyproject} declares no desync entry point"
        first = section[1].strip().splitlines()[0]
        expected.add(first.split("=")[0].strip())
    assert expected
    assert expected <= names


def test_builtins_register_through_hooks(fresh_manager) -> None:  # type: ignore[no-untyped-def]
    regs = fresh_manager.registries()
    assert "" in regs.chunk_stores
    assert regs.chunk_stores.get("").plugin == "core_stores"
    assert {"make", "extract", "plugins", "config"} <= set(regs.commands.commands)
    assert regs.commands.commands["make"].plugin == "core_commands"


def test_unknown_scheme_names_the_package(fresh_manager) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownSchemeError) as info:
        Context().open_chunk_store("s3+https://s3.example.com/bucket/prefix")
    assert str(info.value) == (
        "s3+https://s3.example.com/bucket/prefix needs the desync-store-s3 plugin "
        "(pip install desync-store-s3)"
    )
    with pytest.raises(UnknownSchemeError, match="desync-store-sftp"):
        Context().read_index("sftp://host/dir/x.caibx")
    with pytest.raises(UnknownSchemeError, match="unsupported chunk store 'foo://x'"):
        Context().open_chunk_store("foo://x")


def test_conflicting_schemes_are_reported(fresh_manager) -> None:  # type: ignore[no-untyped-def]
    class One:
        @hookimpl
        def desync_register_chunk_stores(self, registry):  # type: ignore[no-untyped-def]
            registry.add("dup", "x:y")

    class Two:
        @hookimpl
        def desync_register_chunk_stores(self, registry):  # type: ignore[no-untyped-def]
            registry.add("dup", "x:z")

    fresh_manager.register(One(), name="one")
    fresh_manager.register(Two(), name="two")
    with pytest.raises(PluginConflictError, match="one, two"):
        fresh_manager.registries().chunk_stores.get("dup")


def test_broken_factory_fails_only_when_used(fresh_manager) -> None:  # type: ignore[no-untyped-def]
    class Broken:
        @hookimpl
        def desync_register_chunk_stores(self, registry):  # type: ignore[no-untyped-def]
            registry.add("broken", "no_such_module_xyz:Store")

    fresh_manager.register(Broken(), name="broken")
    regs = fresh_manager.registries()
    assert "broken" in regs.chunk_stores  # listing works
    with pytest.raises(PluginLoadError, match="no_such_module_xyz"):
        Context().open_chunk_store("broken://somewhere")


def test_hook_that_raises_is_recorded_not_fatal(fresh_manager) -> None:  # type: ignore[no-untyped-def]
    class Raising:
        @hookimpl
        def desync_add_commands(self, commands):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    fresh_manager.register(Raising(), name="raising")
    from desync_core.plugins import PluginInfo

    fresh_manager.infos["raising"] = PluginInfo(name="raising", module="test")
    regs = fresh_manager.registries()
    assert "make" in regs.commands.commands
    assert "boom" in fresh_manager.infos["raising"].error


def test_plugin_can_add_a_command(fresh_manager) -> None:  # type: ignore[no-untyped-def]
    from desync_core.cli import run

    seen = []

    class Hello:
        @hookimpl
        def desync_add_commands(self, commands):  # type: ignore[no-untyped-def]
            commands.add(Command(
                name="hello", help="say hello",
                add_arguments=lambda p: p.add_argument("who"),
                run=lambda args, ctx: seen.append(args.who) or 0,
            ))

    fresh_manager.register(Hello(), name="hello")
    assert run(["hello", "world"]) == 0
    assert seen == ["world"]


def test_plugins_command_lists_installed_plugins() -> None:
    proc = cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    infos = {i["name"]: i for i in json.loads(proc.stdout)}
    assert infos["core_stores"]["builtin"] is True
    example = infos["store_example"]
    assert example["distribution"] == "desync-store-example"
    assert example["version"] == "0.1.0"
    assert example["provides"]["chunk stores"] == ["flat"]
    text = cli("plugins").stdout
    assert "store_example: desync-store-example 0.1.0" in text
    assert "chunk stores: flat" in text


def test_disable_plugins_env() -> None:
    proc = cli("plugins", "--json", env={"DESYNC_DISABLE_PLUGINS": "store_example,core_stores"})
    infos = {i["name"]: i for i in json.loads(proc.stdout)}
    assert infos["store_example"]["blocked"] is True
    assert infos["core_stores"]["blocked"] is False  # essential: cannot be disabled
    proc = cli("make", "-s", "flat:///tmp/x", "/tmp/x.caibx", "/dev/null",
               env={"DESYNC_DISABLE_PLUGINS": "store_example"})
    assert proc.returncode != 0
    assert proc.stderr.startswith("Error: unsupported chunk store 'flat:///tmp/x'")


def test_load_plugins_allowlist_env() -> None:
    proc = cli("plugins", "--json", env={"DESYNC_LOAD_PLUGINS": ""})
    infos = {i["name"]: i for i in json.loads(proc.stdout)}
    assert all(i["blocked"] for i in infos.values() if not i["builtin"])
    assert not infos["core_commands"]["blocked"]


def test_missing_plugin_command_hint() -> None:
    proc = cli("mount-index", "x.caibx", "/mnt", env={"DESYNC_LOAD_PLUGINS": ""})
    assert proc.returncode == 3
    assert proc.stderr == ("Error: the mount-index command needs the desync-mount-fuse plugin "
                           "(pip install desync-mount-fuse)\n")


def test_entry_point_modules_import_nothing_heavy() -> None:
    """Importing every plugin's entry-point module (what `desync --help` does) stays light."""
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "for ep in entry_points(group='desync'):\n"
        "    ep.load()\n"
        "import desync_core.cli.commands, desync_core.plugins\n"
        "from desync_core.plugins import get_plugin_manager\n"
        "get_plugin_manager().registries()\n"
        "heavy = {'numpy', 'numba', 'zstandard', 'boto3', 'botocore', 'paramiko', 'requests',\n"
        "         'google.cloud.storage', 'mfusepy', 'urllib3'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_help_does_not_load_kernels() -> None:
    code = (
        "import sys\n"
        "from desync_core.cli import run\n"
        "try:\n"
        "    run(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted({'numpy', 'numba', 'zstandard'} & set(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.stderr.strip() == "[]"
    assert "make" in proc.stdout


@pytest.mark.parametrize("group", ["desync", "console_scripts", "pytest11"])
def test_entry_point_scan_matches_importlib_metadata(group: str) -> None:
    """The fast scan finds what importlib.metadata finds, in the same order."""
    from desync_core.plugins import _entry_points_from_metadata, find_entry_points

    assert find_entry_points(group) == _entry_points_from_metadata(group)


def test_entry_point_scan_reads_dist_info_on_the_path(tmp_path: Path) -> None:
    """A plugin on sys.path is found with its distribution's name and version; a second
    distribution of the same name later on the path is shadowed, as by pip."""
    for where, version, module in [("first", "1.2.3", "shiny_plugin"),
                                   ("second", "9.9", "stale_plugin")]:
        dist = tmp_path / where / f"shiny_plugin-{version}.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: Shiny.Plugin\nVersion: {version}\n\nbody: x\n")
        (dist / "entry_points.txt").write_text(
            f"[console_scripts]\nshiny = {module}:main\n\n"
            f"[desync]\n# a comment\nshiny = {module}.plugin:hooks [extra]\n")
    code = (
        "import sys, json\n"
        f"sys.path[:0] = [{str(tmp_path / 'first')!r}, {str(tmp_path / 'second')!r}]\n"
        "from desync_core.plugins import find_entry_points\n"
        "print(json.dumps([vars(e) for e in find_entry_points('desync')"
        " if e.name == 'shiny']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == [{"name": "shiny", "value": "shiny_plugin.plugin:hooks [extra]",
                                "distribution": "Shiny.Plugin", "version": "1.2.3"}]


def test_entry_point_load_resolves_module_and_attribute() -> None:
    from desync_core.plugins import PluginEntryPoint

    assert PluginEntryPoint("x", "os.path").load() is os.path
    assert PluginEntryPoint("x", "os:path.join [extra]").load() is os.path.join
