"""MQTT payloads of the uplink (ARCHITECTURE.md §3.2, schemas in ``gateway/schemas/``), pure.

Owns the byte layout of the ``up`` batch envelope and of the ``state`` message.
It does not own the record shape (the pipeline builds record bodies; the outbox
stores them already serialised), topics, nor clocks: times are passed in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

ENVELOPE_VERSION = 1


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
