"""The MQTT connection to the central platform: an asyncio adapter over paho-mqtt 2.x.

Owns the one paho client of the agent (the only module that imports paho):
MQTT 3.1.1 or 5, connecting with TLS (verification on) and credentials, the last
will, reconnecting with capped, jittered exponential backoff in its own network
thread, a liveness watchdog, the bounded in-flight window, and turning a QoS 1
publish into an awaitable that resolves on the broker's PUBACK, and subscriptions
renewed after every reconnect (their handlers run on the loop). It does not own
topics, payloads, what to publish when, nor any retry of a failed publish
(``gateway.uplink.forwarder`` releases the rows and tries again after the reconnect).

Threads: one network thread of ours runs paho's ``loop_forever`` per connection
and sleeps the backoff between them (paho's own reconnect has no jitter: 5,000
gateways that lost the same broker would come back in lockstep). Paho's callbacks
hand events to the event loop with ``loop.call_soon_threadsafe`` only; all state
below is touched on the loop only, except the few floats the watchdog reads.

Watchdog (on the loop, every second): a connection with a PUBACK outstanding for
``publish_timeout_s`` is closed (a half-open TCP connection or a stuck broker would
otherwise hold the window forever), a connection attempt hanging beyond the backoff
bound is closed, and a network thread that died is started again — the "stuck
reconnect loop" of research/peers.md §4 #14 ends in a reconnect, not a reboot.

A QoS 1 message that was not acknowledged when the connection dropped fails its
awaitable and is dropped from paho's resend queue: the caller still holds the
rows and will publish them again, so letting paho resend too would only double
the traffic (delivery stays at least once either way).

Message size, outbound: every publish is checked against the broker's limit before it is
sent (``mqtt.max_message_bytes``, or the Maximum Packet Size of an MQTT 5 CONNACK when
smaller; the whole PUBLISH packet counts, topic and headers included) and raises
``MessageTooLarge`` instead of going out; so does a PUBACK refusing it as too large.
``max_payload_bytes(topic)`` tells a caller how much payload fits.

Message size, inbound: each subscription has its own payload cap, checked in paho's callback
before anything is copied or handed to the loop; what passes goes through one queue bounded in
messages and bytes (``INBOUND_QUEUE_MESSAGES``, ``INBOUND_QUEUE_BYTES``). When it is full, the
network thread waits up to ``INBOUND_FULL_WAIT_S`` for the loop (back-pressure through TCP: the
broker holds the rest), then drops the message. Refusals are counted in ``counters`` under
``inbound_refused.<reason>`` and logged once per reason per minute: a flood of large messages
costs one message's memory at a time, never the loop's.

What went wrong, for the technician: ``last_error`` is the last failure to connect or the reason the
connection ended, in words (``explain_failure``: a refused TLS client certificate says so, not paho's
"Unspecified error", which hides the socket or TLS error paho only logs), and
``disconnected_since_s`` the wall time the uplink went down (None while connected).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import MqttSection
from gateway.errors import MessageTooLarge, UplinkError
from gateway.loglimit import RateLimitedLog

log = logging.getLogger(__name__)
_refusals = RateLimitedLog(log, interval_s=60.0)

WATCHDOG_PERIOD_S = 1.0
CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_INBOUND_BYTES = 64 * 1024
"""A subscription's payload cap unless it asks for another: a signed envelope's bound
(``gateway.fleet.signed_envelope.MAX_ENVELOPE_BYTES``), which the uplink may not import."""
INBOUND_PACKET_OVERHEAD_BYTES = 64 * 1024
"""Above the largest payload cap, for the topic, properties and fixed header of a PUBLISH."""
INBOUND_QUEUE_MESSAGES = 256
INBOUND_QUEUE_BYTES = 8 * 1024 * 1024
INBOUND_FULL_WAIT_S = 0.5
INBOUND_PUMP_BATCH = 64
"""Inbound messages handled per turn of the loop before other tasks get theirs."""

# What OpenSSL and the OS say (lower case), and what the technician should read instead. The TLS
# alerts come from the broker (RFC 8446 §6.2): with TLS 1.3 a refused client certificate arrives
# after the handshake, on the first read, which paho reports as "Unspecified error".
_FAILURE_WORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("certificate required", "certificate_required"),
     "the broker requires a TLS client certificate and got none (mqtt.cert_file, mqtt.key_file)"),
    (("bad certificate", "bad_certificate", "unknown ca", "unknown_ca", "certificate unknown",
      "certificate_unknown", "certificate revoked", "certificate expired", "access denied"),
     "the broker refused the TLS client certificate (mqtt.cert_file: not signed by a CA it trusts, "
     "expired or revoked)"),
    (("certificate verify failed", "certificate_verify_failed"),
     "the broker's TLS certificate is not trusted (mqtt.ca_file, or the host name)"),
    (("wrong version number", "wrong_version_number"),
     "TLS to a port that does not speak TLS (mqtt.port, mqtt.tls)"),
    (("not authorized", "bad user name or password"),
     "the broker refused the credentials (mqtt.username, mqtt.password)"),
    (("connection refused",), "nothing accepts connections at the broker's address (mqtt.host, mqtt.port)"),
    (("name or service not known", "temporary failure in name resolution", "nodename nor servname"),
     "the broker's host name does not resolve (mqtt.host, DNS)"),
    (("timed out",), "no answer from the broker (network, firewall, mqtt.host, mqtt.port)"),
)  # fmt: skip


# A broker that refuses the client's certificate may close the TLS connection without an alert the
# client reads first: OpenSSL 3.0.19 reports only an EOF, where 3.0.11 reported the alert. Before
# CONNACK over TLS, that EOF is explained by what the gateway sent.
_TLS_EOF_WORDS = ("eof occurred in violation of protocol", "unexpected eof")


def explain_failure(raw: str, *, tls: bool = False, client_cert: bool = False) -> str:
    """A connection failure in the technician's words, with the raw text kept after a colon.

    ``tls`` and ``client_cert`` say how the gateway connected; they only matter for a TLS
    connection the broker closed before CONNACK without saying why.
    """
    lowered = raw.lower()
    for words, meaning in _FAILURE_WORDS:
        if any(w in lowered for w in words):
            return f"{meaning}: {raw}"
    if tls and "before connack" in lowered and any(w in lowered for w in _TLS_EOF_WORDS):
        if client_cert:
            meaning = (
                "the broker closed the TLS connection without answering: it probably refused the TLS "
                "client certificate (mqtt.cert_file: not signed by a CA it trusts, expired or revoked)"
            )
        else:
            meaning = (
                "the broker closed the TLS connection without answering: it probably requires a TLS "
                "client certificate (mqtt.cert_file, mqtt.key_file)"
            )
        return f"{meaning}: {raw}"
    return raw


PACKET_TOO_LARGE = 0x95
"""MQTT 5 reason code 0x95, Packet too large (§2.4)."""


def _accept_puback_packet_too_large() -> None:
    """Let paho decode a PUBACK with reason 0x95 instead of dropping the connection.

    mosquitto 2.0 answers a QoS 1 PUBLISH over its ``message_size_limit`` with a PUBACK of
    reason 0x95 (handle_publish.c), a code MQTT 5 §3.4.2.1 does not list for PUBACK. paho's
    reason table then refuses the packet, closes the connection as a protocol error, and the
    same batch went again after every reconnect, for ever (issue 16, finding 7). Adding the
    code for PUBACK to paho's table makes the refusal reach ``_on_publish`` as what it is.
    """
    names = ReasonCode.names
    entry = names.get(PACKET_TOO_LARGE, {})
    packets = entry.get("Packet too large")
    if packets is None or PacketTypes.PUBACK in packets:
        return
    patched = {**names, PACKET_TOO_LARGE: {**entry, "Packet too large": [*packets, PacketTypes.PUBACK]}}
    ReasonCode.names = MappingProxyType(patched)


_accept_puback_packet_too_large()


def _varint_bytes(n: int) -> int:
    """Bytes of MQTT's Variable Byte Integer for ``n`` (§1.5.5 in 5.0, §2.2.3 in 3.1.1)."""
    return 1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4


