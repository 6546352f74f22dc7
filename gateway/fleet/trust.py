"""What this gateway trusts from the platform: pinned Ed25519 keys and the last sequence number.

Owns two files under the data directory: ``platform-ed25519.pub`` (pinned at provisioning
by ``gateway.provisioning.gateway_setup.pin_platform_key``, read only here) and
``fleet-trust.json`` (written here, atomically and fsynced)::

    {"v": 1, "last_seq": 1732561234000000,
     "keys": ["-----BEGIN PUBLIC KEY-----..."],   # added by signed add_platform_key commands
     "retired": ["<sha256 hex>"]}                  # removed by signed retire_platform_key commands

The last accepted ``seq`` is written before a command runs, so a replay is refused after
a restart too. Key rotation: a command signed by a trusted key adds the next key; once
the platform signs with the new key, it retires the old one; the last key cannot be
retired (the gateway would be unreachable for good). It does not own the envelope
checks (``gateway.fleet.signed_envelope``) nor the command allow-list (``gateway.fleet.commands``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.errors import StorageError
from gateway.fleet import signed_envelope
from gateway.fleet.signed_envelope import Envelope, Rejection, reject
from gateway.fsutil import write_atomic

log = logging.getLogger(__name__)

PINNED_KEY_FILE = "platform-ed25519.pub"  # the name gateway_setup.PLATFORM_KEY_FILE writes
TRUST_FILE = "fleet-trust.json"


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex (what ``edgegw provision gateway`` prints)."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    return digest.finalize().hex()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; ``ValueError`` otherwise."""
    try:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except UnsupportedAlgorithm as exc:  # a well-formed key of an unknown type or curve
        raise ValueError(f"not an Ed25519 public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class Trust:
    """Pinned keys + last accepted seq of one gateway, persisted under ``data_dir``."""

    def __init__(self, data_dir: Path, *, gateway_id: str, groups: Iterable[str] = ()) -> None:
        self.data_dir = data_dir
        self.gateway_id = gateway_id
        self.groups = frozenset(groups)
        self._path = data_dir / TRUST_FILE
        self.last_seq = 0
        self._added: list[Ed25519PublicKey] = []
        self._retired: set[str] = set()
        self._pinned: Ed25519PublicKey | None = None
        self._pinned_stat: tuple[int, int, int] | None = None
        self._load()

    def _load(self) -> None:
        pinned_path = self.data_dir / PINNED_KEY_FILE
        try:
            self._pinned_stat = _stat(pinned_path)
            self._pinned = load_public_key(pinned_path.read_bytes())
        except FileNotFoundError:
            log.warning("no platform key pinned (%s): every platform command will be refused", pinned_path)
        except (OSError, ValueError) as exc:
            raise StorageError(f"{pinned_path}: cannot read the pinned platform key: {exc}") from exc
        try:
            doc: Any = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # Failing closed: with the last seq unknown, still-valid old commands could be replayed.
            raise StorageError(
                f"{self._path} is unreadable ({exc}); move it away to start over "
                "(commands signed in the last minutes could then be replayed once)"
            ) from exc
        try:
            self.last_seq = int(doc["last_seq"])
            self._added = [load_public_key(pem) for pem in doc.get("keys", [])]
            self._retired = {str(fp) for fp in doc.get("retired", [])}
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"{self._path}: not a trust file ({exc})") from exc

    def _save(self) -> None:
        doc = {
            "v": 1,
            "last_seq": self.last_seq,
            "keys": [_pem(key) for key in self._added],
            "retired": sorted(self._retired),
        }
        try:
            write_atomic(self._path, json.dumps(doc, indent=1).encode() + b"\n")
        except OSError as exc:
            raise StorageError(f"cannot write {self._path}: {exc}") from exc

    def _refresh_pinned(self) -> None:
        """Read the pinned key again when its file changed: `edgegw provision gateway --platform-key`
        on a running gateway takes effect at the next command, without a restart. A file that became
        unreadable or invalid keeps the key read before (fail closed: never fewer checks)."""
        path = self.data_dir / PINNED_KEY_FILE
        try:
            stat = _stat(path)
        except OSError:
            return  # removed: the key read before stays until a restart (a removal is not a rotation)
        if stat == self._pinned_stat:
            return
        self._pinned_stat = stat
        try:
            key = load_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("%s changed but cannot be read (%s): keeping the key pinned before", path, exc)
            return
        if self._pinned is None or fingerprint(key) != fingerprint(self._pinned):
            log.warning("platform key pinned from %s: %s", path, fingerprint(key))
        self._pinned = key

    @property
    def keys(self) -> list[Ed25519PublicKey]:
        """The trusted keys: the pinned one and those added since, minus the retired ones."""
        self._refresh_pinned()
        candidates = ([self._pinned] if self._pinned is not None else []) + self._added
        return [key for key in candidates if fingerprint(key) not in self._retired]

    def fingerprints(self) -> list[str]:
        return [fingerprint(key) for key in self.keys]

    def verify(self, data: bytes, now_s: float) -> Envelope:
        """Parse and check an envelope (``CommandRejected`` otherwise); does not consume its seq."""
        env = signed_envelope.parse(data)
        self.check(env, now_s)
        return env

    def check(self, env: Envelope, now_s: float) -> None:
        """Check a parsed envelope against the trusted keys, our address and the last seq."""
        signed_envelope.check(
            env,
            self.keys,
            gateway_id=self.gateway_id,
            groups=self.groups,
            now_s=now_s,
            last_seq=self.last_seq,
        )

    def consume(self, env: Envelope) -> None:
        """Record ``env.seq`` as the last accepted, durably, before its command runs."""
        if env.seq <= self.last_seq:
            raise reject(Rejection.REPLAYED, f"seq {env.seq} is not above the last accepted {self.last_seq}")
        previous, self.last_seq = self.last_seq, env.seq
        try:
            self._save()
        except StorageError:
            self.last_seq = previous
            raise

    def add_key(self, pem: str) -> str:
        """Trust one more platform key (from a signed command); returns its fingerprint."""
        key = load_public_key(pem)
        fp = fingerprint(key)
        if fp in self.fingerprints():
            return fp
        self._added.append(key)
        self._retired.discard(fp)
        self._save()
        log.warning("platform key %s added by a signed command", fp)
        return fp

    def retire_key(self, fp: str) -> None:
        """Stop trusting the key with fingerprint ``fp``; refuses the last trusted key."""
        trusted = self.fingerprints()
        if fp not in trusted:
            raise ValueError(f"no trusted platform key has fingerprint {fp}")
        if len(trusted) == 1:
            raise ValueError("refusing to retire the last trusted platform key")
        self._retired.add(fp)
        self._added = [key for key in self._added if fingerprint(key) != fp]
        self._save()
        log.warning("platform key %s retired by a signed command", fp)
