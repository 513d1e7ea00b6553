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
        "(pip install ./plugins/store_s3 from the desync-py repository)"
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
                           "(pip install ./plugins/mount_fuse from the desync-py repository)\n")


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


def test_plugins_import_only_the_public_surface() -> None:
    """Plugin packages and the example import from ``desync_core.plugin_api`` and
    ``desync_core.testing`` only: the core's layout is not their API."""
    import ast

    allowed = ("desync_core.plugin_api", "desync_core.testing")
    offenders = []
    for path in [*REPO.glob("plugins/*/**/*.py"), *REPO.glob("examples/*/**/*.py")]:
        if "build" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            for module in modules:
                if (module == "desync_core" or module.startswith("desync_core.")) and \
                        not any(module == a or module.startswith(a + ".") for a in allowed):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {module}")
    assert offenders == []


def test_public_surface_names_resolve() -> None:
    from desync_core import plugin_api

    for name in plugin_api.__all__:
        assert getattr(plugin_api, name) is not None, name


class _Misspelled:
    @hookimpl
    def desync_register_chunk_store(self, registry):  # type: ignore[no-untyped-def]
        """(the hook is desync_register_chunk_stores)"""


class _WrongSignature:
    @hookimpl
    def desync_register_chunk_stores(self, registry, extra):  # type: ignore[no-untyped-def]
        """(takes an argument the hook does not have)"""


class _RaisesWhileRegistering:
    @hookimpl
    def desync_register_chunk_stores(self, registry):  # type: ignore[no-untyped-def]
        registry.add("half", "x:y", "registered before the failure")
        raise RuntimeError("boom")


@pytest.mark.parametrize(("plugin", "reason"), [
    (_Misspelled(), "unknown hook desync_register_chunk_store"),
    (_WrongSignature(), "PluginValidationError"),
    (_RaisesWhileRegistering(), "desync_register_chunk_stores failed: RuntimeError: boom"),
])
def test_invalid_plugin_is_disabled_alone(fresh_manager, capsys, plugin,  # type: ignore[no-untyped-def]
                                          reason) -> None:
    fresh_manager.register_checked(plugin, "bad")
    regs = fresh_manager.registries()
    assert "make" in regs.commands.commands
    assert "" in regs.chunk_stores
    assert "half" not in regs.chunk_stores  # nothing of a disabled plugin stays
    info = fresh_manager.infos["bad"]
    assert info.error.startswith("disabled: ")
    assert reason in info.error
    warning = capsys.readouterr().err.splitlines()
    assert len(warning) == 1
    assert warning[0].startswith("Warning: plugin bad disabled: ")
    assert reason in warning[0]


def test_misspelled_hook_in_an_installed_plugin_leaves_every_command_working(
        tmp_path: Path) -> None:
    """A real installed distribution with a misspelled hook: --help, plugins and a real
    command work, with one warning; ``desync plugins`` lists it as failed."""
    pkg = tmp_path / "badplugin.py"
    pkg.write_text("from desync_core.plugin_api import hookimpl\n\n"
                   "@hookimpl\ndef desync_add_command(commands):\n    pass\n")
    dist = tmp_path / "badplugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: badplugin\nVersion: 1.0\n\n")
    (dist / "entry_points.txt").write_text("[desync]\nbad = badplugin\n")
    env = {"PYTHONPATH": str(tmp_path)}
    from desync_core.testing.fixtures import find_testdata

    index = str(find_testdata() / "testdata" / "index.caibx")
    for args in (["--help"], ["plugins", "--json"], ["list-chunks", index]):
        proc = cli(*args, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.splitlines() == [
            "Warning: plugin bad disabled: unknown hook desync_add_command"]
    infos = {i["name"]: i for i in json.loads(cli("plugins", "--json", env=env).stdout)}
    assert "unknown hook" in infos["bad"]["error"]


def test_hooks_are_called_through_pluggy(fresh_manager) -> None:  # type: ignore[no-untyped-def]
    """pluggy's tracing sees the register hooks (they are not called around pluggy)."""
    seen: list[str] = []
    fresh_manager.add_hookcall_monitoring(lambda name, impls, kw: seen.append(name),
                                          lambda *a: None)
    fresh_manager.registries()
    assert {"desync_register_chunk_stores", "desync_add_commands"} <= set(seen)


def test_plugin_refusal_and_config_section(fresh_manager, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from desync_core.config import load_config
    from desync_core.errors import ConfigError, UsageError

    def validate(entry, where):  # type: ignore[no-untyped-def]
        if "key" not in entry:
            raise ConfigError(f"{where}: no key")

    class Transport:
        @hookimpl
        def desync_register_index_stores(self, registry):  # type: ignore[no-untyped-def]
            registry.refuse("xyz", "Index storage is not supported by xyz stores")

        @hookimpl
        def desync_register_config_sections(self, registry):  # type: ignore[no-untyped-def]
            registry.add("xyz-credentials", validate, "keys")

    fresh_manager.register_checked(Transport(), "xyz")
    with pytest.raises(UsageError, match=r"^Index storage is not supported by xyz stores$"):
        Context().read_index("xyz://host/dir/a.caibx")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"xyz-credentials": {"xyz://h*": {"key": "k"},
                                                   "xyz://bad": {}}}))
    ctx = Context(config=load_config(str(cfg)))
    assert ctx.config_entry("xyz-credentials", "xyz://host") == {"key": "k"}
    assert ctx.config_entry("xyz-credentials", "xyz://other") is None
    with pytest.raises(ConfigError, match="no key"):
        ctx.config_entry("xyz-credentials", "xyz://bad")
    assert '"xyz-credentials"' in ctx.config.to_json(("xyz-credentials",))
