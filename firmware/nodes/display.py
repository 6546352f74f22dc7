"""Bike-count display totem (class C): shows counts sent by the gateway; an hourly status heartbeat.

Owns the commands on FPort 20 (nodes/commands.py) of profile ``edgegw/display``
(device_profiles/edgegw/display.yaml; both must change together):

    10 ll vvvvvvvv          show_count: value (uint32, shown up to 8 digits) on line ll
    11 tttttttt yyyyyyyy    show_counts: today on line 0, year to date on line 1 (what the
                            gateway's bike aggregate sends, rules ``display``)

and the heartbeat on FPort 10, 11 bytes, big-endian:

    byte 0     flags: bit 0 on_mains (0: running on the backup battery)
    bytes 1-4  value shown on line 0, uint32 (0xFFFFFFFF: nothing shown yet)
    bytes 5-8  value shown on line 1, uint32 (same)
    bytes 9-10 battery voltage, mV, uint16

sent first at start and then every ``report_interval_s``, and at once when mains is lost or
comes back. It does not own the LED driver (``sensors/max7219.py``) nor the class C receive
window (``lorawan``).
"""

import struct

from nodes import commands
from nodes.base import Node

NOTHING = 0xFFFFFFFF
MAX_VALUE = 99999999

DEFAULTS = {"report_interval_s": 3600}


def encode(on_mains, shown, battery_mv):
    """The 11-byte heartbeat; ``shown`` lists the value on each line (None: nothing shown)."""
    line0 = NOTHING if shown[0] is None else shown[0]
    line1 = NOTHING if len(shown) < 2 or shown[1] is None else shown[1]
    return struct.pack(">BIIH", 1 if on_mains else 0, line0, line1, max(0, min(0xFFFF, int(battery_mv))))


class DisplayNode(Node):
    def __init__(self, device, screen, mains, battery, config=None):
        super().__init__(device, DEFAULTS, config, "display")
        self.screen = screen
        self.mains = mains
        self.battery = battery
        self.shown = [None] * screen.chips
        self.last_mains = None

    def show(self, line, value):
        if not 0 <= line < len(self.shown) or value > MAX_VALUE:
            return False
        self.screen.show(line, value)
        self.shown[line] = value
        return True

    def on_downlink(self, fport, payload):
        """Apply a command (class A or C window alike); True when it was one for this node.

        The totem takes no ``set_interval``: its heartbeat interval is a setting only.
        """
        if fport != commands.FPORT or not payload:
            return False
        if payload[0] == commands.SHOW_COUNT and len(payload) == 6:
            return self.show(payload[1], commands.uint32_be(payload, 2))
        if payload[0] == commands.SHOW_COUNTS and len(payload) == 9:
            today = commands.uint32_be(payload, 1)
            year = commands.uint32_be(payload, 5)
            if today > MAX_VALUE or year > MAX_VALUE or len(self.shown) < 2:
                return False
            return self.show(0, today) and self.show(1, year)
        return False

    def measure(self):
        return {
            "on_mains": self.mains.on_mains(),
            "shown": list(self.shown),
            "battery_mv": self.battery.voltage_mv(),
        }

    def reason_to_send(self, reading):
        if self.last_mains is None:
            return "first"
        if reading["on_mains"] != self.last_mains:
            return "mains"
        if self.since_report_s >= self.config["report_interval_s"]:
            return "interval"
        return None

    def encode_reading(self, reading):
        return encode(reading["on_mains"], reading["shown"], reading["battery_mv"])

    def reported(self, reading):
        self.last_mains = reading["on_mains"]
