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

from nodes import commands

FPORT = 10
NO_TEMPERATURE = -32768

DEFAULTS = {
    "report_interval_s": 900,
    "measure_interval_s": 300,
    "rise_mm": 50,
}


def encode(depth_mm, temperature_c, rising, battery_mv):
    """The 7-byte payload, or 5 bytes without depth when ``depth_mm`` is None (probe fault)."""
    flags = (1 if rising else 0) | (2 if depth_mm is None else 0)
    if temperature_c is None:
        centi = NO_TEMPERATURE
    else:
        raw = temperature_c * 100
        centi = int(raw + 0.5) if raw >= 0 else -int(-raw + 0.5)
        centi = max(-32767, min(32767, centi))
    battery = max(0, min(0xFFFF, int(battery_mv)))
    if depth_mm is None:
        return struct.pack(">BhH", flags, centi, battery)
    return struct.pack(">BHhH", flags, max(0, min(0xFFFF, int(depth_mm))), centi, battery)


class WaterLevelNode:
    def __init__(self, device, probe, thermometer, battery, config=None):
        self.device = device
        self.probe = probe
        self.thermometer = thermometer
        self.battery = battery
        self.config = dict(DEFAULTS)
        if config:
            for key in config:
                if key not in DEFAULTS:
                    raise ValueError("unknown water-level setting: " + key)
                self.config[key] = config[key]
        self.previous_depth_mm = None  # of the previous measurement, sent or not
        self.last_fault = None  # probe fault state of the last report; None before the first
        self.since_report_s = 0

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

    def cycle(self, elapsed_s=0):
        """One wake-up: measure, send when a reason says so. Returns (reading, reason, downlink)."""
        self.since_report_s += elapsed_s
        reading = self.measure()
        reason = self.reason_to_send(reading)
        downlink = None
        if reason is not None:
            payload = encode(
                reading["depth_mm"], reading["temperature_c"], reading["rising"], reading["battery_mv"]
            )
            self.last_fault = reading["depth_mm"] is None
            self.since_report_s = 0
            downlink = self.device.send(FPORT, payload)
            if downlink is not None and downlink.fport:
                self.on_downlink(downlink.fport, downlink.payload)
        return reading, reason, downlink

    def on_downlink(self, fport, payload):
        """Apply a command; True when it was one for this node."""
        seconds = commands.interval_s(fport, payload)
        if seconds is None:
            return False
        self.config["report_interval_s"] = seconds
        return True
