"""The platform's side of an agent update's transfer, pure: the ``update_agent`` parameters and the chunks.

Owns the wire contract of a package in transit (docs/fleet.md "Agent updates"): the command announces
``version``, ``sha256`` and ``size_bytes``; the package follows as raw chunks on
``<prefix>/<id>/update/<sha256>/<index>/<count>``, ``index`` from 0 to ``count - 1``, each at most
``MAX_CHUNK_BYTES``, at most ``MAX_CHUNKS`` of them. The gateway's reassembly (``gateway.app.updates``)
holds the same bounds; what a package must contain to be installed is ``gateway.fleet.updates``'s.
No MQTT, no signing: ``edgegw fleet update publish`` does those.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from typing import Any

from gateway.fleet.updates import INIT_VERSION, MAX_PACKAGE_BYTES

MAX_CHUNK_BYTES = 1024 * 1024
"""A chunk's payload at most (the gateway refuses a larger one in its MQTT network thread)."""
MAX_CHUNKS = 4096
"""Chunks of one package at most (the gateway refuses an index or count beyond)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    topic: str
    payload: bytes


def package_version(package: bytes) -> str | None:
    """The ``__version__`` of the ``gateway`` package inside a wheel; None when it is not an edgegw wheel."""
    try:
        with zipfile.ZipFile(io.BytesIO(package)) as archive:
            init = archive.read("gateway/__init__.py").decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError):
        return None
    found = INIT_VERSION.search(init)
    return found.group(1) if found else None


def announce_params(version: str, package: bytes) -> dict[str, Any]:
    """The ``update_agent`` command's parameters: the signature over them authenticates the package."""
    if not package or len(package) > MAX_PACKAGE_BYTES:
        raise ValueError(f"a package is 1 to {MAX_PACKAGE_BYTES} bytes, this one {len(package)}")
    return {"version": version, "sha256": hashlib.sha256(package).hexdigest(), "size_bytes": len(package)}


def chunk_topic(root: str, sha256: str, index: int, count: int) -> str:
    """Where chunk ``index`` (0-based) of ``count`` goes; ``root`` is ``<prefix>/<gateway id>``."""
    return f"{root}/update/{sha256}/{index}/{count}"


def longest_chunk_topic(root: str, sha256: str) -> str:
    """A chunk topic as long as any can be: what sizes the largest chunk a broker takes."""
    return chunk_topic(root, sha256, MAX_CHUNKS - 1, MAX_CHUNKS)


def chunks(root: str, package: bytes, chunk_bytes: int) -> list[Chunk]:
    """The package cut into chunks of ``chunk_bytes`` at most, on ``<root>/update/<sha256>/<index>/<count>``.

    ``root`` is ``<prefix>/<gateway id>``. Indexes start at 0 (the gateway's reassembly joins 0..count-1).
    """
    if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"a chunk is 1 to {MAX_CHUNK_BYTES} bytes, not {chunk_bytes}")
    sha = hashlib.sha256(package).hexdigest()
    count = max(1, -(-len(package) // chunk_bytes))
    if count > MAX_CHUNKS:
        raise ValueError(f"{count} chunks of {chunk_bytes} bytes: at most {MAX_CHUNKS}, take larger chunks")
    return [
        Chunk(chunk_topic(root, sha, i, count), package[i * chunk_bytes : (i + 1) * chunk_bytes])
        for i in range(count)
    ]
