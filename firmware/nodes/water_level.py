"""Water-level node: a submersible 4-20 mA pressure probe and a temperature probe; reports, early on a rise.

Owns the payload of profile ``edgegw/water-level`` (device_profiles/edgegw/water-level.yaml;
both must change together) on FPort 10, big-endian, 7 bytes:

    byte 0     flags: bit 0 rising (rise >= ``rise_mm`` since the previous measurement),
               bit 1 probe_fault (loop current outside 3.6..21 mA, NAMUR NE 43)
    bytes 1-2  water column above the probe, mm, uint16
    bytes 3-4  water temperature, 0.01 °C, int16 (-32768 when the probe does not answer)
    bytes 5-6  battery voltage, mV, uint16

or, on a probe fault, 5 bytes without the water column (flags, temperature, battery): no
number at all rather than a marker value the gateway could turn into a stage.

and the reporting policy: measure every ``measure_interval_s`` (or the report interval when
shorter), report every ``report_interval_s``, and at once on a rise of ``rise_mm`` or more
since the previous measurement (a flash flood), or when the probe fault appears or clears.
The stage (water level above a datum) is derived at the gateway from the probe's surveyed
level, so a re-survey needs no firmware change. Downlink: ``set_interval`` (the crisis mode of
a flood rule asks for 120 s). It does not own the probes (``sensors/current_loop.py``,
``sensors/ds18b20.py``) nor LoRaWAN.
"""

import struct

from nodes.base import Node, centi_c

DEFAULTS = {
    "report_interval_s": 900,
    "measure_interval_s": 300,
    "rise_mm": 50,
}


def encode(depth_mm, temperature_c, rising, battery_mv):
    """The 7-byte payload, or 5 bytes without depth when ``depth_mm`` is None (probe fault)."""
    flags = (1 if rising else 0) | (2 if depth_mm is None else 0)
    centi = centi_c(temperature_c)
    battery = max(0, min(0xFFFF, int(battery_mv)))
    if depth_mm is None:
        return struct.pack(">BhH", flags, centi, battery)
    return struct.pack(">BHhH", flags, max(0, min(0xFFFF, int(depth_mm))), centi, battery)


class WaterLevelNode(Node):
    def __init__(self, device, probe, thermometer, battery, config=None):
        super().__init__(device, DEFAULTS, config, "water-level")
        self.probe = probe
        self.thermometer = thermometer
        self.battery = battery
        self.previous_depth_mm = None  # of the previous measurement, sent or not
        self.last_fault = None  # probe fault state of the last report; None before the first

    def sleep_s(self):
        """How long main sleeps before the next cycle."""
        return min(self.config["measure_interval_s"], self.config["report_interval_s"])

    def measure(self):
        depth = self.probe.depth_mm()
        previous = self.previous_depth_mm
        self.previous_depth_mm = depth
        rising = depth is not None and previous is not None and depth - previous >= self.config["rise_mm"]
        return {
            "depth_mm": depth,
            "temperature_c": self.thermometer.temperature_c(),
            "rising": rising,
            "battery_mv": self.battery.voltage_mv(),
        }

    def reason_to_send(self, reading):
        """'first', 'rising', 'fault', 'interval' or None."""
        if self.last_fault is None:
            return "first"
        if reading["rising"]:
            return "rising"
        if (reading["depth_mm"] is None) != self.last_fault:
            return "fault"
        if self.since_report_s >= self.config["report_interval_s"]:
            return "interval"
        return None

    def encode_reading(self, reading):
        return encode(reading["depth_mm"], reading["temperature_c"], reading["rising"], reading["battery_mv"])

    def reported(self, reading):
        self.last_fault = reading["depth_mm"] is None
