"""Container fill-level node: measure distance, temperature and tilt; decide; send one 7-byte frame.

Owns the payload format of profile ``edgegw/fill-level`` (device_profiles/edgegw/fill-level.yaml;
both must change together) on FPort 10, big-endian:

    byte 0     flags: bit 0 tilt, bit 1 fire_alarm, bit 2 echo_missing (other bits 0)
    bytes 1-2  distance, mm, uint16 (65535 when there was no echo)
    bytes 3-4  temperature, 0.01 °C, int16 (-32768 when the probe does not answer)
    bytes 5-6  battery voltage, mV, uint16

and the reporting policy: a report every ``report_interval_s``, and an early one when the tilt
state changes, when the temperature reaches ``fire_alarm_c``, or when the distance moved by
``distance_delta_mm`` since the last report. Measurements happen every
``measure_interval_s``; between them the board sleeps (``main`` on the board, not here).
Downlink: ``set_interval`` (nodes/commands.py) sets ``report_interval_s``.
It does not own LoRaWAN (``lorawan.device``) nor the sensor protocols (``sensors``).
"""

import struct

from nodes.base import Node, centi_c

NO_DISTANCE = 0xFFFF

DEFAULTS = {
    "report_interval_s": 3600,
    "measure_interval_s": 900,
    "fire_alarm_c": 60.0,
    "distance_delta_mm": 150,
}


def encode(distance_mm, temperature_c, tilt, fire_alarm, battery_mv):
    """The 7-byte payload; ``distance_mm``/``temperature_c`` None when the sensor gave nothing."""
    flags = (1 if tilt else 0) | (2 if fire_alarm else 0) | (4 if distance_mm is None else 0)
    distance = NO_DISTANCE if distance_mm is None else max(0, min(0xFFFE, int(distance_mm)))
    battery = max(0, min(0xFFFF, int(battery_mv)))
    return struct.pack(">BHhH", flags, distance, centi_c(temperature_c), battery)


class FillLevelNode(Node):
    """One node: its sensors (objects with the ``sensors`` drivers' methods), its device, its config."""

    def __init__(self, device, ranger, thermometer, tilt, battery, config=None):
        super().__init__(device, DEFAULTS, config, "fill-level")
        self.ranger = ranger
        self.thermometer = thermometer
        self.tilt = tilt
        self.battery = battery
        self.last_report = None  # (distance_mm, tilt) of the last frame sent

    def measure(self):
        temperature_c = self.thermometer.temperature_c()
        # The speed of sound needs the air temperature; 20 °C when the probe is missing.
        distance_mm = self.ranger.distance_mm(20.0 if temperature_c is None else temperature_c)
        tilt = self.tilt.tilted()
        fire = temperature_c is not None and temperature_c >= self.config["fire_alarm_c"]
        return {
            "distance_mm": distance_mm,
            "temperature_c": temperature_c,
            "tilt": tilt,
            "fire_alarm": fire,
            "battery_mv": self.battery.voltage_mv(),
        }

    def reason_to_send(self, reading):
        """Why this reading must go out now ('first', 'interval', 'tilt', 'fire', 'distance'), or None."""
        if self.last_report is None:
            return "first"
        if reading["fire_alarm"]:
            return "fire"
        last_distance, last_tilt = self.last_report
        if reading["tilt"] != last_tilt:
            return "tilt"
        if self.since_report_s >= self.config["report_interval_s"]:
            return "interval"
        d = reading["distance_mm"]
        if (
            d is not None
            and last_distance is not None
            and abs(d - last_distance) >= self.config["distance_delta_mm"]
        ):
            return "distance"
        return None

    def encode_reading(self, reading):
        return encode(
            reading["distance_mm"],
            reading["temperature_c"],
            reading["tilt"],
            reading["fire_alarm"],
            reading["battery_mv"],
        )

    def reported(self, reading):
        self.last_report = (reading["distance_mm"], reading["tilt"])
