"""Chunk encryption at rest, in desync's format (``store.md`` §2, §2.1, §5.1).

A store with ``encryption: true`` adds an AEAD layer after compression:

* stored bytes = ``nonce || AEAD-Seal(key, nonce, compressed-or-plain chunk, aad=none)``
  (the 16-byte tag is at the end); a fresh random nonce for every write, 24 bytes for
  XChaCha20-Poly1305, 12 bytes for AES-256-GCM;
* the chunk file extension gains ``.<algorithm>-<key id>``, the key id being the first
  4 bytes of SHA-256 of the raw 32-byte key in hex, so chunks under different keys or
  algorithms (and plain ones) share a store without seeing each other.

The ciphers come from well-kept libraries, imported only when a store encrypts:
``cryptography`` (OpenSSL) for AES-256-GCM; for XChaCha20-Poly1305, libsodium's
HChaCha20 (from PyNaCl) then OpenSSL's ChaCha20-Poly1305 (from ``cryptography``), which
is how XChaCha20-Poly1305 is defined and several times faster than PyNaCl's binding of
libsodium's AEAD (the fallback, when the first is not available).
A chunk that fails to decrypt (wrong key, tampered or truncated file) is a
:class:`~desync_core.errors.ChunkInvalidError` naming the chunk.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from desync_core.errors import ChunkInvalidError, ConfigError

if TYPE_CHECKING:
    from desync_core.stores.options import StoreOptions

XCHACHA20_POLY1305 = "xchacha20-poly1305"
AES_256_GCM = "aes-256-gcm"
DEFAULT_ALGORITHM = XCHACHA20_POLY1305
#: Nonce size in bytes of each supported algorithm (the nonce is stored in front).
NONCE_SIZES = {XCHACHA20_POLY1305: 24, AES_256_GCM: 12}
ALGORITHMS = tuple(NONCE_SIZES)
KEY_SIZE = 32
TAG_SIZE = 16
#: Key used when a store has ``encryption: true`` but no ``encryption-key``; it never
#: turns encryption on by itself.
KEY_ENV = "DESYNC_ENCRYPTION_KEY"

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")

Buffer = bytes | bytearray | memoryview
#: ``(nonce, data, aad) -> ciphertext || tag`` and ``(nonce, ciphertext || tag, aad) ->
#: data`` of one algorithm and key.
SealFunction = Callable[[bytes, Buffer, bytes | None], bytes]
OpenFunction = Callable[[bytes, Buffer, bytes | None], bytes]


class DecryptionError(ValueError):
    """AEAD authentication failed: wrong key or algorithm, or modified data."""


def parse_key(hex_key: str) -> bytes:
    """The raw key of a hex-encoded 256-bit key (as ``openssl rand -hex 32`` prints).

    Raises:
        ConfigError: not hex, or not 32 bytes (the key itself is never in the message).
    """
    if not _HEX.fullmatch(hex_key):
        raise ConfigError("invalid encryption key, expected hex-encoded 256-bit key")
    key = bytes.fromhex(hex_key)
    if len(key) != KEY_SIZE:
        raise ConfigError(f"encryption key must be {KEY_SIZE} bytes, got {len(key)}")
    return key


def key_id(key: bytes) -> str:
    """The key's id in file extensions: first 4 bytes of SHA-256(key), lower-case hex."""
    return hashlib.sha256(key).digest()[:4].hex()


def check_algorithm(algorithm: str) -> str:
    """The algorithm's canonical name ("" means the default).

    Raises:
        ConfigError: ``unsupported encryption algorithm "<x>"``.
    """
    if algorithm == "":
        return DEFAULT_ALGORITHM
    if algorithm not in NONCE_SIZES:
        raise ConfigError(f'unsupported encryption algorithm "{algorithm}"')
    return algorithm


def encryption_configured(encryption: bool, key: str, algorithm: str) -> bool:
    """Whether any encryption setting is given (valid or not)."""
    return bool(encryption or key or algorithm)


def resolve_settings(encryption: bool, key: str, algorithm: str) -> tuple[str, bytes] | None:
    """Validate encryption settings the way desync does; ``(algorithm, raw key)`` or
    None when encryption is off.

    The key falls back to ``$DESYNC_ENCRYPTION_KEY`` when encryption is on and no key
    is given. Checks, in desync's order: key or algorithm without encryption, no key,
    bad hex, unknown algorithm, wrong key length.

    Raises:
        ConfigError: with desync's message (never containing the key).
    """
    if not encryption:
        if key or algorithm:
            # Silently writing plaintext chunks is the one failure this must not have.
            raise ConfigError("encryption-key or encryption-algorithm configured without "
                              "setting encryption to true")
        return None
    key = key or os.environ.get(KEY_ENV, "")
    if not key:
        raise ConfigError("no encryption key configured")
    if not _HEX.fullmatch(key):
        raise ConfigError("invalid encryption key, expected hex-encoded 256-bit key")
    algorithm = check_algorithm(algorithm)
    return algorithm, parse_key(key)


