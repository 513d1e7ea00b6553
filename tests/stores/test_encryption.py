"""Chunk encryption at rest in desync's format (``store.md`` §2, §2.1, §5.1; issue 16).

Known-answer vectors of both AEADs through the primitive the codec uses, the stored
layout (nonce || ciphertext || tag of the compression layer), key ids in extensions,
desync's validation messages, mixed stores, wrong keys, tampered and truncated files,
and make/extract/verify/prune through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desync_core.context import Context
from desync_core.digest import SHA512_256
from desync_core.errors import ChunkInvalidError, ChunkMissingError, ConfigError
from desync_core.location import parse_location
from desync_core.ops.storeops import verify_store
from desync_core.stores.chunk import COMPRESSED, UNCOMPRESSED, Chunk, ChunkCodec, compress
from desync_core.stores.encryption import (
    AES_256_GCM,
    KEY_ENV,
    XCHACHA20_POLY1305,
    ChunkCipher,
    _hchacha20,
    _xchacha_from_pynacl,
    _xchacha_from_subkeys,
    aead_functions,
    key_id,
    xchacha_implementation,
)
from desync_core.stores.local import LocalChunkStore
from desync_core.stores.options import StoreOptions
from desync_core.testing import (
    ENCRYPTION_EXTENSIONS,
    ENCRYPTION_OPTION_SETS,
    OTHER_ENCRYPTION_KEY,
    TEST_ENCRYPTION_KEY,
    TEST_KEY_ID,
    LocalDirectoryRaw,
    PrunableChunkStoreContract,
    encrypted_context,
    open_chunk_store,
    sample_chunk,
    write_store_options,
)
from desync_core.testing.fixtures import assert_one_line_error

KEY = bytes.fromhex(TEST_ENCRYPTION_KEY)


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set $DESYNC_ENCRYPTION_KEY themselves where they mean to."""
    monkeypatch.delenv(KEY_ENV, raising=False)


def local_store(path: Path, **options: object) -> LocalChunkStore:
    opts = StoreOptions(**options)  # type: ignore[arg-type]
    opts.validate(str(path))
    return LocalChunkStore(parse_location(str(path)), opts)


def xchacha_store(path: Path, key: str = TEST_ENCRYPTION_KEY, **options: object) -> LocalChunkStore:
    return local_store(path, encryption=True, encryption_key=key, **options)


def aes_store(path: Path, key: str = TEST_ENCRYPTION_KEY, **options: object) -> LocalChunkStore:
    return local_store(path, encryption=True, encryption_key=key,
                       encryption_algorithm=AES_256_GCM, **options)


# -- known-answer vectors, through the codec's primitive -----------------------------------

SUNSCREEN = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
             b"for the future, sunscreen would be it.")


def test_xchacha20_poly1305_known_answer() -> None:
    """draft-irtf-cfrg-xchacha-03, A.3.1 (AEAD_XChaCha20_Poly1305)."""
    key = bytes(range(0x80, 0xA0))
    nonce = bytes.fromhex("404142434445464748494a4b4c4d4e4f5051525354555657")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    ciphertext = bytes.fromhex(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
        "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
        "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
        "21f9664c97637da9768812f615c68b13b52e")
    tag = bytes.fromhex("c0875924c1c7987947deafd8780acf49")
    seal, open_ = aead_functions(XCHACHA20_POLY1305, key)
    assert seal(nonce, SUNSCREEN, aad) == ciphertext + tag
    assert open_(nonce, ciphertext + tag, aad) == SUNSCREEN
    # The same through PyNaCl's binding of libsodium's AEAD (the fallback).
    seal, open_ = _xchacha_from_pynacl(key)
    assert seal(nonce, SUNSCREEN, aad) == ciphertext + tag
    assert open_(nonce, ciphertext + tag, aad) == SUNSCREEN


def test_hchacha20_known_answer() -> None:
    """draft-irtf-cfrg-xchacha-03, 2.2.1: libsodium's HChaCha20, as the codec calls it."""
    hchacha20 = _hchacha20()
    assert hchacha20 is not None
    subkey = hchacha20(bytes(range(32)), bytes.fromhex("000000090000004a0000000031415927"))
    assert subkey.hex() == ("82413b4227b27bfed30e42508a877d73"
                            "a0f9e4d58a74a853c12ec41326d3ecdc")


