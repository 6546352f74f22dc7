"""The one exception tree of edgegw.

Every error the agent raises on purpose is a ``GatewayError``; foreign exceptions
(``OSError``, ``sqlite3.Error``, ``yaml.YAMLError``, ``ValueError`` from a library)
are wrapped at the boundary with ``raise ... from exc``. Untrusted input
(radio bytes, datagrams, payloads) raises a subclass of ``InputError``: the
stage that catches it counts it by ``reason``, logs it once and drops it; it
never stops a loop::

    GatewayError
    ├── ConfigError            a config file or value is invalid (names file, key path, reason)
    │   └── NotUtf8            a text file the agent or the CLI reads is not UTF-8 (names file, line, column)
    ├── RegistryError          a device registry operation is impossible (duplicate, unknown device)
    │   └── ImportFailed       a registry CSV has errors, nothing imported (gateway.provisioning.csv_import)
    ├── StorageError           the SQLite database cannot be opened, migrated or written
    ├── AlreadyRunning         another agent holds this data_dir (its lock, or its control socket answers)
    ├── AgentUnreachable       the CLI finds no agent on the control socket (gateway.control.client)
    ├── RadioError             a radio's hardware or its link to the host failed (not for what it hears)
    │   └── ModemError         a serial modem command got no OK (gateway.radio.serial_modem.backend)
    ├── DownlinkQueueFull      a device's downlink queue is full (also a ValueError, see the class)
    ├── UplinkError            the MQTT connection or a publish failed
    │   └── MessageTooLarge    a message exceeds what the broker takes (split it or quarantine it)
    ├── ProvisioningError      a gateway provisioning step cannot be done (bad id, certificate, key type)
    │   └── NodeError          a node on USB serial does not answer, refuses, or reads back wrong
    └── InputError             untrusted bytes were rejected; ``reason`` is a short counter key
        ├── DatagramError      a Semtech UDP datagram is malformed
        ├── FrameError         a LoRaWAN PHYPayload is malformed or not acceptable
        │   ├── MicMismatch    the MIC does not verify with the session keys
        │   ├── UnknownDevice  no session for the DevAddr / DevEUI
        │   └── ReplayedFrame  the frame counter is not ahead of the last accepted one
        ├── DecodeError        an application payload does not match its device profile
        ├── EncodeError        a downlink command or its parameters do not fit the profile
        ├── QrCodeError        a scanned TR005 device QR code is malformed or its checksum is wrong
        └── CommandRejected    a platform command envelope is unsigned, forged, misaddressed, replayed, ...

A class defined in another module names that module above.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error edgegw raises deliberately."""


class ConfigError(GatewayError):
    """A configuration file or value is invalid.

    Raised by the config loader (and by profile loading) with the file, the
    dotted key path and a reason, so an operator can fix it without reading code.
    """

    def __init__(self, reason: str, *, file: str | None = None, key_path: str | None = None) -> None:
        self.file = file
        self.key_path = key_path
        self.reason = reason
        where = ": ".join(part for part in (file, key_path) if part)
        super().__init__(f"{where}: {reason}" if where else reason)


class NotUtf8(ConfigError):
    """A text file (config, rules, profile, CSV, identity) is not UTF-8: saved in Latin-1 or UTF-16.

    Raised by ``gateway.textfile`` with the first offending byte and where it is (``line`` and
    ``column`` count from 1, the column in characters), so the one-line message says what to fix.
    """

    def __init__(self, file: str | None, *, byte: int | None, line: int, column: int, reason: str) -> None:
        self.byte = byte
        self.line = line
        self.column = column
        super().__init__(reason, file=file)


class RegistryError(GatewayError):
    """A device registry operation cannot be done (duplicate DevEUI, unknown device, bad key)."""


class StorageError(GatewayError):
    """The SQLite database cannot be opened, migrated or written."""


class AlreadyRunning(GatewayError):
    """Another ``edgegw run`` holds the data directory: its lock file (``pid`` when it wrote one),
    or its control socket answers. The second agent stops before touching anything."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class RadioError(GatewayError):
    """A radio's hardware or its link to the host failed: a modem that does not answer, a port that
    vanished. Raised and handled inside the radio backends (they reconnect); bytes heard on the air
    that do not parse are an ``InputError``, never this."""


class DownlinkQueueFull(GatewayError):
    """A device already has ``limit`` application downlinks queued (``DownlinkScheduler.enqueue``).

    A state of the gateway, not bad input: the same downlink is accepted once the device has
    taken some (a class A device takes one per uplink). Callers drop the downlink and say so (the
    pipeline counts ``rules.command_queue_full``; a platform ``downlink`` command gets a failed
    ``cmd-result``).
    """

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class UplinkError(GatewayError):
    """The MQTT connection could not be established or a publish failed."""


class MessageTooLarge(UplinkError):
    """A publish is larger than the broker takes: ``mqtt.max_message_bytes``, the MQTT 5 Maximum
    Packet Size of its CONNACK, or the broker refused it as too large (PUBACK reason 0x95).

    Raised before anything is sent when the size is known to be too large. Sending it again never
    helps: the caller splits it, or sets the record aside (``Outbox.quarantine``).
    """

    def __init__(self, message: str, *, size_bytes: int, limit_bytes: int | None) -> None:
        super().__init__(message)
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class InputError(GatewayError):
    """Untrusted input was rejected.

    ``reason`` is a short, stable, snake_case key used as a counter name in
    health and in logs (e.g. ``bad_mic``, ``replayed_fcnt``).
    """

    reason: str = "bad_input"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(message)


class DatagramError(InputError):
    """A Semtech UDP packet-forwarder datagram is malformed (raised by the pure codec)."""

    reason = "bad_datagram"


class FrameError(InputError):
    """A LoRaWAN PHYPayload is malformed, of an unexpected type, or not acceptable."""

    reason = "bad_frame"


class MicMismatch(FrameError):
    """The frame's MIC does not verify with the session's NwkSKey."""

    reason = "bad_mic"


class UnknownDevice(FrameError):
    """No session is registered for the frame's DevAddr (or DevEUI)."""

    reason = "unknown_device"


class ReplayedFrame(FrameError):
    """The frame counter is not ahead of the last accepted one (replay or duplicate)."""

    reason = "replayed_fcnt"


class DecodeError(InputError):
    """An application payload does not match its device profile's layout."""

    reason = "decode_failed"


class EncodeError(InputError):
    """A downlink command is unknown to the profile, or a parameter is missing or out of range."""

    reason = "bad_command"


class QrCodeError(InputError):
    """A scanned device QR code (LoRa Alliance TR005 ``LW:D0:...``) is malformed or its checksum is wrong."""

    reason = "bad_qr"


class CommandRejected(InputError):
    """A signed command or configuration envelope from the platform was refused (``gateway.fleet``).

    ``reason`` is one of ``gateway.fleet.signed_envelope.Rejection`` and is sent back on ``cmd-result``.
    """

    reason = "malformed"


class ProvisioningError(GatewayError):
    """A gateway provisioning step cannot be done (bad id, certificate for another key, wrong key type)."""


class NodeError(ProvisioningError):
    """A node on USB serial does not answer its raw REPL, refuses a command, or a file read back differs."""
