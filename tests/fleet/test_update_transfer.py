"""The platform side of an agent package in transit (gateway.fleet.update_transfer): the chunks the
gateway's reassembly expects (indexes from 0, bounded), the announced parameters, the wheel's version."""

from __future__ import annotations

import hashlib

import pytest

from gateway.app import updates as app_updates
from gateway.fleet import update_transfer
from tests.fleet.test_updates import wheel

ROOT = "edgegw/gw-17"


def test_chunks_are_0_based_cover_the_package_and_name_its_hash() -> None:
    package = bytes(range(256)) * 40  # 10,240 bytes
    parts = update_transfer.chunks(ROOT, package, 4096)
    sha = hashlib.sha256(package).hexdigest()
    assert [p.topic for p in parts] == [f"{ROOT}/update/{sha}/{i}/3" for i in range(3)]
    assert [len(p.payload) for p in parts] == [4096, 4096, 2048]
    assert b"".join(p.payload for p in parts) == package


def test_chunk_bounds_are_the_gateways() -> None:
    # The gateway's reassembly (gateway.app.updates) refuses beyond these: the two must agree.
    assert update_transfer.MAX_CHUNK_BYTES == app_updates.MAX_CHUNK_BYTES
    assert update_transfer.MAX_CHUNKS == app_updates.MAX_CHUNKS
    with pytest.raises(ValueError, match="at most 4096"):
        update_transfer.chunks(ROOT, bytes(4097), 1)
    with pytest.raises(ValueError, match="1 to 1048576"):
        update_transfer.chunks(ROOT, b"x", update_transfer.MAX_CHUNK_BYTES + 1)
    longest = update_transfer.longest_chunk_topic(ROOT, "0" * 64)
    assert all(len(p.topic) <= len(longest) for p in update_transfer.chunks(ROOT, bytes(4096), 1))


def test_announce_params_and_package_version() -> None:
    data = wheel("9.1.0")
    assert update_transfer.package_version(data) == "9.1.0"
    assert update_transfer.package_version(b"not a zip") is None
    params = update_transfer.announce_params("9.1.0", data)
    assert params == {"version": "9.1.0", "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    with pytest.raises(ValueError):
        update_transfer.announce_params("9.1.0", b"")