def test_xchacha20_poly1305_composed_equals_libsodium_aead() -> None:
    """The codec composes XChaCha20-Poly1305 from libsodium's HChaCha20 and OpenSSL's
    ChaCha20-Poly1305; every length (empty, partial and whole blocks, several chunks'
    worth), buffer type and AAD gives libsodium's own AEAD bytes, and each opens the
    other's."""
    assert xchacha_implementation() == "libsodium HChaCha20 + OpenSSL ChaCha20-Poly1305"
    import random

    rng = random.Random(16)
    key = rng.randbytes(32)
    composed = _xchacha_from_subkeys(key)
    assert composed is not None
    seal, open_ = composed
    ref_seal, ref_open = _xchacha_from_pynacl(key)
    for size in (0, 1, 15, 16, 63, 64, 65, 1000, 65536, 300_001):
        data = rng.randbytes(size)
        nonce = rng.randbytes(24)
        aad = rng.randbytes(size % 17) if size % 2 else None
        sealed = seal(nonce, memoryview(data), aad)
        assert sealed == ref_seal(nonce, data, aad)
        assert open_(nonce, memoryview(sealed), aad) == data
        assert ref_open(nonce, sealed, aad) == data
    # Only the first 16 nonce bytes go into the subkey, the last 8 into the IETF nonce:
    # a change in either part changes the ciphertext.
    data, nonce = b"x" * 100, bytes(24)
    outputs = {seal(nonce, data, None), seal(b"\1" + nonce[1:], data, None),
               seal(nonce[:15] + b"\1" + nonce[16:], data, None),
               seal(nonce[:16] + b"\1" + nonce[17:], data, None),
               seal(nonce[:23] + b"\1", data, None)}
    assert len(outputs) == 5