def publish_packet_bytes(
    topic: str, payload_bytes: int, *, qos: int = 1, v5: bool = False, content_type: str | None = None
) -> int:
    """Size of the whole PUBLISH packet (MQTT 3.1.1 §3.3, 5.0 §3.3): fixed header, topic,
    packet id (QoS > 0), MQTT 5 properties (the Content Type we send) and payload."""
    props = 3 + len(content_type.encode()) if v5 and content_type else 0
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + payload_bytes
    if v5:
        remaining += _varint_bytes(props) + props
    return 1 + _varint_bytes(remaining) + remaining


def backoff_s(attempt: int, min_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): min_s·2^attempt capped at max_s,
    then "equal jitter" (a uniform draw in [cap/2, cap]) so a fleet does not reconnect in step."""
    cap = min(max_s, min_s * (2.0 ** min(attempt, 30)))
    return cap / 2 + rand() * cap / 2


class _Subscription(NamedTuple):
    handler: Callable[[str, bytes], None]
    qos: int
    max_payload_bytes: int


class MqttUplink:
    """One MQTT connection (3.1.1 or 5), kept up by itself; publish awaits the PUBACK."""

    def __init__(
        self,
        settings: MqttSection,
        *,
        client_id: str,
        will: tuple[str, bytes] | None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._v5 = settings.protocol == "mqttv5"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            reconnect_on_failure=False,  # our network thread reconnects, with jitter
        )
        self._client.connect_timeout = CONNECT_TIMEOUT_S
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
        self._client.max_inflight_messages_set(settings.max_inflight_messages)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_log = self._on_log
        self._rand = rand

        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connected_event = asyncio.Event()
        self._window = asyncio.Semaphore(settings.max_inflight_messages)
        # mid -> (awaitable, sent at (monotonic), packet bytes)
        self._pending: dict[int, tuple[asyncio.Future[None], float, int]] = {}
        self._hooks: list[Callable[[], None]] = []
        # Replaced, never mutated: the network thread reads it in its callbacks without a lock.
        self._subscriptions: dict[str, _Subscription] = {}
        # Inbound messages from the network thread to the loop, and refusals not yet counted on
        # the loop: both under _inbound_lock; _pump_scheduled says a _pump is on its way.
        self._inbound: deque[tuple[Callable[[str, bytes], None], str, bytes]] = deque()
        self._inbound_bytes = 0
        self._inbound_lock = threading.Condition()
        self._inbound_refused: Counter[str] = Counter()
        self._pump_scheduled = False
        self._broker_max_packet_bytes: int | None = None  # the CONNACK's Maximum Packet Size (MQTT 5)
        self._started = False
        self._stopping = False
        self._stop_flag = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._session_ok = False  # set by the network thread when a CONNACK accepted us
        self._attempt_started_mono = 0.0  # written by the network thread, read by the watchdog
        self._in_attempt = False
        self._last_puback_mono: float | None = None
        # The last socket/TLS error paho logged (network thread; one str assignment): the cause
        # behind a disconnect it reports as "Unspecified error".
        self._socket_error: str | None = None
        self.last_error: str | None = None
        """The last connection failure or end of connection, explained (``explain_failure``)."""
        self.last_error_at_s: float | None = None
        self.disconnected_since_s: float | None = None
        """Wall time since when the uplink is down (from ``start``); None while connected."""
        self.counters: Counter[str] = Counter()

    # --- public, on the loop --------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the network thread and return at once; reconnects by itself."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._started = True
        self.disconnected_since_s = time.time()
        self._start_thread()
        self._watchdog = asyncio.create_task(self._watch(), name="mqtt-watchdog")
        log.info("MQTT connecting to %s:%d", self._settings.host, self._settings.port)

    @property
    def connected(self) -> bool:
        return self._connected

    def status(self) -> dict[str, Any]:
        """Connection state and counters for the ``health`` message."""
        now = time.monotonic()
        return {
            "state": "stopped" if self._stopping else ("connected" if self._connected else "connecting"),
            "protocol": self._settings.protocol,
            "connects": self.counters["connects"],
            "reconnects": max(0, self.counters["connects"] - 1),
            "disconnects": self.counters["disconnects"],
            "connect_failures": self.counters["connect_failures"],
            "watchdog_resets": self.counters["watchdog_stalled"] + self.counters["watchdog_stuck"],
            "inflight": len(self._pending),
            "max_message_bytes": self.max_message_bytes,
            "too_large": self.counters["too_large"],
            "inbound_refused": {
                key.split(".", 1)[1]: n
                for key, n in self.counters.items()
                if key.startswith("inbound_refused.")
            },
            "last_puback_age_s": None
            if self._last_puback_mono is None
            else round(now - self._last_puback_mono, 3),
            "disconnected_since_s": self.disconnected_since_s,
            "last_error": self.last_error,
            "last_error_at_s": self.last_error_at_s,
        }

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

    @property
    def max_message_bytes(self) -> int:
        """The largest PUBLISH packet sent: ``mqtt.max_message_bytes``, or the broker's Maximum
        Packet Size from the CONNACK of this connection (MQTT 5) when smaller."""
        configured = self._settings.max_message_bytes
        broker = self._broker_max_packet_bytes
        return configured if broker is None else min(configured, broker)

    def max_payload_bytes(self, topic: str, *, content_type: str | None = None, qos: int = 1) -> int:
        """The largest payload that fits in ``max_message_bytes`` when published on ``topic``."""
        empty = publish_packet_bytes(topic, 0, qos=qos, v5=self._v5, content_type=content_type)
        # The remaining length's own size grows with the payload: up to 3 more bytes.
        return max(0, self.max_message_bytes - empty - 3)

    def subscribe(
        self,
        topic_filter: str,
        handler: Callable[[str, bytes], None],
        *,
        qos: int = 1,
        max_payload_bytes: int = DEFAULT_MAX_INBOUND_BYTES,
    ) -> None:
        """Subscribe to ``topic_filter`` now (if connected) and again after every reconnect.

        The sessions are clean (no broker-side state survives a reconnect), so the
        filter is subscribed in each CONNACK callback, before any message can arrive.
        ``handler(topic, payload)`` runs on the loop; it must not block, and an exception
        from it is logged and counted, never fatal. A message with a payload over
        ``max_payload_bytes`` is refused in the network thread and never reaches it.
        """
        if not 0 < max_payload_bytes <= INBOUND_QUEUE_BYTES:
            raise ValueError(f"max_payload_bytes must be in 1..{INBOUND_QUEUE_BYTES}")
        self._subscriptions = {
            **self._subscriptions,
            topic_filter: _Subscription(handler, qos, max_payload_bytes),
        }
        if self._connected:
            self._client.subscribe(topic_filter, qos)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        content_type: str | None = None,
    ) -> None:
        """Publish; for QoS 1 and 2 return once the broker acknowledged it.

        At most ``mqtt.max_inflight_messages`` wait for their PUBACK; more callers wait
        here for a slot. ``content_type`` is sent as the MQTT 5 Content Type property
        (ignored with 3.1.1). Raises ``MessageTooLarge`` when the packet exceeds
        ``max_message_bytes`` (nothing is sent) or the broker refused it as too large, and
        ``UplinkError`` when not connected, when paho refuses the message, when the broker's
        PUBACK carries another failure reason, or when the connection drops before it.
        """
        async with self._window:
            await self._publish(topic, payload, qos, retain, content_type)

    async def _publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, content_type: str | None
    ) -> None:
        if not self._connected or self._loop is None:
            raise UplinkError("not connected to the MQTT broker")
        size = publish_packet_bytes(
            topic, len(payload), qos=qos, v5=self._v5, content_type=content_type if self._v5 else None
        )
        limit = self.max_message_bytes
        if size > limit:
            self.counters["too_large"] += 1
            raise MessageTooLarge(
                f"a message of {size} bytes to {topic} exceeds the broker's limit of {limit} bytes",
                size_bytes=size,
                limit_bytes=limit,
            )
        properties = None
        if self._v5 and content_type:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ContentType = content_type
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
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
        self._pending[info.mid] = (future, time.monotonic(), size)
        try:
            await future
        finally:
            entry = self._pending.get(info.mid)
            if entry is not None and entry[0] is future:
                del self._pending[info.mid]

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect cleanly (a DISCONNECT packet: the broker discards the will) and stop the thread."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        self._stop_flag.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._client.disconnect()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, timeout_s)
            if thread.is_alive():
                log.warning("MQTT network thread did not stop within %.1f s", timeout_s)
        self._set_disconnected("uplink stopped")

    # --- the network thread ------------------------------------------------------------

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._network, name="edgegw-mqtt", daemon=True)
        self._thread.start()

    def _connect_properties(self) -> Properties:
        # MQTT 5 §3.1.2.11.4 Maximum Packet Size: the broker must not send us a larger packet, so an
        # oversized PUBLISH is dropped at the broker instead of read whole into this process's memory
        # before our per-subscription check can refuse it. (A 3.1.1 broker cannot be told: its own
        # message_size_limit is what bounds it, docs/mqtt.md.)
        largest = max(
            (sub.max_payload_bytes for sub in self._subscriptions.values()), default=DEFAULT_MAX_INBOUND_BYTES
        )
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.MaximumPacketSize = largest + INBOUND_PACKET_OVERHEAD_BYTES
        return properties

    def _network(self) -> None:
        settings = self._settings
        attempt = 0
        while not self._stop_flag.is_set():
            self._attempt_started_mono = time.monotonic()
            self._in_attempt = True
            self._session_ok = False
            try:
                if self._v5:
                    self._client.connect(
                        settings.host, settings.port, settings.keepalive_s, clean_start=True,
                        properties=self._connect_properties(),
                    )  # fmt: skip
                else:
                    self._client.connect(settings.host, settings.port, settings.keepalive_s)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                self._to_loop(self._handle_connect_failed, str(exc) or type(exc).__name__)
            else:
                # Returns when the connection ends (reconnect_on_failure is off).
                self._client.loop_forever(timeout=0.5)
            self._in_attempt = False
            if self._session_ok:
                attempt = 0
            if self._stop_flag.is_set():
                break
            delay_s = backoff_s(attempt, settings.reconnect_min_s, settings.reconnect_max_s, self._rand)
            attempt += 1
            self._stop_flag.wait(delay_s)

    def _force_close(self) -> None:
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)  # paho's loop sees the error and ends the connection
        except OSError:
            pass

    async def _watch(self) -> None:
        settings = self._settings
        while not self._stopping:
            await asyncio.sleep(WATCHDOG_PERIOD_S)
            now = time.monotonic()
            if self._thread is not None and not self._thread.is_alive() and not self._stopping:
                self.counters["watchdog_restarts"] += 1
                log.error("MQTT network thread died; starting it again")
                self._start_thread()
                continue
            oldest = min((t for _f, t, _n in self._pending.values()), default=None)
            if self._connected and oldest is not None and now - oldest > settings.publish_timeout_s > 0:
                self.counters["watchdog_stalled"] += 1
                log.warning("MQTT: no PUBACK for %.0f s; closing the connection to start again", now - oldest)
                self._force_close()
            elif (
                not self._connected
                and self._in_attempt
                and now - self._attempt_started_mono > CONNECT_TIMEOUT_S + settings.keepalive_s
            ):
                self.counters["watchdog_stuck"] += 1
                log.warning("MQTT connection attempt hangs; closing it to start again")
                self._attempt_started_mono = now
                self._force_close()

    # --- paho's callbacks (network thread): hand everything to the loop -----------------

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # The loop is closed (the agent is exiting without stop()): nobody is waiting.
            pass

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._socket_error = buf

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            # paho closes the connection; the network thread backs off and retries.
            log.warning("MQTT broker refused the connection: %s", reason)
            self._to_loop(self._handle_connect_failed, str(reason))
            return
        self._session_ok = True
        for topic_filter, sub in self._subscriptions.items():
            client.subscribe(topic_filter, sub.qos)
        # MQTT 5 §3.2.2.3.6: the broker states the largest packet it accepts; absent, no limit.
        broker_max = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        self._to_loop(self._handle_connected, broker_max if isinstance(broker_max, int) else None)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Drop unacknowledged messages before a reconnect would resend them
        # (see the module docstring); their awaitables fail on the loop.
        client.drop_out_messages()
        why, seen, self._socket_error = str(reason), self._socket_error, None
        if reason.is_failure and seen is not None:
            why = seen  # what paho only logged: the socket or TLS error behind its reason code
        self._to_loop(self._handle_disconnected, why)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties
    ) -> None:
        self._to_loop(self._handle_puback, mid, reason.is_failure, str(reason), reason.value)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Runs for every message: only lengths are looked at before the cap is checked, and
        # nothing crosses to the loop unless it passed (paho already holds this one message).
        size = len(msg.payload)
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self._refuse("bad_topic", "MQTT message with a topic that is not UTF-8 refused")
            return
        for topic_filter, sub in self._subscriptions.items():
            if not mqtt.topic_matches_sub(topic_filter, topic):
                continue
            if size > sub.max_payload_bytes:
                self._refuse(
                    "too_large", "MQTT message of %d bytes on %s refused (at most %d bytes on %s)",
                    size, topic, sub.max_payload_bytes, topic_filter,
                )  # fmt: skip
            elif not self._enqueue(sub.handler, topic, msg.payload):
                self._refuse("queue_full", "MQTT message on %s dropped: the inbound queue is full", topic)

    def _enqueue(self, handler: Callable[[str, bytes], None], topic: str, payload: bytes | bytearray) -> bool:
        """Queue one message for the loop, waiting a little for room (network thread)."""
        deadline = time.monotonic() + INBOUND_FULL_WAIT_S
        with self._inbound_lock:
            while (
                len(self._inbound) >= INBOUND_QUEUE_MESSAGES
                or self._inbound_bytes + len(payload) > INBOUND_QUEUE_BYTES
            ):
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0 or self._stop_flag.is_set():
                    return False
                self._inbound_lock.wait(remaining_s)
            self._inbound.append((handler, topic, bytes(payload)))
            self._inbound_bytes += len(payload)
            self._schedule_pump()
        return True

    def _refuse(self, reason: str, msg: str, *args: object) -> None:
        """Count a refused inbound message (the loop adds it to ``counters``) and log it, rate-limited."""
        with self._inbound_lock:
            self._inbound_refused[reason] += 1
            self._schedule_pump()
        _refusals.warn(f"mqtt_inbound_{reason}", msg, *args)

    def _schedule_pump(self) -> None:
        """Under ``_inbound_lock``: one ``_pump`` on its way to the loop at a time, whatever the rate."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self._to_loop(self._pump)

    # --- back on the loop -------------------------------------------------------------

    def _pump(self) -> None:
        """Hand queued messages to their handlers, ``INBOUND_PUMP_BATCH`` per turn of the loop."""
        for _ in range(INBOUND_PUMP_BATCH):
            with self._inbound_lock:
                # Counted under the same lock that clears _pump_scheduled: none is left behind.
                for reason, n in self._inbound_refused.items():
                    self.counters[f"inbound_refused.{reason}"] += n
                self._inbound_refused.clear()
                if not self._inbound:
                    self._pump_scheduled = False
                    return
                handler, topic, payload = self._inbound.popleft()
                self._inbound_bytes -= len(payload)
                self._inbound_lock.notify()
            self._handle_message(handler, topic, payload)
        asyncio.get_running_loop().call_soon(self._pump)  # more waiting: let other tasks run first

    def _handle_message(self, handler: Callable[[str, bytes], None], topic: str, payload: bytes) -> None:
        self.counters["received"] += 1
        try:
            handler(topic, payload)
        except Exception:
            # The handler is the app's code; a bad message must not stop the uplink.
            self.counters["handler_errors"] += 1
            log.exception("MQTT message handler for %s failed", topic)

    def _handle_connected(self, broker_max_packet_bytes: int | None = None) -> None:
        if self._stopping:
            return
        self._broker_max_packet_bytes = broker_max_packet_bytes
        if broker_max_packet_bytes is not None and broker_max_packet_bytes < self._settings.max_message_bytes:
            log.info("MQTT broker takes packets of %d bytes at most", broker_max_packet_bytes)
        self._connected = True
        self._connected_event.set()
        self.disconnected_since_s = None
        self.counters["connects"] += 1
        log.info("MQTT connected to %s:%d", self._settings.host, self._settings.port)
        for hook in self._hooks:
            try:
                hook()
            except Exception:
                # A hook is the app's code; one failing must not keep the uplink down.
                log.exception("MQTT connect hook %r failed", hook)

    def _note_failure(self, raw: str) -> None:
        settings = self._settings
        explained = explain_failure(raw, tls=settings.tls, client_cert=bool(settings.cert_file))
        self.last_error, self.last_error_at_s = explained, time.time()
        if self.disconnected_since_s is None:
            self.disconnected_since_s = self.last_error_at_s

    def _handle_connect_failed(self, why: str) -> None:
        self.counters["connect_failures"] += 1
        self._note_failure(why)
        log.debug(
            "MQTT connection to %s:%d failed (%s), retrying", self._settings.host, self._settings.port, why
        )

    def _handle_disconnected(self, reason: str) -> None:
        was_connected = self._connected
        self._set_disconnected(f"connection lost before PUBACK ({reason})")
        if not self._stopping:
            self._note_failure(reason if was_connected else f"connection ended before CONNACK: {reason}")
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
        for future, _sent, _size in pending.values():
            if not future.done():
                future.set_exception(UplinkError(why))

    def _handle_puback(self, mid: int, failed: bool, reason: str, code: int = 0) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None or entry[0].done():
            return  # acknowledged after its publish was failed (disconnect) or cancelled
        future, _sent, size = entry
        if failed:
            # MQTT 5 §3.4.2.1: the broker did not take it; the caller keeps the rows (no ack).
            self.counters[f"puback_refused.{code:#04x}"] += 1
            if code == PACKET_TOO_LARGE:
                future.set_exception(
                    MessageTooLarge(
                        f"the broker refused a message of {size} bytes as too large",
                        size_bytes=size,
                        limit_bytes=None,
                    )
                )
            else:
                future.set_exception(UplinkError(f"broker rejected the publish: {reason}"))
            return
        self.counters["puback"] += 1
        self._last_puback_mono = time.monotonic()
        future.set_result(None)
