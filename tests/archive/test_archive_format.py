"""The catar format itself: SipHash/BST vectors, desync's decoder/encoder tests, xattrs."""

from __future__ import annotations

import io
import stat
import struct
from pathlib import Path

import pytest
from archive_util import DESYNC_FLAGS, FLAGS, Dir, File, build, element_names, elements, xattr

from desync_core import flags as ff
from desync_core.archive.base import (
    DEFAULT_FEATURE_FLAGS,
    DIR_END,
    Acl,
    AclEntry,
    BytesPayload,
    Node,
    check_writable_flags,
)
from desync_core.archive.catar import CatarDecoder, CatarEncoder, bst_order, make_bst
from desync_core.archive.siphash import name_hashes, siphash24
from desync_core.archive.xattrs import (
    acl_access_xattr,
    acl_default_xattr,
    acl_from_xattrs,
    parse_acl_xattr,
)
from desync_core.errors import ArchiveFormatError, UsageError

SIPHASH_VECTORS = {
    b"char.blk": 0x18FB74FB85A72D8E,
    b"char.dev": 0x153B9ED392C9F4CB,
    b"relative.symlink": 0xF2D965E693C13B24,
    b"subdir1": 0xAEAB7AD312D52AB3,
    b"subdir2": 0xBD6E65F50B9E108B,
    b"test1.file": 0xA196818E7AF058AF,
    b"test2.file": 0x54F093E85BDDF049,
    b"file.txt": 0x7A8ACB196ABCBAA2,
    b"blank": 0x1975EBB8412B0FBC,
    b"symlink": 0x4F55A9E7F32ACF0A,
    b"f": 0x61CFFDBFF93EC8E0,
}


def decode(data: bytes, **kwargs: object) -> list[Node | object]:
    """Decode an archive completely, reading every payload into memory."""
    out: list[Node | object] = []
    for node in CatarDecoder(io.BytesIO(data).read, **kwargs).nodes():  # type: ignore[arg-type]
        if isinstance(node, Node) and node.payload is not None:
            node.payload = BytesPayload(node.payload.read_all())
        out.append(node)
    return out


def encode(nodes: list[Node | object], flags: int) -> bytes:
    return b"".join(bytes(b) for b in CatarEncoder(flags).encode(nodes))  # type: ignore[arg-type]


# -- SipHash and the GOODBYE BST ------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), SIPHASH_VECTORS.items())
def test_siphash_vectors(name: bytes, expected: int) -> None:
    assert siphash24(name) == expected


def test_vectorised_hashes_equal_scalar() -> None:
    names = [bytes([65 + i % 26]) * (i % 41) + b"x" for i in range(300)] + list(SIPHASH_VECTORS)
    assert name_hashes(names) == [siphash24(n) for n in names]
    assert name_hashes(list(SIPHASH_VECTORS)) == list(SIPHASH_VECTORS.values())


def test_bst_vector_of_desync() -> None:
    # desync TestGoodbyeBST: 16 sorted hashes come out in this input order
    assert make_bst(list(range(16))) == [8, 4, 12, 2, 6, 10, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0]


def test_bst_vector_of_complex_root(testdata: Path) -> None:
    hashes = sorted(SIPHASH_VECTORS[n] for n in (
        b"char.blk", b"char.dev", b"relative.symlink", b"subdir1", b"subdir2",
        b"test1.file", b"test2.file"))
    stored = [h >> 48 for h in make_bst(hashes)]
    assert stored == [0xA196, 0x18FB, 0xBD6E, 0x153B, 0x54F0, 0xAEAB, 0xF2D9]
    # and that is what the root GOODBYE of complex.catar holds
    data = (testdata / "testdata" / "complex.catar").read_bytes()
    _, name, body = elements(data)[-1]
    assert name == "GOODBYE"
    table = struct.unpack(f"<{len(body) // 8}Q", body)
    assert [table[i] >> 48 for i in range(2, 21, 3)] == stored


@pytest.mark.parametrize("n", range(0, 70))
def test_bst_is_a_search_tree(n: int) -> None:
    order = bst_order(n)
    assert sorted(order) == list(range(n))

    def check(i: int, lo: int, hi: int) -> None:
        if i < n:
            assert lo < order[i] < hi
            check(2 * i + 1, lo, order[i])
            check(2 * i + 2, order[i], hi)

    check(0, -1, n)


# -- desync's decoder tests on the golden vectors ---------------------------------------------


