"""Street-lamp controller node (class C): relay and PWM dimming by downlink, metered power and energy.

Owns the payload of profile ``edgegw/lamp-controller`` (device_profiles/edgegw/lamp-controller.yaml;
both must change together) on FPort 10, 8 bytes, big-endian:

    byte 0     flags: bit 0 relay closed (lamp powered), bit 1 commanded (a command was applied
               since the previous report)
    byte 1     dim level, %, uint8 (0 while the relay is open)
    bytes 2-3  active power over the last measurement period, 0.1 W, uint16
    bytes 4-7  energy since power-up, Wh, uint32 (wraps modulo 2^32)

the commands on FPort 20 (nodes/commands.py): ``set_interval``, ``set_dim`` (0 opens the relay:
a driver dimmed to zero still draws standby power), ``switch`` (on restores the last non-zero
level, or ``default_dim_pct``); and the reporting policy: a first report, one every
``report_interval_s``, and one right after a command so the gateway sees the new state (and the
power it draws) in the next uplink. The same commands come from the lamp's multicast groups
(``lorawan.multicast``: a district's dimming step is one frame for every lamp in it) through the
same ``on_downlink``; ``main`` then leaves the report to the next interval, since every member
obeyed the same frame at the same moment. Power comes from the pulses of a meter's S0 output
(``wh_per_pulse``, 1 Wh for a 1000 imp/kWh meter) over the time between measurements, so it
resolves 3.6 kJ / period (4 W over 900 s). It does not own the outputs (``sensors/lamp_output.py``),
the pulse counting (``sensors/pulse_counter.py``) nor the class C receive window (``lorawan``).
"""

import struct

from nodes import commands
from nodes.base import Node

WRAP = 0x100000000

DEFAULTS = {
    "report_interval_s": 900,
    "wh_per_pulse": 1.0,
    "default_dim_pct": 100,
}


def encode(relay_on, commanded, dim_pct, power_w, energy_wh):
    """The 8-byte payload."""
    return struct.pack(
        ">BBHI",
        (1 if relay_on else 0) | (2 if commanded else 0),
        max(0, min(100, int(dim_pct))) if relay_on else 0,
        max(0, min(0xFFFF, int(power_w * 10 + 0.5))),
        int(energy_wh) % WRAP,
    )


class LampControllerNode(Node):
    def __init__(self, device, output, meter, config=None):
        super().__init__(device, DEFAULTS, config, "lamp-controller")
        self.output = output
        self.meter = meter
        self.relay_on = False
        self.dim_pct = 0
        self.last_on_pct = self.config["default_dim_pct"]
        self.commanded = False
        self.pulses = 0  # meter pulses since power-up
        self.power_w = 0.0
        self.reports = 0
        self.output.set(False, 0)

    def _apply(self, on, pct):
        self.relay_on = on and pct > 0
        self.dim_pct = pct if self.relay_on else 0
        if self.relay_on:
            self.last_on_pct = pct
        self.output.set(self.relay_on, self.dim_pct)
        self.commanded = True

    def on_downlink(self, fport, payload):
        """Apply a command (class A or C window alike); True when it was one for this node."""
        if super().on_downlink(fport, payload):  # set_interval
            self.commanded = True
            return True
        if fport != commands.FPORT or len(payload) != 2:
            return False
        op, arg = payload[0], payload[1]
        if op == commands.SET_DIM and arg <= 100:
            self._apply(arg > 0, arg)
            return True
        if op == commands.SWITCH and arg in (0, 1):
            self._apply(arg == 1, self.last_on_pct)
            return True
        return False

    def measure(self, elapsed_s=0):
        got = self.meter.take()
        self.pulses = (self.pulses + got) % WRAP
        if elapsed_s > 0:
            self.power_w = got * self.config["wh_per_pulse"] * 3600.0 / elapsed_s
        return {
            "relay_on": self.relay_on,
            "dim_pct": self.dim_pct,
            "power_w": self.power_w,
            "energy_wh": self.pulses * self.config["wh_per_pulse"],
            "commanded": self.commanded,
        }

    def reason_to_send(self, reading):
        if self.reports == 0:
            return "first"
        if reading["commanded"]:
            return "command"
        if self.since_report_s >= self.config["report_interval_s"]:
            return "interval"
        return None

    def cycle(self, elapsed_s=0):
        """As ``Node.cycle``; the power is measured over ``elapsed_s``."""
        self.since_report_s += elapsed_s
        return self.decide(self.measure(elapsed_s))

    def encode_reading(self, reading):
        return encode(
            reading["relay_on"],
            reading["commanded"],
            reading["dim_pct"],
            reading["power_w"],
            reading["energy_wh"],
        )

    def reported(self, reading):
        self.commanded = False
        self.reports += 1
