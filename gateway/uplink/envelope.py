"""MQTT payloads of the uplink (ARCHITECTURE.md §3.2, schemas in ``gateway/schemas/``), pure.

Owns the byte layout of the ``up`` batch envelope, the ``alert`` message, the
``health`` message, the ``inventory`` pages, the ``state`` message and the optional zlib
compression of batches.
It does not own the record shape (the pipeline builds record bodies; the outbox
stores them already serialised), topics, nor clocks: times are passed in.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

ENVELOPE_VERSION = 1
ZLIB_LEVEL = 6
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_ZLIB = "application/zlib"
"""MQTT 5 Content Type of a compressed batch: zlib (RFC 1950) of the same JSON document."""


def up_batch(gateway_id: str, bodies_json: Sequence[str], sent_at: str) -> bytes:
    """The ``up`` message: ``{"v":1,"gateway_id":..,"sent_at":..,"records":[...]}``.

    ``bodies_json`` are records already serialised as JSON objects (as the outbox
    stores them); they are joined, not parsed again: this is the hot path of a
    backlog drain.
    """
    head = json.dumps(
        {"v": ENVELOPE_VERSION, "gateway_id": gateway_id, "sent_at": sent_at}, separators=(",", ":")
    )
    return f'{head[:-1]},"records":[{",".join(bodies_json)}]}}'.encode()


def state(online: bool, version: str, at: str) -> bytes:
    """The retained ``state`` message (also the last will, with ``online=False``)."""
    return json.dumps(
        {"v": ENVELOPE_VERSION, "state": "online" if online else "offline", "version": version, "at": at},
        separators=(",", ":"),
    ).encode()


def alert(gateway_id: str, body_json: str, sent_at: str) -> bytes:
    """The ``alert`` message: one record, ``{"v":1,"gateway_id":..,"sent_at":..,"record":{...}}``."""
    head = json.dumps(
        {"v": ENVELOPE_VERSION, "gateway_id": gateway_id, "sent_at": sent_at}, separators=(",", ":")
    )
    return f'{head[:-1]},"record":{body_json}}}'.encode()


def compress(payload: bytes) -> bytes:
    """zlib (RFC 1950, with header and Adler-32) of a payload; ``zlib.decompress`` undoes it."""
    return zlib.compress(payload, ZLIB_LEVEL)


def health(gateway_id: str, at: str, sections: Mapping[str, Any]) -> bytes:
    """The ``health`` message: ``{"v":1,"gateway_id":..,"at":..,<section>: {...}, ...}``."""
    doc: dict[str, Any] = {"v": ENVELOPE_VERSION, "gateway_id": gateway_id, "at": at}
    doc.update(sections)
    return json.dumps(doc, separators=(",", ":")).encode()


INVENTORY_PAGE_DEVICES = 500
"""Devices per ``inventory`` message: a city gateway's list stays a few tens of kB per page."""


def inventory(
    gateway_id: str, at: str, devices: Sequence[Mapping[str, Any]], *, max_bytes: int | None = None
) -> list[bytes]:
    """The ``inventory`` messages: ``{"v":1,"gateway_id","at","page","pages","devices":[...]}``,
    ``INVENTORY_PAGE_DEVICES`` devices per page at most and, with ``max_bytes``, no page over that
    many bytes (the broker's message size limit); one empty page when nothing was heard."""
    texts = [json.dumps(device, separators=(",", ":")) for device in devices]
    # The envelope of a page, with page numbers as long as they can get: an upper bound.
    most = str(len(devices) + 1)
    head_bytes = len(_inventory_page(gateway_id, at, most, most, []))
    chunks: list[list[str]] = [[]]
    size = head_bytes
    for text in texts:
        grows = len(text) + 1  # ASCII (json.dumps escapes the rest), and a comma
        full = len(chunks[-1]) >= INVENTORY_PAGE_DEVICES or (
            max_bytes is not None and size + grows > max_bytes
        )
        if full and chunks[-1]:
            chunks.append([])
            size = head_bytes
        chunks[-1].append(text)
        size += grows
    pages = str(len(chunks))
    return [_inventory_page(gateway_id, at, str(n), pages, chunk) for n, chunk in enumerate(chunks, start=1)]


def _inventory_page(gateway_id: str, at: str, page: str, pages: str, device_texts: Sequence[str]) -> bytes:
    head = json.dumps({"v": ENVELOPE_VERSION, "gateway_id": gateway_id, "at": at}, separators=(",", ":"))
    return f'{head[:-1]},"page":{page},"pages":{pages},"devices":[{",".join(device_texts)}]}}'.encode()