def cipher_for_options(options: StoreOptions) -> ChunkCipher | None:
    """The encryption layer of a store's options, or None when it does not encrypt.

    Raises:
        ConfigError: invalid settings (see :func:`resolve_settings`), or the library
            for the algorithm is not installed.
    """
    settings = resolve_settings(options.encryption, options.encryption_key,
                                options.encryption_algorithm)
    return None if settings is None else ChunkCipher(*settings)


def aead_functions(algorithm: str, key: bytes) -> tuple[SealFunction, OpenFunction]:
    """The library's seal and open functions of ``algorithm`` under ``key``.

    Open raises :class:`DecryptionError` when authentication fails. The libraries are
    imported here, so only stores that encrypt load them.

    Raises:
        ConfigError: the library is not installed.
    """
    if algorithm == AES_256_GCM:
        try:
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:  # a core dependency; only a broken install lacks it
            raise ConfigError("aes-256-gcm encryption needs the 'cryptography' package "
                              "(pip install cryptography)") from exc
        aes = AESGCM(key)

        def aes_open(nonce: bytes, sealed: Buffer, aad: bytes | None) -> bytes:
            try:
                return aes.decrypt(nonce, sealed, aad)
            except InvalidTag:
                raise DecryptionError("message authentication failed") from None

        return aes.encrypt, aes_open
    if algorithm == XCHACHA20_POLY1305:
        fast = _xchacha_from_subkeys(key)
        return fast if fast is not None else _xchacha_from_pynacl(key)
    raise ConfigError(f'unsupported encryption algorithm "{algorithm}"')


def xchacha_implementation() -> str:
    """Which libraries seal XChaCha20-Poly1305 in this process (benchmarks print it)."""
    if _hchacha20() is not None and _openssl_chacha20_poly1305() is not None:
        return "libsodium HChaCha20 + OpenSSL ChaCha20-Poly1305"
    return "libsodium XChaCha20-Poly1305 (PyNaCl)"


def _as_bytes(data: Buffer) -> bytes:
    return data if type(data) is bytes else bytes(data)


#: The IETF ChaCha20-Poly1305 nonce of an XChaCha20-Poly1305 nonce ``n`` is these four
#: zero bytes then ``n[16:24]`` (draft-irtf-cfrg-xchacha-03 §2.3).
_IETF_NONCE_PREFIX = b"\0\0\0\0"
#: draft-irtf-cfrg-xchacha-03 §2.2.1: (key, 16-byte input, subkey) of HChaCha20.
_HCHACHA20_VECTOR = (bytes(range(32)), bytes.fromhex("000000090000004a0000000031415927"),
                     bytes.fromhex("82413b4227b27bfed30e42508a877d73"
                                   "a0f9e4d58a74a853c12ec41326d3ecdc"))


@functools.cache
def _hchacha20() -> Callable[[bytes, bytes], bytes] | None:
    """libsodium's ``crypto_core_hchacha20`` as ``(key, nonce[:16]) -> subkey``, or None.

    PyNaCl's bindings do not wrap it, but its extension module exports the whole
    libsodium API (bundled, or linked to the system's), so it is called through ctypes.
    The function is checked against the draft's vector once before it is used.
    """
    try:
        import ctypes

        import nacl.bindings  # noqa: F401  # (initialises libsodium)
        from nacl import _sodium

        function = ctypes.CDLL(_sodium.__file__).crypto_core_hchacha20
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    # (out, in, key, constants or NULL for the standard ones) -> 0
    function.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
    function.restype = ctypes.c_int
    new_buffer = ctypes.create_string_buffer

    def hchacha20(key: bytes, nonce16: bytes) -> bytes:
        out = new_buffer(32)
        function(out, nonce16, key, None)
        return out.raw

    key, nonce16, subkey = _HCHACHA20_VECTOR
    return hchacha20 if hchacha20(key, nonce16) == subkey else None


@functools.cache
def _openssl_chacha20_poly1305() -> Any:
    """``cryptography``'s ChaCha20Poly1305 class, or None (not installed, or an OpenSSL
    without ChaCha20, as in FIPS mode)."""
    try:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    except ImportError:
        return None
    try:
        ChaCha20Poly1305(bytes(32))
    except UnsupportedAlgorithm:
        return None
    return ChaCha20Poly1305


def _xchacha_from_subkeys(key: bytes) -> tuple[SealFunction, OpenFunction] | None:
    """XChaCha20-Poly1305 (IETF) as its definition composes it: the HChaCha20 subkey of
    the key and the nonce's first 16 bytes (libsodium), then ChaCha20-Poly1305 (IETF)
    under that subkey with the nonce ``0000 || nonce[16:24]`` (OpenSSL, through
    ``cryptography``). The same bytes as libsodium's own XChaCha20-Poly1305, about four
    times faster and with fewer copies (PyNaCl copies every input and output twice).
    None when either piece is missing (the PyNaCl path is used then).
    """
    hchacha20 = _hchacha20()
    chacha20_poly1305 = _openssl_chacha20_poly1305()
    if hchacha20 is None or chacha20_poly1305 is None:
        return None
    from cryptography.exceptions import InvalidTag

    prefix = _IETF_NONCE_PREFIX

    def xchacha_seal(nonce: bytes, data: Buffer, aad: bytes | None) -> bytes:
        aead = chacha20_poly1305(hchacha20(key, nonce[:16]))
        return aead.encrypt(prefix + nonce[16:], data, aad)

    def xchacha_open(nonce: bytes, sealed: Buffer, aad: bytes | None) -> bytes:
        aead = chacha20_poly1305(hchacha20(key, nonce[:16]))
        try:
            return aead.decrypt(prefix + nonce[16:], sealed, aad)
        except InvalidTag:
            raise DecryptionError("message authentication failed") from None

    return xchacha_seal, xchacha_open


