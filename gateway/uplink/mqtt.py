"""The MQTT connection to the central platform: an asyncio adapter over paho-mqtt 2.x.

Owns the one paho client of the agent (the only module that imports paho):
connecting with TLS and credentials, the last will, reconnecting with backoff
(in paho's own network thread), and turning a QoS 1 publish into an awaitable
that resolves on the broker's PUBACK. It does not own topics, payloads, what
to publish when, nor any retry of a failed publish (``gateway.uplink.forwarder``
releases the rows and tries again after the reconnect).

Threads: paho's callbacks run in paho's thread and only ever hand events to the
event loop with ``loop.call_soon_threadsafe``; all state below is touched on the
loop only.

A QoS 1 message that was not acknowledged when the connection dropped fails its
awaitable and is dropped from paho's resend queue: the caller still holds the
rows and will publish them again, so letting paho resend too would only double
the traffic (delivery stays at least once either way).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import MqttSection
from gateway.errors import UplinkError

log = logging.getLogger(__name__)


class MqttUplink:
    """One MQTT 3.1.1 connection, kept up by itself; publish awaits the PUBACK."""

    def __init__(self, settings: MqttSection, *, client_id: str, will: tuple[str, bytes] | None) -> None:
        self._settings = settings
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        if settings.tls:
            try:
                # Verification stays on (ARCHITECTURE.md §3.5): paho's tls_set requires the
                # broker certificate and checks the host name; no ca_file means the system CAs.
                self._client.tls_set(
                    ca_certs=settings.ca_file or None,
                    certfile=settings.cert_file or None,
                    keyfile=settings.key_file or None,
                )
            except (OSError, ValueError) as exc:
                raise UplinkError(f"cannot set up TLS (mqtt.ca_file / cert_file / key_file): {exc}") from exc
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password or None)
        if will is not None:
            will_topic, will_payload = will
            self._client.will_set(will_topic, will_payload, qos=1, retain=True)
        self._client.reconnect_delay_set(1, max(1, math.ceil(settings.reconnect_max_s)))
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connected_event = asyncio.Event()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._hooks: list[Callable[[], None]] = []
        self._started = False
        self._stopping = False
        self.counters: Counter[str] = Counter()

    # --- public, on the loop --------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in paho's thread and return at once; reconnects by itself."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._started = True
        # connect_async does no network I/O here: paho's thread connects, and with
        # loop_start it keeps retrying a first connection that fails.
        settings = self._settings
        self._client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        self._client.loop_start()
        log.info("MQTT connecting to %s:%d", self._settings.host, self._settings.port)

    @property
    def connected(self) -> bool:
        return self._connected

    async def wait_connected(self, timeout_s: float | None = None) -> bool:
        """Wait until connected (True), or ``timeout_s`` passed (False)."""
        if self._connected:
            return True
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout_s)
        except TimeoutError:
            return False
        return self._connected

    def add_connect_hook(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` on the loop after each (re)connect (e.g. to publish the retained 'online')."""
        self._hooks.append(fn)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish; for QoS 1 and 2 return once the broker acknowledged it.

        Raises ``UplinkError`` when not connected, when paho refuses the message,
        or when the connection drops before the acknowledgement.
        """
        if not self._connected or self._loop is None:
            raise UplinkError("not connected to the MQTT broker")
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:
            raise UplinkError(f"publish to {topic} refused: {exc}") from exc
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # NO_CONN: the socket is already gone, the disconnect event is on its way.
            raise UplinkError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        self.counters["published"] += 1
        if qos == 0:
            return
        # paho may receive the PUBACK (and call on_publish in its thread) before
        # publish() above even returned the mid. That is harmless here: on_publish
        # only schedules _handle_puback on this loop, which cannot run before this
        # coroutine registers the future and yields at the await below.
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending[info.mid] = future
        try:
            await future
        finally:
            if self._pending.get(info.mid) is future:
                del self._pending[info.mid]

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect cleanly (a DISCONNECT packet: the broker discards the will) and stop paho's thread."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        self._client.disconnect()
        try:
            await asyncio.wait_for(asyncio.to_thread(self._client.loop_stop), timeout_s)
        except TimeoutError:
            log.warning("MQTT network thread did not stop within %.1f s", timeout_s)
        self._set_disconnected("uplink stopped")

    # --- paho's thread: hand everything to the loop ----------------------------------

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # The loop is closed (the agent is exiting without stop()): nobody is waiting.
            pass

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            # paho closes the connection and retries with its backoff.
            log.warning("MQTT broker refused the connection: %s", reason)
            return
        self._to_loop(self._handle_connected)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._to_loop(self._handle_connect_failed)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Drop unacknowledged messages before paho's reconnect would resend them
        # (see the module docstring); their awaitables fail on the loop.
        client.drop_out_messages()
        self._to_loop(self._handle_disconnected, str(reason))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties
    ) -> None:
        self._to_loop(self._handle_puback, mid, reason.is_failure, str(reason))

    # --- back on the loop -------------------------------------------------------------

    def _handle_connected(self) -> None:
        if self._stopping:
            return
        self._connected = True
        self._connected_event.set()
        self.counters["connects"] += 1
        log.info("MQTT connected to %s:%d", self._settings.host, self._settings.port)
        for hook in self._hooks:
            try:
                hook()
            except Exception:
                # A hook is the app's code; one failing must not keep the uplink down.
                log.exception("MQTT connect hook %r failed", hook)

    def _handle_connect_failed(self) -> None:
        self.counters["connect_failures"] += 1
        log.debug("MQTT connection to %s:%d failed, retrying", self._settings.host, self._settings.port)

    def _handle_disconnected(self, reason: str) -> None:
        was_connected = self._connected
        self._set_disconnected(f"connection lost before PUBACK ({reason})")
        # A publish made on the loop after paho's thread dropped its queue, but before
        # this event arrived, would otherwise be resent after the reconnect.
        self._client.drop_out_messages()
        if was_connected:
            self.counters["disconnects"] += 1
            if not self._stopping:
                log.warning("MQTT connection lost: %s; reconnecting", reason)

    def _set_disconnected(self, why: str) -> None:
        self._connected = False
        self._connected_event.clear()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(UplinkError(why))

    def _handle_puback(self, mid: int, failed: bool, reason: str) -> None:
        future = self._pending.pop(mid, None)
        if future is None or future.done():
            return  # acknowledged after its publish was failed (disconnect) or cancelled
        if failed:
            future.set_exception(UplinkError(f"broker rejected the publish: {reason}"))
            return
        self.counters["puback"] += 1
        future.set_result(None)