def test_format_decoder_flat_element_sequence(testdata: Path) -> None:
    data = (testdata / "testdata" / "flat.catar").read_bytes()
    assert element_names(data) == [
        "ENTRY", "USER", "GROUP", "SELINUX",
        "FILENAME", "ENTRY", "SELINUX", "DEVICE",
        "FILENAME", "ENTRY", "USER", "GROUP", "SELINUX", "PAYLOAD",
        "FILENAME", "ENTRY", "GROUP", "SELINUX", "PAYLOAD",
        "FILENAME", "ENTRY", "USER", "GROUP", "SELINUX", "SYMLINK",
        "GOODBYE",
    ]


def test_archive_decoder_types(testdata: Path) -> None:
    nodes = decode((testdata / "testdata" / "flat.catar").read_bytes())
    kinds = [stat.S_IFMT(n.mode) if isinstance(n, Node) else n for n in nodes]
    assert kinds == [stat.S_IFDIR, stat.S_IFCHR, stat.S_IFREG, stat.S_IFREG, stat.S_IFLNK,
                     DIR_END]
    root, device, file1, file2, link = nodes[:5]
    assert (root.user, root.group, root.uid) == (b"folbrich", b"folbrich", 500)
    assert root.selinux == b"unconfined_u:object_r:user_home_t:s0"
    assert (device.rdev_major, device.rdev_minor) == (1, 8)
    assert file1.payload.read_all() == b"file1-content\n\n"
    assert (file2.user, file2.group, file2.uid, file2.mode) == (None, b"folbrich", 0, 0o100600)
    assert link.target == b"file1.txt"


def test_archive_decoder_nesting(testdata: Path) -> None:
    nodes = [n for n in decode((testdata / "testdata" / "nested.catar").read_bytes())
             if isinstance(n, Node)]
    assert [n.path or b"." for n in nodes] == [
        b".", b"dir1", b"dir1/sub11", b"dir1/sub11/f11", b"dir1/sub11/f12", b"dir1/sub12",
        b"dir2", b"dir2/sub21", b"dir2/sub22"]
    assert {n.uid for n in nodes} == {500}


@pytest.mark.parametrize("name", ["flat.catar", "flatdir.catar", "nested.catar",
                                  "complex.catar"])
def test_decode_encode_is_byte_identical(testdata: Path, name: str) -> None:
    data = (testdata / "testdata" / name).read_bytes()
    decoder = CatarDecoder(io.BytesIO(data).read)
    nodes = []
    for n in decoder.nodes():
        if isinstance(n, Node) and n.payload is not None:
            n.payload = BytesPayload(n.payload.read_all())
        nodes.append(n)
    assert encode(nodes, decoder.feature_flags) == data


def test_old_desync_archive_with_unsorted_goodbye_is_read(cmd_testdata: Path) -> None:
    # desync 2018 wrote GOODBYE items in directory order; casync reads that too.
    nodes = [n for n in decode((cmd_testdata / "tree.catar").read_bytes())
             if isinstance(n, Node)]
    assert [n.path for n in nodes][1:] == [
        b"nested1", b"nested1/nested2", b"nested1/nested2/f", b"subdir1", b"subdir1/f1",
        b"subdir2", b"subdir2/f2", b"subdir3", b"subdir3/f3", b"symlink-dir", b"symlink-file"]
    assert nodes[5].payload.read_all() == b"file in subdir1\n"


def test_tar_element_sequence() -> None:
    # desync TestTar: dir1/sub11/{f11,f12}, dir1/sub12, dir2/{sub21,sub22}, symlink -> dir1
    tree = [
        Node(mode=0o40755),
        Node(mode=0o40755, name=b"dir1", path=b"dir1"),
        Node(mode=0o40755, name=b"sub11", path=b"dir1/sub11"),
        Node(mode=0o100644, name=b"f11", path=b"dir1/sub11/f11"),
        Node(mode=0o100644, name=b"f12", path=b"dir1/sub11/f12"),
        DIR_END,
        Node(mode=0o40755, name=b"sub12", path=b"dir1/sub12"), DIR_END,
        DIR_END,
        Node(mode=0o40755, name=b"dir2", path=b"dir2"),
        Node(mode=0o40755, name=b"sub21", path=b"dir2/sub21"), DIR_END,
        Node(mode=0o40755, name=b"sub22", path=b"dir2/sub22"), DIR_END,
        DIR_END,
        Node(mode=0o120777, name=b"symlink", path=b"symlink", target=b"dir1"),
        DIR_END,
    ]
    assert element_names(encode(tree, DEFAULT_FEATURE_FLAGS | ff.SHA512_256)) == [
        "ENTRY",
        "FILENAME", "ENTRY",
        "FILENAME", "ENTRY",
        "FILENAME", "ENTRY", "PAYLOAD",
        "FILENAME", "ENTRY", "PAYLOAD",
        "GOODBYE",
        "FILENAME", "ENTRY", "GOODBYE",
        "GOODBYE",
        "FILENAME", "ENTRY",
        "FILENAME", "ENTRY", "GOODBYE",
        "FILENAME", "ENTRY", "GOODBYE",
        "GOODBYE",
        "FILENAME", "ENTRY", "SYMLINK",
        "GOODBYE",
    ]


