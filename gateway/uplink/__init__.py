"""⑥ The MQTT uplink: connection (``mqtt``, the only paho importer), topic names
(``topics``), payload formats (``envelope``) and the outbox → broker forwarder
(``forwarder``). It does not import ``gateway.outbox``: the forwarder works with
any object of the ``OutboxLike`` protocol.
"""

from gateway.uplink.forwarder import Forwarder, OutboxLike
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.topics import Topics

__all__ = ["Forwarder", "MqttUplink", "OutboxLike", "Topics"]
