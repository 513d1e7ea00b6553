"""Hostile archives: every one fails with a clear error and writes nothing outside the target.

Archives are crafted element by element (``archive_util.build``), so they contain what
no honest encoder writes. Each case is extracted with ``desync untar`` into
``work/target`` next to a sentinel directory ``work/outside``; afterwards ``outside``
and everything else around the target must be exactly as before.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from archive_util import (
    FLAGS,
    Dev,
    Dir,
    File,
    Link,
    build,
    element,
    entry,
    snapshot,
    xattr,
)

from desync_core.archive.base import ArchiveOptions, Node
from desync_core.archive.catar import FILENAME, GOODBYE, PAYLOAD, XATTR, CatarDecoder
from desync_core.archive.disk import DiskWriter
from desync_core.errors import ArchiveFormatError, DesyncError


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """``tmp/outside`` (with a victim file), an empty ``tmp/target``."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim").write_text("precious\n")
    (tmp_path / "target").mkdir()
    return tmp_path


def around(work: Path) -> dict[str, object]:
    """Everything in the work directory except the target (which may be written to)."""
    snap = snapshot(work)
    return {k: v for k, v in snap.items() if k != "target" and not k.startswith("target/")}


def untar_fails(cli: Callable[..., object], work: Path, data: bytes, *fragments: str,
                code: int = 6) -> str:
    """Extract ``data`` into work/target: it must fail with one ``Error:`` line
    containing ``fragments``, and nothing outside the target may change."""
    archive = work / "evil.catar"
    archive.write_bytes(data)
    before = around(work)
    result = cli("untar", archive, work / "target")
    assert "Traceback" not in result.err, result.err
    assert result.code == code, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("Error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], result.err
    assert around(work) == before
    return lines[0]


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [b".", b"..", b"a/b", b"../outside/pwned", b"/etc/pwned",
                                  b"..\x2f..", b"x/"])
def test_bad_names_are_refused(cli, work: Path, name: bytes) -> None:  # type: ignore[no-untyped-def]
    data = build(Dir([(name, File(b"pwned\n"))]))
    untar_fails(cli, work, data, "invalid file name")
    assert list((work / "target").iterdir()) == []


def test_empty_name_and_embedded_nul_are_refused(cli, work: Path) -> None:  # type: ignore[no-untyped-def]
    good = build(Dir([(b"a", File(b"x"))]))
    off = good.index(element(FILENAME, b"a\0"))
    for bad in (element(FILENAME, b"\0"), element(FILENAME, b"a\0b\0")):
        data = good[:off] + bad + good[off + len(element(FILENAME, b"a\0")):]
        untar_fails(cli, work, data, "malformed FILENAME")


def test_symlink_planted_then_reused_as_directory(cli, work: Path) -> None:  # type: ignore[no-untyped-def]
    # x -> ../outside, then "x" again as a directory holding a file: the second x is a
    # duplicate name; if it were accepted the file would land in ../outside.
    data = build(Dir([(b"x", Link(b"../outside")),
                      (b"x", Dir([(b"pwned", File(b"evil\n"))]))]))
    untar_fails(cli, work, data, "duplicate file name 'x'")
    assert not (work / "outside" / "pwned").exists()


def test_symlink_planted_then_written_through_out_of_order(cli, work: Path) -> None:  # type: ignore[no-untyped-def]
    data = build(Dir([(b"y", Link(b"../outside")), (b"x", Dir([(b"pwned", File(b"e"))])),
                      (b"y", Dir([(b"pwned", File(b"e"))]))]))
    untar_fails(cli, work, data, "out-of-order file name 'x'")
    assert not (work / "outside" / "pwned").exists()


def test_duplicate_names_are_refused(cli, work: Path) -> None:  # type: ignore[no-untyped-def]
    data = build(Dir([(b"f", File(b"one")), (b"f", File(b"two"))]))
    untar_fails(cli, work, data, "duplicate file name 'f'")


