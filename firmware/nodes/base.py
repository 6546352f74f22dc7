"""What every node application shares: its settings, the wake-up cycle, the report and its downlink.

Owns the skeleton the node modules fill in: settings merged over the node's ``DEFAULTS`` (a key
the node does not know is refused at start: a typo in ``config.json`` must not pass silently),
``since_report_s``, ``cycle`` (time passes, measure, ask the node for a reason to send, report),
the report itself (the payload goes out on FPort 10 and a downlink received in RX1/RX2 goes to
``on_downlink``, the same entry point a class C window uses) and the ``set_interval`` command
most nodes take. Also the temperature field two payloads share (``centi_c``).

It does not own any node's policy: each node module keeps its payload format (``encode``), its
measurement, its reasons to send and the state it keeps between reports, in its subclass, which
writes ``measure()``, ``reason_to_send(reading)``, ``encode_reading(reading)`` (the uplink
bytes) and ``reported(reading)`` (reset its report state; called before the uplink goes out),
and overrides ``cycle`` or ``on_downlink`` where its time or its commands differ.

MicroPython: a plain base class (no ``abc``); the only instance attributes it adds are
``device``, ``config`` and ``since_report_s``, which every node had (noise as a property), so
the state ``main`` keeps across deep sleep is unchanged.
"""

from nodes import commands

FPORT = 10
NO_TEMPERATURE = -32768


def centi_c(temperature_c):
    """A temperature for an int16 field in 0.01 °C; NO_TEMPERATURE when the probe gave none.

    Rounded half away from zero, then clamped to the int16 range minus the "missing" marker.
    """
    if temperature_c is None:
        return NO_TEMPERATURE
    raw = temperature_c * 100
    centi = int(raw + 0.5) if raw >= 0 else -int(-raw + 0.5)
    return max(-32767, min(32767, centi))


class Node:
    """A node: its ``device`` (``lorawan.device.Device``) and its settings, ``config``."""

    def __init__(self, device, defaults, config, what):
        self.device = device
        self.config = dict(defaults)
        if config:
            for key in config:
                if key not in defaults:
                    raise ValueError("unknown " + what + " setting: " + key)
                self.config[key] = config[key]
        self.since_report_s = 0

    def cycle(self, elapsed_s=0):
        """One wake-up, ``elapsed_s`` after the previous one: measure, send when a reason says so.

        Returns (reading, reason or None, downlink or None).
        """
        self.since_report_s += elapsed_s
        return self.decide(self.measure())

    def decide(self, reading):
        """Report ``reading`` when the node has a reason. Returns (reading, reason, downlink)."""
        reason = self.reason_to_send(reading)
        downlink = None if reason is None else self.report(reading)
        return reading, reason, downlink

    def report(self, reading):
        """Send the reading; a downlink that came back is applied. Returns the downlink or None."""
        payload = self.encode_reading(reading)
        self.reported(reading)
        self.since_report_s = 0
        downlink = self.device.send(FPORT, payload)
        if downlink is not None and downlink.fport:
            self.on_downlink(downlink.fport, downlink.payload)
        return downlink

    def on_downlink(self, fport, payload):
        """Apply a command; True when it was one for this node (here: ``set_interval``)."""
        seconds = commands.interval_s(fport, payload)
        if seconds is None:
            return False
        self.config["report_interval_s"] = seconds
        return True

    def measure(self):
        """The reading (a dict) of this wake-up."""
        raise NotImplementedError

    def reason_to_send(self, reading):
        """Why ``reading`` must go out now (a short word: 'first', 'interval', ...), or None."""
        raise NotImplementedError

    def encode_reading(self, reading):
        """The uplink payload of ``reading``."""
        raise NotImplementedError

    def reported(self, reading):
        """``reading`` is being sent: reset what the node counts from one report to the next."""
        raise NotImplementedError