# NIST's GCM test cases 13-16 (McGrew & Viega, "The Galois/Counter Mode of Operation",
# 256-bit keys): (key, iv, plaintext, aad, ciphertext, tag).
GCM_VECTORS = {
    "13-empty": ("00" * 32, "00" * 12, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
    "14-zero-block": ("00" * 32, "00" * 12, "00" * 16, "", "cea7403d4d606b6e074ec5d3baf39d18",
                      "d0d1c8a799996bf0265b98b5d48ab919"),
    "15-no-aad": (
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        "",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        "b094dac5d93471bdec1a502270e3cc6c"),
    "16-aad": (
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b"),
}


@pytest.mark.parametrize("case", sorted(GCM_VECTORS))
def test_aes_256_gcm_known_answer(case: str) -> None:
    key, iv, plain, aad, ct, tag = (bytes.fromhex(v) for v in GCM_VECTORS[case])
    seal, open_ = aead_functions(AES_256_GCM, key)
    assert seal(iv, plain, aad or None) == ct + tag
    assert open_(iv, ct + tag, aad or None) == plain


# -- the stored layout -------------------------------------------------------------------

@pytest.mark.parametrize(("algorithm", "nonce_size"), [(XCHACHA20_POLY1305, 24),
                                                       (AES_256_GCM, 12)])
@pytest.mark.parametrize("compressed", [True, False])
def test_stored_bytes_are_nonce_then_sealed_compression_layer(algorithm: str, nonce_size: int,
                                                             compressed: bool) -> None:
    """desync's bytes: nonce || AEAD(key, nonce, zstd(chunk) or chunk, no AAD) || tag."""
    chunk_id, data = sample_chunk(1, 5000)
    codec = ChunkCodec(compressed, ChunkCipher(algorithm, KEY))
    stored = codec.encode(data)
    layer = compress(data) if compressed else data
    assert len(stored) == nonce_size + len(layer) + 16
    seal, open_ = aead_functions(algorithm, KEY)
    nonce = stored[:nonce_size]
    assert open_(nonce, stored[nonce_size:], None) == layer
    assert seal(nonce, layer, None) == stored[nonce_size:]
    # Bytes another implementation wrote with its own nonce decode the same.
    foreign_nonce = bytes(range(nonce_size))
    foreign = foreign_nonce + seal(foreign_nonce, layer, None)
    assert codec.decode(foreign, chunk_id) == data
    # A fresh random nonce for every write.
    assert codec.encode(data)[:nonce_size] != nonce


def test_key_id_and_extensions(tmp_path: Path) -> None:
    """The key id is SHA-256(key)[:4] in hex (50d64035 for desync's test key); the
    encryption extension follows the compression one."""
    assert key_id(KEY) == TEST_KEY_ID == "50d64035"
    for name, entry in ENCRYPTION_OPTION_SETS.items():
        loc = str(tmp_path / name)
        store = open_chunk_store(loc, encrypted_context(tmp_path, loc, name))
        assert store.codec.extension == ENCRYPTION_EXTENSIONS[name]
        chunk_id, data = sample_chunk(2)
        store.store_chunk(Chunk(chunk_id, data))
        h = chunk_id.hex()
        assert os.listdir(tmp_path / name / h[:4]) == [h + ENCRYPTION_EXTENSIONS[name]]
        assert entry["encryption"] is True
    other = ChunkCodec(True, ChunkCipher(XCHACHA20_POLY1305, bytes.fromhex(OTHER_ENCRYPTION_KEY)))
    assert other.extension == f".cacnk.xchacha20-poly1305-{key_id(other.cipher.key)}"  # type: ignore[union-attr]
    assert other.extension != ENCRYPTION_EXTENSIONS["xchacha20-poly1305"]


def test_codec_equality_and_plain_codecs() -> None:
    """Same algorithm and key: one codec; plain codecs stay the shared constants (the
    extract fast path only takes those, so encrypted stores never bypass decryption)."""
    assert ChunkCodec.for_options(StoreOptions()) is COMPRESSED
    assert ChunkCodec.for_options(StoreOptions(uncompressed=True)) is UNCOMPRESSED
    a = ChunkCodec.for_options(StoreOptions(encryption=True, encryption_key=TEST_ENCRYPTION_KEY))
    b = ChunkCodec(True, ChunkCipher(XCHACHA20_POLY1305, KEY))
    assert a == b
    assert hash(a) == hash(b)
    assert a not in (COMPRESSED, UNCOMPRESSED)
    assert a != ChunkCodec(True, ChunkCipher(AES_256_GCM, KEY))
    assert TEST_ENCRYPTION_KEY not in repr(a)


def test_chunk_changes_only_the_encryption_layer() -> None:
    """A plain compressed chunk served encrypted (and back) keeps casync's zstd bytes:
    only the encryption layer is applied or removed (desync's commonPrefix)."""
    chunk_id, data = sample_chunk(3, 20000)
    plain = compress(data)
    enc = ChunkCodec(True, ChunkCipher(AES_256_GCM, KEY))
    sealed = Chunk(chunk_id, encoded=plain, codec=COMPRESSED).encoded(enc)
    assert enc.unseal(sealed, chunk_id) == plain
    assert Chunk(chunk_id, encoded=sealed, codec=enc).encoded(COMPRESSED) == plain
    other = ChunkCodec(True, ChunkCipher(XCHACHA20_POLY1305, bytes.fromhex(OTHER_ENCRYPTION_KEY)))
    resealed = Chunk(chunk_id, encoded=sealed, codec=enc).encoded(other)
    assert other.unseal(resealed, chunk_id) == plain
    assert Chunk(chunk_id, encoded=sealed, codec=enc).encoded(UNCOMPRESSED) == data
    out = bytearray(len(data) + 1)
    assert Chunk(chunk_id, encoded=sealed, codec=enc).data_into(memoryview(out)) == len(data)
    assert out[: len(data)] == data


# -- options and their validation ----------------------------------------------------------

def ctx_with(tmp_path: Path, location: str, entry: dict[str, object]) -> Context:
    return encrypted_context(tmp_path, location, entry)


@pytest.mark.parametrize(("entry", "message"), [
    ({"encryption-key": TEST_ENCRYPTION_KEY},
     "encryption-key or encryption-algorithm configured without setting encryption to true"),
    ({"encryption-algorithm": "aes-256-gcm"},
     "encryption-key or encryption-algorithm configured without setting encryption to true"),
    ({"encryption": False, "encryption-key": TEST_ENCRYPTION_KEY},
     "encryption-key or encryption-algorithm configured without setting encryption to true"),
    ({"encryption": True}, "no encryption key configured"),
    ({"encryption": True, "encryption-key": "not-hex"},
     "invalid encryption key, expected hex-encoded 256-bit key"),
    ({"encryption": True, "encryption-key": "abc"},
     "invalid encryption key, expected hex-encoded 256-bit key"),
    ({"encryption": True, "encryption-key": "ab " * 32},
     "invalid encryption key, expected hex-encoded 256-bit key"),
    ({"encryption": True, "encryption-key": TEST_ENCRYPTION_KEY[:62]},
     "encryption key must be 32 bytes, got 31"),
    ({"encryption": True, "encryption-key": TEST_ENCRYPTION_KEY + "00"},
     "encryption key must be 32 bytes, got 33"),
    ({"encryption": True, "encryption-key": TEST_ENCRYPTION_KEY, "encryption-algorithm": "rot13"},
     'unsupported encryption algorithm "rot13"'),
    ({"encryption": True, "encryption-key": TEST_ENCRYPTION_KEY,
      "encryption-algorithm": "AES-256-GCM"}, 'unsupported encryption algorithm "AES-256-GCM"'),
])
def test_validation_messages(tmp_path: Path, entry: dict[str, object], message: str) -> None:
    """desync's rules and messages, as one-line ConfigErrors naming the store."""
    loc = str(tmp_path / "store")
    with pytest.raises(ConfigError) as info:
        ctx_with(tmp_path, loc, entry).open_chunk_store(loc)
    assert str(info.value) == f"store options for {loc!r}: {message}"
    assert info.value.exit_code == 2
    assert TEST_ENCRYPTION_KEY[:16] not in str(info.value)


def test_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$DESYNC_ENCRYPTION_KEY is the key of a store with encryption on and no key; it
    never turns encryption on by itself."""
    monkeypatch.setenv(KEY_ENV, TEST_ENCRYPTION_KEY)
    loc = str(tmp_path / "store")
    plain = Context().open_chunk_store(loc)
    assert plain.codec is COMPRESSED
    store = ctx_with(tmp_path, loc, {"encryption": True}).open_chunk_store(loc)
    assert store.codec.extension == f".cacnk.xchacha20-poly1305-{TEST_KEY_ID}"
    # A configured key beats the environment.
    store = ctx_with(tmp_path, loc, {"encryption": True,
                                     "encryption-key": OTHER_ENCRYPTION_KEY}).open_chunk_store(loc)
    assert TEST_KEY_ID not in store.codec.extension
    monkeypatch.setenv(KEY_ENV, "00")
    with pytest.raises(ConfigError, match="encryption key must be 32 bytes, got 1"):
        ctx_with(tmp_path, loc, {"encryption": True}).open_chunk_store(loc)


def test_index_stores_refuse_encryption(tmp_path: Path) -> None:
    """Indexes are always plain: any encryption setting on an index location is refused
    with desync's message, before the settings are checked."""
    for entry in ({"encryption": True, "encryption-key": TEST_ENCRYPTION_KEY},
                  {"encryption": True}, {"encryption-key": "bad"}):
        ctx = ctx_with(tmp_path, str(tmp_path), entry)
        loc = str(tmp_path / "x.caibx")
        with pytest.raises(ConfigError) as info:
            ctx.index_store_options(loc)
        assert str(info.value) == (f'store options for "{loc}": encryption is not supported '
                                   "by index stores")


def test_encrypted_store_pickles_and_reopens(tmp_path: Path) -> None:
    """A store pickles as location + options; the copy has the same codec and reads."""
    import pickle

    store = aes_store(tmp_path / "s")
    chunk_id, data = sample_chunk(4)
    store.store_chunk(Chunk(chunk_id, data))
    copy = pickle.loads(pickle.dumps(store))
    assert copy.codec == store.codec
    assert bytes(copy.get_chunk(chunk_id).data()) == data


# -- the contract, encrypted ------------------------------------------------------------

class TestEncryptedLocalChunkStore(LocalDirectoryRaw, PrunableChunkStoreContract):
    """The local store passes the whole store contract with each option set."""

    @pytest.fixture(params=sorted(ENCRYPTION_OPTION_SETS))
    def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> LocalChunkStore:
        loc = str(tmp_path / "enc")
        store = open_chunk_store(loc, encrypted_context(tmp_path, loc, request.param))
        assert store.codec.extension == ENCRYPTION_EXTENSIONS[request.param]
        return store  # type: ignore[return-value]


# -- one store, many formats -------------------------------------------------------------

def test_formats_share_a_store_without_seeing_each_other(tmp_path: Path) -> None:
    """Plain, uncompressed and encrypted chunks (two keys, two algorithms) of the same
    ids in one directory: each store lists, prunes and verifies only its own files."""
    base = tmp_path / "mixed"
    stores = {
        "plain": local_store(base),
        "raw": local_store(base, uncompressed=True),
        "xchacha": xchacha_store(base),
        "xchacha-other-key": xchacha_store(base, OTHER_ENCRYPTION_KEY),
        "aes": aes_store(base),
        "aes-raw": aes_store(base, uncompressed=True),
    }
    ids = [sample_chunk(seed)[0] for seed in range(5)]
    for store in stores.values():
        for seed in range(5):
            chunk_id, data = sample_chunk(seed)
            store.store_chunk(Chunk(chunk_id, data))
    files = [p for p in base.rglob("*") if p.is_file()]
    assert len(files) == 5 * len(stores)
    for store in stores.values():
        assert sorted(store.iter_chunk_ids()) == sorted(ids)
        assert verify_store(store, SHA512_256, workers=2) == 0
    # Pruning one format leaves every other format's files alone.
    assert stores["aes"].prune({ids[0]}) == 4
    assert sorted(stores["aes"].iter_chunk_ids()) == [ids[0]]
    for name, store in stores.items():
        if name != "aes":
            assert sorted(store.iter_chunk_ids()) == sorted(ids), name
            for chunk_id in ids:
                assert store.get_chunk(chunk_id).data() == sample_chunk(ids.index(chunk_id))[1]


# -- wrong keys, tampered and truncated files ----------------------------------------------

def stored_file(store: LocalChunkStore, chunk_id: bytes) -> Path:
    return Path(store.chunk_path(chunk_id))


@pytest.mark.parametrize("make_store", [xchacha_store, aes_store])
def test_wrong_key_is_an_integrity_error(tmp_path: Path, make_store) -> None:  # type: ignore[no-untyped-def]
    """A chunk under another key's name (e.g. renamed) never decodes to wrong data."""
    good = make_store(tmp_path / "s")
    wrong = make_store(tmp_path / "s", OTHER_ENCRYPTION_KEY)
    chunk_id, data = sample_chunk(5)
    good.store_chunk(Chunk(chunk_id, data))
    with pytest.raises(ChunkMissingError):  # the other key's store does not see it
        wrong.get_chunk(chunk_id)
    shutil.copy(stored_file(good, chunk_id), stored_file(wrong, chunk_id))
    with pytest.raises(ChunkInvalidError) as info:
        wrong.get_chunk(chunk_id).data()
    assert f"invalid chunk {chunk_id.hex()}: " in str(info.value)
    assert "message authentication failed" in str(info.value)
    assert info.value.exit_code == 5


def test_wrong_algorithm_is_an_integrity_error(tmp_path: Path) -> None:
    x = xchacha_store(tmp_path / "s")
    a = aes_store(tmp_path / "s")
    chunk_id, data = sample_chunk(6)
    x.store_chunk(Chunk(chunk_id, data))
    shutil.copy(stored_file(x, chunk_id), stored_file(a, chunk_id))
    with pytest.raises(ChunkInvalidError, match=chunk_id.hex()):
        a.get_chunk(chunk_id).data()


def test_plain_chunk_under_an_encrypted_name_is_invalid(tmp_path: Path) -> None:
    plain = local_store(tmp_path / "s")
    enc = xchacha_store(tmp_path / "s")
    chunk_id, data = sample_chunk(7)
    plain.store_chunk(Chunk(chunk_id, data))
    shutil.copy(stored_file(plain, chunk_id), stored_file(enc, chunk_id))
    with pytest.raises(ChunkInvalidError, match=chunk_id.hex()):
        enc.get_chunk(chunk_id).data()


@pytest.mark.parametrize("make_store", [xchacha_store, aes_store])
@pytest.mark.parametrize("damage", ["nonce", "ciphertext", "tag", "truncated-tag",
                                    "truncated-to-nonce", "empty", "appended"])
def test_tampered_or_truncated_chunk_is_invalid(tmp_path: Path, make_store, damage: str) -> None:  # type: ignore[no-untyped-def]
    store = make_store(tmp_path / "s")
    chunk_id, data = sample_chunk(8, 4000)
    store.store_chunk(Chunk(chunk_id, data))
    path = stored_file(store, chunk_id)
    raw = bytearray(path.read_bytes())
    n = store.codec.cipher.nonce_size
    if damage == "nonce":
        raw[0] ^= 1
    elif damage == "ciphertext":
        raw[n + 10] ^= 0x80
    elif damage == "tag":
        raw[-1] ^= 1
    elif damage == "truncated-tag":
        raw = raw[:-1]
    elif damage == "truncated-to-nonce":
        raw = raw[:n]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw += b"\0"
    path.write_bytes(bytes(raw))
    with pytest.raises(ChunkInvalidError) as info:
        store.get_chunk(chunk_id).data()
    assert f"invalid chunk {chunk_id.hex()}: " in str(info.value)
    with pytest.raises(ChunkInvalidError):
        store.get_chunk(chunk_id).data_into(memoryview(bytearray(len(data) + 1)))
    # verify reports it (and -r removes it); the chunk is never served.
    import io

    err = io.StringIO()
    assert verify_store(store, SHA512_256, repair=True, err=err) == 0
    assert err.getvalue().startswith(f"invalid chunk {chunk_id.hex()}: ")
    assert err.getvalue().rstrip().endswith(": removed")
    assert not path.exists()


# -- the command line ---------------------------------------------------------------------

@pytest.fixture
def blob(tmp_path: Path) -> Path:
    """3 MiB of compressible, not repetitive data (a few dozen chunks)."""
    import hashlib

    path = tmp_path / "blob"
    with path.open("wb") as f:
        for i in range(3 * 1024 * 1024 // 32):
            f.write(hashlib.sha256(i.to_bytes(8, "little")).hexdigest()[:32].encode())
    return path


@pytest.mark.parametrize("option_set", sorted(ENCRYPTION_OPTION_SETS))
def test_make_extract_verify_prune_encrypted(tmp_path: Path, blob: Path, option_set: str,
                                            ok, cli) -> None:  # type: ignore[no-untyped-def]
    """make writes only encrypted files; extract reproduces the blob; verify and prune
    act on them; chunks of a plain store in the same directory are left alone."""
    store = tmp_path / "store"
    config = write_store_options(tmp_path / "config.json",
                                 {str(store): ENCRYPTION_OPTION_SETS[option_set]})
    c = ["--config", str(config)]
    index = tmp_path / "blob.caibx"
    ok(*c, "make", "-s", store, index, blob)
    files = [p for p in store.rglob("*") if p.is_file()]
    assert files
    assert all(p.name.endswith(ENCRYPTION_EXTENSIONS[option_set]) for p in files)
    out = tmp_path / "out"
    ok(*c, "extract", "-s", store, index, out)
    assert out.read_bytes() == blob.read_bytes()
    # A plain make of other data into the same directory; prune of the encrypted
    # format keeps the plain files.
    other = tmp_path / "other"
    other.write_bytes(os.urandom(300_000))
    ok("make", "-s", store, tmp_path / "other.caibx", other)
    plain_files = {p for p in store.rglob("*.cacnk") if p.is_file()}
    assert plain_files
    assert ok(*c, "verify", "-s", store).err == ""
    ok(*c, "prune", "-y", "-s", store, tmp_path / "other.caibx")
    assert not [p for p in store.rglob("*") if p.name.endswith(ENCRYPTION_EXTENSIONS[option_set])]
    assert {p for p in store.rglob("*.cacnk") if p.is_file()} == plain_files
    ok("extract", "-s", store, tmp_path / "other.caibx", tmp_path / "other.out")
    assert (tmp_path / "other.out").read_bytes() == other.read_bytes()


def test_extract_tampered_encrypted_chunk_fails_with_exit_5(tmp_path: Path, blob: Path, ok,
                                                            cli) -> None:  # type: ignore[no-untyped-def]
    """A tampered chunk is an integrity error naming the chunk; no output appears."""
    store = tmp_path / "store"
    config = write_store_options(tmp_path / "config.json",
                                 {str(store): ENCRYPTION_OPTION_SETS["aes-256-gcm"]})
    c = ["--config", str(config)]
    index = tmp_path / "blob.caibx"
    ok(*c, "make", "-s", store, index, blob)
    victim = sorted(p for p in store.rglob("*") if p.is_file())[3]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    chunk_hex = victim.name.split(".")[0]
    out = tmp_path / "out"
    result = cli(*c, "extract", "-s", store, index, out)
    line = assert_one_line_error(result, 5, f"invalid chunk {chunk_hex}",
                                 "message authentication failed")
    assert TEST_ENCRYPTION_KEY not in line
    assert not out.exists()
    result = cli(*c, "cat", "-s", store, index, tmp_path / "cat.out")
    assert_one_line_error(result, 5, f"invalid chunk {chunk_hex}")
    result = cli(*c, "verify", "-s", store)
    assert result.code == 5
    assert result.err.splitlines()[0].startswith(f"invalid chunk {chunk_hex}: ")


def test_extract_with_wrong_key_finds_no_chunks(tmp_path: Path, blob: Path, ok, cli) -> None:  # type: ignore[no-untyped-def]
    """Another key means another extension: the chunks are missing, never wrong."""
    store = tmp_path / "store"
    good = write_store_options(tmp_path / "good.json",
                               {str(store): ENCRYPTION_OPTION_SETS["xchacha20-poly1305"]})
    bad = write_store_options(tmp_path / "bad.json", {str(store): {
        "encryption": True, "encryption-key": OTHER_ENCRYPTION_KEY}})
    index = tmp_path / "blob.caibx"
    ok("--config", str(good), "make", "-s", store, index, blob)
    result = cli("--config", str(bad), "extract", "-s", store, index, tmp_path / "out")
    assert_one_line_error(result, 4, "missing from store")
    assert not (tmp_path / "out").exists()


def test_cli_config_errors_are_one_line(tmp_path: Path, blob: Path, cli) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    config = write_store_options(tmp_path / "c.json", {str(store): {"encryption": True}})
    result = cli("--config", str(config), "make", "-s", store, tmp_path / "i.caibx", blob)
    assert_one_line_error(result, 2, "no encryption key configured")
    config = write_store_options(tmp_path / "c.json", {str(store): {"encryption-key": "00"}})
    result = cli("--config", str(config), "make", "-s", store, tmp_path / "i.caibx", blob)
    assert_one_line_error(result, 2, "without setting encryption to true")
    assert not store.exists()


def test_key_from_environment_on_the_command_line(tmp_path: Path, blob: Path) -> None:
    """A real run: the key comes from $DESYNC_ENCRYPTION_KEY, never printed."""
    from desync_core.testing.fixtures import run_desync

    store = tmp_path / "store"
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"store-options": {str(store): {
        "encryption": True, "encryption-algorithm": "aes-256-gcm"}}}))
    env = {KEY_ENV: TEST_ENCRYPTION_KEY}
    index = tmp_path / "blob.caibx"
    run_desync("--config", config, "make", "-s", store, index, blob, env=env)
    assert all(p.name.endswith(f".cacnk.aes-256-gcm-{TEST_KEY_ID}")
               for p in store.rglob("*") if p.is_file())
    run_desync("--config", config, "extract", "-s", store, index, tmp_path / "out", env=env)
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    proc = run_desync("--config", config, "extract", "-s", store, index, tmp_path / "o2",
                      check=False, env={KEY_ENV: ""})
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().endswith("no encryption key configured")


def test_cipher_libraries_load_only_for_encrypted_stores(tmp_path: Path) -> None:
    """Plain stores never import PyNaCl or cryptography."""
    code = (
        "import sys\n"
        "from desync_core.context import Context\n"
        "from desync_core.stores.chunk import Chunk\n"
        f"s = Context().open_chunk_store({str(tmp_path / 's')!r})\n"
        "s.store_chunk(Chunk(b'\\0' * 32, b'x'))\n"
        "bad = [m for m in ('nacl', 'cryptography') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