def test_existing_symlink_in_target_is_not_followed_for_directories(cli, work: Path) -> None:  # type: ignore[no-untyped-def]
    os.symlink("../outside", work / "target" / "x")
    data = build(Dir([(b"x", Dir([(b"pwned", File(b"evil\n"))]))]))
    untar_fails(cli, work, data, "x exists and is not a directory", code=1)
    assert not (work / "outside" / "pwned").exists()


def test_existing_symlink_in_target_is_replaced_for_files(ok, work: Path) -> None:  # type: ignore[no-untyped-def]
    os.symlink("../outside/victim", work / "target" / "f")
    os.symlink("../outside", work / "target" / "d")
    archive = work / "a.catar"
    archive.write_bytes(build(Dir([(b"d", Link(b"elsewhere")), (b"f", File(b"new\n"))])))
    ok("untar", archive, work / "target")
    assert (work / "outside" / "victim").read_text() == "precious\n"
    assert not (work / "target" / "f").is_symlink()
    assert (work / "target" / "f").read_text() == "new\n"
    assert os.readlink(work / "target" / "d") == "elsewhere"


def test_writer_rechecks_names_from_any_producer(work: Path) -> None:
    # A buggy or hostile node producer (not the catar decoder) cannot escape either.
    nodes = [Node(mode=0o40755), Node(mode=0o100644, name=b"../outside/pwned", path=b"x"),
             ]
    with pytest.raises(ArchiveFormatError, match="invalid file name"):
        DiskWriter(str(work / "target"), ArchiveOptions()).write(nodes)
    assert not (work / "outside" / "pwned").exists()


# -- GOODBYE tables ---------------------------------------------------------------------------


Damage = Callable[..., tuple[list[list[int]], list[int]]]


def _tree(goodbye: Damage | None) -> bytes:
    return build(Dir([(b"a", File(b"1")), (b"b", Dir([(b"c", File(b"2"))])),
                      (b"d", Link(b"a"))], goodbye=goodbye))


def _items(fn: Callable[[list[list[int]]], None]) -> Damage:
    def change(items: list[list[int]], tail: list[int]) -> tuple[list[list[int]], list[int]]:
        fn(items)
        return items, tail
    return change


def _drop_item(items: list[list[int]], tail: list[int]) -> tuple[list[list[int]], list[int]]:
    return items[:-1], [tail[0], tail[1] - 24, tail[2]]


GOODBYE_DAMAGE = {
    "wrong hash": _items(lambda items: items[0].__setitem__(2, items[0][2] ^ 1)),
    "wrong offset": _items(lambda items: items[1].__setitem__(0, items[1][0] + 1)),
    "wrong size": _items(lambda items: items[2].__setitem__(1, items[2][1] - 1)),
    "swapped sizes": _items(lambda items: (items[0].__setitem__(1, items[1][1]))),
    "missing item": _drop_item,
    "wrong tail offset": lambda items, tail: (items, [tail[0] + 8, tail[1], tail[2]]),
    "wrong tail size": lambda items, tail: (items, [tail[0], tail[1] + 24, tail[2]]),
    "no marker": lambda items, tail: (items, [tail[0], tail[1], 0]),
}


@pytest.mark.parametrize("damage", GOODBYE_DAMAGE)
def test_inconsistent_goodbye_tables_are_refused(cli, work: Path, damage: str) -> None:  # type: ignore[no-untyped-def]
    assert _tree(None)  # the undamaged tree is fine
    line = untar_fails(cli, work, _tree(GOODBYE_DAMAGE[damage]), "GOODBYE")
    assert "offset" in line


def test_undamaged_tree_extracts(ok, work: Path) -> None:  # type: ignore[no-untyped-def]
    archive = work / "a.catar"
    archive.write_bytes(_tree(None))
    ok("untar", archive, work / "target")
    assert (work / "target" / "b" / "c").read_bytes() == b"2"


# -- truncation and framing ------------------------------------------------------------------


def _valid() -> bytes:
    return build(Dir([
        (b"a", File(b"A" * 100)),
        (b"dev", Dev()),
        (b"sub", Dir([(b"deep", Dir([(b"f", File(b"x", meta=xattr(b"user.k", b"v")))]))])),
        (b"z", Link(b"sub/deep/f")),
    ]))