def test_decoder_rejects_embedded_slash() -> None:
    data = build(Dir([(b"evil/passwd", File(b"x"))]))
    nodes = CatarDecoder(io.BytesIO(data).read).nodes()
    assert next(nodes).is_dir  # the root comes first, then the bad name fails
    with pytest.raises(ArchiveFormatError, match="invalid file name 'evil/passwd'"):
        next(nodes)


# -- encoder normalisation (what casync writes for a feature set) -----------------------------


def _single(node: Node, flags: int) -> list[tuple[int, str, bytes]]:
    root = Node(mode=0o40755)
    node.name = node.path = b"x"
    return elements(encode([root, node, DIR_END], flags))


def test_encoder_applies_feature_flags() -> None:
    node = Node(mode=0o104755, uid=1000, gid=100, mtime=1_234_567_891_987_654_321,
                payload=BytesPayload(b"abc"), size=3, user=b"alice", group=b"users",
                xattrs=[(b"user.a", b"1")], fcaps=b"\x01\x00\x00\x02" + bytes(16),
                selinux=b"system_u:object_r:bin_t:s0")
    # unix: 16-bit uids, permissions, seconds; no xattrs/fcaps/labels/names
    unix = 0x1F09 | 0xA000000000000000
    elems = _single(node, unix)
    assert [e[1] for e in elems[1:]] == ["FILENAME", "ENTRY", "PAYLOAD", "GOODBYE"]
    fl, mode, _, uid, gid, mtime = struct.unpack("<6Q", elems[2][2])
    assert (fl, mode, uid, gid, mtime) == (unix, 0o104755, 1000, 100, 1_234_567_891_000_000_000)
    # no uid bits, no permissions, 2-second granularity
    elems = _single(node, ff.WITH_2SEC_TIME | ff.WITH_SYMLINKS)
    _, mode, _, uid, gid, mtime = struct.unpack("<6Q", elems[2][2])
    assert (mode, uid, gid, mtime) == (0o100666, 0, 0, 1_234_567_890_000_000_000)
    # read-only: a file without write bits stays 0444
    node.mode = 0o100555
    _, mode, *_ = struct.unpack("<6Q", _single(node, ff.WITH_READ_ONLY)[2][2])
    assert mode == 0o100444
    # everything we support: names (not for root/uid 0), xattrs, labels, caps
    full = ff.WITH_32BIT_UIDS | ff.WITH_USER_NAMES | ff.WITH_NSEC_TIME | ff.WITH_PERMISSIONS \
        | ff.WITH_XATTRS | ff.WITH_SELINUX | ff.WITH_FCAPS
    names = [e[1] for e in _single(node, full)[1:]]
    assert names == ["FILENAME", "ENTRY", "USER", "GROUP", "XATTR", "SELINUX", "FCAPS",
                     "PAYLOAD", "GOODBYE"]


def test_encoder_writes_symlinks_0777_and_acls() -> None:
    link = Node(mode=0o120700, target=b"t")
    _, mode, *_ = struct.unpack("<6Q", _single(link, FLAGS)[2][2])
    assert mode == 0o120777
    acl = Acl(users=[AclEntry(1001, 6), AclEntry(1000, 4)], groups=[AclEntry(100, 5)],
              group_obj=4, default_user_obj=7, default_group_obj=5, default_other=0,
              default_groups=[AclEntry(100, 7)])
    directory = Node(mode=0o40770, acl=acl)
    root = Node(mode=0o40755)
    directory.name = directory.path = b"d"
    elems = elements(encode([root, directory, DIR_END, DIR_END], FLAGS))
    assert [e[1] for e in elems[2:-2]] == [
        "ENTRY", "ACL_USER", "ACL_USER", "ACL_GROUP", "ACL_GROUP_OBJ", "ACL_DEFAULT",
        "ACL_DEFAULT_GROUP"]
    assert struct.unpack("<QQ", elems[3][2]) == (1000, 4)  # sorted by uid
    assert struct.unpack("<4Q", elems[7][2]) == (7, 5, 0, 0xFFFFFFFFFFFFFFFF)


@pytest.mark.parametrize("names", [[b"b", b"a"], [b"a", b"a"], [b"a/b"], [b".."], [b""]])
def test_encoder_refuses_bad_children(names: list[bytes]) -> None:
    nodes: list[Node | object] = [Node(mode=0o40755)]
    for name in names:
        nodes.append(Node(mode=0o100644, name=name, path=name))
    nodes.append(DIR_END)
    with pytest.raises(ArchiveFormatError):
        encode(nodes, FLAGS)


