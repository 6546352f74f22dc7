"""Device keys at rest: AES-256-GCM under a gateway key file (ARCHITECTURE.md §3.5).

Owns the key file ``<data_dir>/keystore.key`` (32 random bytes, mode 0600, created
only by :func:`create_key`) and the text form of an encrypted key column:
``enc1:<base64(nonce ‖ ciphertext ‖ tag)>``. It does not own which columns are
encrypted (the registry does) nor reading rows.

Migration: a column may hold plain hex (written before the key file existed, or by
code that does not encrypt). :meth:`KeyStore.decrypt_hex` accepts both, so readers
work across the migration; ``edgegw device rekey`` encrypts the remaining plain rows.
Without a key file, :func:`open_key` returns a store that passes plain hex through
and refuses encrypted text with a clear error.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import StorageError

KEY_FILENAME = "keystore.key"
PREFIX = "enc1:"
_KEY_BYTES = 32
_NONCE_BYTES = 12  # the GCM nonce size NIST SP 800-38D recommends; random per value
_AAD = b"edgegw-device-key-v1"


def key_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / KEY_FILENAME


class KeyStore:
    """Encrypts and decrypts hex key columns; ``enabled`` is False without a key file."""

    def __init__(self, key: bytes | None, path: Path) -> None:
        if key is not None and len(key) != _KEY_BYTES:
            raise StorageError(f"{path}: key file must hold {_KEY_BYTES} bytes, found {len(key)}")
        self._aead = AESGCM(key) if key is not None else None
        self.path = path

    @property
    def enabled(self) -> bool:
        return self._key() is not None

    def _key(self) -> AESGCM | None:
        """The cipher; without one, a key file created since (`edgegw device rekey` on a running
        gateway creates it) is read now. A key file is never replaced once created (``create_key``),
        so only its appearance needs watching, with one ``stat`` while there is none."""
        if self._aead is None and self.path.exists():
            try:
                key = self.path.read_bytes()
            except OSError as exc:
                raise StorageError(f"cannot read key file {self.path}: {exc}") from exc
            if len(key) == _KEY_BYTES:  # a file being written by create_key: read it next time
                self._aead = AESGCM(key)
        return self._aead

    def encrypt_hex(self, hex_text: str) -> str:
        """Encrypt a hex key for storage; plain hex is returned when no key file exists."""
        aead = self._key()
        if aead is None:
            return hex_text
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = aead.encrypt(nonce, bytes.fromhex(hex_text), _AAD)
        return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt_hex(self, text: str) -> str:
        """The key as lowercase hex, whether ``text`` is encrypted or (legacy) plain hex."""
        if not text.startswith(PREFIX):
            return text
        aead = self._key()
        if aead is None:
            raise StorageError(
                f"a device key is encrypted but the key file {self.path} is missing "
                "(restore it from backup: without it the keys cannot be read)"
            )
        try:
            raw = base64.b64decode(text[len(PREFIX) :], validate=True)
            plain = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise StorageError(
                f"a device key does not decrypt with {self.path} (wrong key file or damaged row)"
            ) from exc
        return plain.hex()

    @staticmethod
    def is_encrypted(text: str) -> bool:
        return text.startswith(PREFIX)


def open_key(data_dir: str | os.PathLike[str]) -> KeyStore:
    """The gateway's key store; never creates the key file (readers call this)."""
    path = key_path(data_dir)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        return KeyStore(None, path)
    except OSError as exc:
        raise StorageError(f"cannot read key file {path}: {exc}") from exc
    return KeyStore(key, path)


def create_key(data_dir: str | os.PathLike[str]) -> KeyStore:
    """Open the key store, creating the key file (32 CSPRNG bytes, mode 0600) if absent."""
    path = key_path(data_dir)
    if path.exists():
        return open_key(data_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two installers racing never end up with two different keys.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, secrets.token_bytes(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot create key file {path}: {exc}") from exc
    return open_key(data_dir)