def test_every_truncation_is_refused() -> None:
    def read_all(data: bytes) -> None:
        for node in CatarDecoder(io.BytesIO(data).read).nodes():
            if isinstance(node, Node) and node.payload is not None:
                node.payload.read_all()

    data = _valid()
    read_all(data)
    for n in range(len(data)):
        with pytest.raises(ArchiveFormatError, match=r"truncated|empty"):
            read_all(data[:n])


def test_truncated_archives_fail_cleanly_when_extracted(cli, work: Path) -> None:  # type: ignore[no-untyped-def]
    data = _valid()
    for n in (0, 10, 64, 90, len(data) // 2, len(data) - 30, len(data) - 1):
        untar_fails(cli, work, data[:n], "truncated" if n else "empty")


def test_trailing_data_is_refused(cli, work: Path) -> None:  # type: ignore[no-untyped-def]
    untar_fails(cli, work, _valid() + b"\0" * 16, "after the end of the archive")


@pytest.mark.parametrize(("kind", "what"), [(XATTR, "too large"), (FILENAME, "too large"),
                                            (PAYLOAD, "truncated")])
def test_huge_sizes_are_refused_without_reading(cli, work: Path, kind: int,
                                                what: str) -> None:  # type: ignore[no-untyped-def]
    root = entry(stat.S_IFDIR | 0o755)
    if kind == FILENAME:
        data = root + struct.pack("<QQ", 1 << 50, FILENAME) + b"x\0"
    else:
        data = (root + element(FILENAME, b"f\0") + entry(stat.S_IFREG | 0o644)
                + struct.pack("<QQ", 1 << 50, kind) + b"ab")
    untar_fails(cli, work, data, what)


def test_unknown_elements_and_bad_entries_are_refused(cli, work: Path) -> None:  # type: ignore[no-untyped-def]
    root = entry(stat.S_IFDIR | 0o755)
    untar_fails(cli, work, root + element(0x1234, b"x"), "unknown element type")
    untar_fails(cli, work, element(FILENAME, b"a\0"), "expected ENTRY")
    untar_fails(cli, work, root + element(FILENAME, b"a\0") + entry(0o7777777),
                "invalid mode")
    other = build(Dir([(b"a", File(b"1"))]))
    mixed = other.replace(struct.pack("<Q", FLAGS), struct.pack("<Q", FLAGS | 0x4), 1)
    # the root's flags changed, the child's not: the archive disagrees with itself
    untar_fails(cli, work, mixed, "feature flags")
    untar_fails(cli, work, struct.pack("<QQ", 8, GOODBYE), "invalid element size")


def test_payload_where_a_directory_was_announced(cli, work: Path) -> None:  # type: ignore[no-untyped-def]
    data = entry(stat.S_IFDIR | 0o755) + element(PAYLOAD, b"xyz")
    untar_fails(cli, work, data, "unexpected PAYLOAD")


def test_errors_are_format_errors_in_the_api(work: Path) -> None:
    with pytest.raises(DesyncError):
        DiskWriter(str(work / "target"), ArchiveOptions()).write(
            CatarDecoder(io.BytesIO(_valid()[:-5]).read).nodes())


def test_random_damage_only_ever_gives_format_errors(tmp_path: Path) -> None:
    # Flip, insert and delete bytes of a valid archive: decoding (and extracting) must
    # fail cleanly or succeed, never crash, and never write outside the target.
    import random

    rng = random.Random(1234)
    good = _valid()
    (tmp_path / "outside").mkdir()
    for i in range(400):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            action = rng.random()
            if action < 0.6:
                data[pos] = rng.randrange(256)
            elif action < 0.8:
                del data[pos:pos + rng.randint(1, 24)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 24))
        target = tmp_path / f"t{i}"
        try:
            DiskWriter(str(target), ArchiveOptions(no_same_owner=os.geteuid() != 0)).write(
                CatarDecoder(io.BytesIO(bytes(data)).read).nodes())
        except DesyncError:
            pass
    assert os.listdir(tmp_path / "outside") == []
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("t")) == \
        ["outside"]