def test_encoder_refuses_uids_casync_rejects() -> None:
    with pytest.raises(ArchiveFormatError, match="65535"):
        _single(Node(mode=0o100644, uid=65535), FLAGS)


def test_writable_flag_checks() -> None:
    check_writable_flags(DEFAULT_FEATURE_FLAGS | ff.SHA512_256)
    with pytest.raises(UsageError, match="not normalised"):
        check_writable_flags(ff.WITH_ACL | ff.WITH_PERMISSIONS | ff.WITH_32BIT_UIDS)
    with pytest.raises(UsageError, match="cannot write"):
        check_writable_flags(ff.WITH_SUBVOLUME)


# -- XATTR forms ----------------------------------------------------------------------------


def _xattr_archive(flags: int, value: bytes) -> bytes:
    return build(Dir([(b"f", File(b"x", meta=xattr(b"user.k", value)))]), flags=flags)


def test_xattr_value_is_everything_after_the_name() -> None:
    nodes = decode(_xattr_archive(FLAGS, b"va\0lue\0"))
    assert nodes[1].xattrs == [(b"user.k", b"va\0lue\0")]


def test_desync_xattr_form_drops_the_trailing_nul() -> None:
    # desync writes name\0value\0 and flags 0xb000000010001f22
    nodes = decode(_xattr_archive(DESYNC_FLAGS, b"bar\0"))
    assert nodes[1].xattrs == [(b"user.k", b"bar")]
    nodes = decode(_xattr_archive(DESYNC_FLAGS, b"bar\0"), xattr_form="casync")
    assert nodes[1].xattrs == [(b"user.k", b"bar\0")]
    nodes = decode(_xattr_archive(FLAGS, b"bar\0"), xattr_form="desync")
    assert nodes[1].xattrs == [(b"user.k", b"bar")]


def test_encoder_writes_casync_xattr_form() -> None:
    node = Node(mode=0o100644, xattrs=[(b"user.foo", b"bar")])
    body = next(e for e in _single(node, FLAGS) if e[1] == "XATTR")[2]
    assert body == b"user.foo\0bar"  # 28-byte element, as casync writes it


# -- ACLs in xattr form ---------------------------------------------------------------------


def test_acl_xattr_round_trip() -> None:
    acl = Acl(users=[AclEntry(1000, 6)], groups=[AclEntry(100, 5)], group_obj=4,
              default_user_obj=7, default_group_obj=5, default_other=5, default_mask=7,
              default_users=[AclEntry(1000, 7)])
    mode = 0o40770
    access = acl_access_xattr(acl, mode)
    default = acl_default_xattr(acl, mode)
    entries = parse_acl_xattr(access)
    assert (0x10, 7, 0xFFFFFFFF) in entries  # mask = the mode's group bits
    assert (0x04, 4, 0xFFFFFFFF) in entries  # the owning group's own permissions
    assert acl_from_xattrs(access, default) == acl


def test_minimal_acl_adds_nothing() -> None:
    assert acl_from_xattrs(None, None) is None
    assert acl_access_xattr(Acl(), 0o100644) is None


def test_flatdir_goodbye_example(testdata: Path) -> None:
    # catar.md §5: empty dir d1, ENTRY at 186, GOODBYE at 353, tail (167, 40, marker)
    elems = {off: (name, body) for off, name, body in
             elements((testdata / "testdata" / "flatdir.catar").read_bytes())}
    assert elems[167] == ("FILENAME", b"d1\0")
    assert elems[186][0] == "ENTRY"
    name, body = elems[353]
    assert name == "GOODBYE"
    assert struct.unpack("<3Q", body) == (167, 40, 0x57446FA533702943)


def test_huge_directory_round_trip() -> None:
    # 50,000 entries: the GOODBYE table (1.2 MB) is larger than an output block.
    n = 50_000
    nodes: list[Node | object] = [Node(mode=0o40755)]
    for i in range(n):
        name = b"f%06d" % i
        nodes.append(Node(mode=0o100644, name=name, path=name, size=1,
                          payload=BytesPayload(b"x")))
    nodes.append(DIR_END)
    blocks = list(CatarEncoder(FLAGS).encode(nodes))  # type: ignore[arg-type]
    assert max(len(b) for b in blocks) > 1_200_000
    data = b"".join(bytes(b) for b in blocks)
    decoded = [x for x in CatarDecoder(io.BytesIO(data).read).nodes() if isinstance(x, Node)]
    assert len(decoded) == n + 1
    assert decoded[-1].name == b"f049999"
