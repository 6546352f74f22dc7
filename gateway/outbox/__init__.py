"""⑤ Durable store-and-forward: accepted records wait in SQLite until the broker's PUBACK.

See ``gateway.outbox.store`` for what it owns; it does not know MQTT (``gateway.uplink``).
"""

from gateway.outbox.store import CommitNotify, Leased, Outbox, OutboxStats, PendingWrite, priority_class

__all__ = ["CommitNotify", "Leased", "Outbox", "OutboxStats", "PendingWrite", "priority_class"]