def _xchacha_from_pynacl(key: bytes) -> tuple[SealFunction, OpenFunction]:
    """XChaCha20-Poly1305 through PyNaCl's binding of libsodium's AEAD (the fallback).

    Raises:
        ConfigError: PyNaCl is not installed.
    """
    try:
        from nacl.bindings import (
            crypto_aead_xchacha20poly1305_ietf_decrypt,
            crypto_aead_xchacha20poly1305_ietf_encrypt,
        )
        from nacl.exceptions import CryptoError
    except ImportError as exc:
        raise ConfigError("xchacha20-poly1305 encryption needs the 'PyNaCl' package "
                          "(pip install pynacl)") from exc

    def xchacha_seal(nonce: bytes, data: Buffer, aad: bytes | None) -> bytes:
        # PyNaCl takes bytes only.
        return crypto_aead_xchacha20poly1305_ietf_encrypt(_as_bytes(data), aad, nonce, key)

    def xchacha_open(nonce: bytes, sealed: Buffer, aad: bytes | None) -> bytes:
        try:
            return crypto_aead_xchacha20poly1305_ietf_decrypt(_as_bytes(sealed), aad,
                                                              nonce, key)
        except CryptoError:
            raise DecryptionError("message authentication failed") from None

    return xchacha_seal, xchacha_open


class ChunkCipher:
    """The encryption layer of a store: one algorithm and key.

    Equal ciphers (same algorithm and key) read each other's chunks. The key never
    appears in ``repr``; a cipher pickles as its algorithm and key (worker processes
    rebuild the library objects).

    Args:
        algorithm: ``xchacha20-poly1305`` or ``aes-256-gcm``.
        key: the raw 32-byte key.

    Raises:
        ConfigError: unknown algorithm, wrong key size or missing library.
    """

    __slots__ = ("_open", "_seal", "algorithm", "extension", "key", "key_id", "nonce_size")

    def __init__(self, algorithm: str, key: bytes) -> None:
        algorithm = check_algorithm(algorithm)
        if len(key) != KEY_SIZE:
            raise ConfigError(f"encryption key must be {KEY_SIZE} bytes, got {len(key)}")
        self.algorithm = algorithm
        self.key = bytes(key)
        self.nonce_size = NONCE_SIZES[algorithm]
        self.key_id = key_id(self.key)
        #: Appended to the compression layer's extension (``.cacnk`` or nothing).
        self.extension = f".{algorithm}-{self.key_id}"
        self._seal, self._open = aead_functions(algorithm, self.key)

    def seal(self, data: Buffer) -> bytes:
        """Encrypt for storage: a random nonce, then the ciphertext and tag."""
        nonce = os.urandom(self.nonce_size)
        return nonce + self._seal(nonce, data, None)

    def open(self, stored: Buffer, chunk_id: bytes) -> bytes:
        """Decrypt stored bytes (the nonce is taken from their start).

        Raises:
            ChunkInvalidError: too short, or authentication failed (wrong key or
                algorithm, tampered or truncated data).
        """
        n = self.nonce_size
        if len(stored) < n + TAG_SIZE:
            raise ChunkInvalidError(chunk_id, cause=(
                f"{self.algorithm}: {len(stored)} bytes are too short for an encrypted "
                "chunk (not encrypted, wrong algorithm or truncated)"))
        view = memoryview(stored)
        try:
            return self._open(bytes(view[:n]), view[n:], None)
        except DecryptionError as exc:
            raise ChunkInvalidError(chunk_id, cause=(
                f"{self.algorithm}: {exc} (wrong key or algorithm, or the chunk was "
                "modified)")) from None

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ChunkCipher) and other.algorithm == self.algorithm
                and other.key == self.key)

    def __hash__(self) -> int:
        return hash((self.algorithm, self.key))

    def __reduce__(self) -> tuple[Any, ...]:
        return (ChunkCipher, (self.algorithm, self.key))

    def __repr__(self) -> str:
        return f"ChunkCipher({self.algorithm!r}, key id {self.key_id})"


__all__ = [
    "AES_256_GCM",
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "KEY_ENV",
    "KEY_SIZE",
    "NONCE_SIZES",
    "TAG_SIZE",
    "XCHACHA20_POLY1305",
    "ChunkCipher",
    "DecryptionError",
    "aead_functions",
    "check_algorithm",
    "cipher_for_options",
    "encryption_configured",
    "key_id",
    "parse_key",
    "resolve_settings",
    "xchacha_implementation",
]
