"""Noise node: sample a sound-level module every second; report LAeq, LAmax and LA90 per interval.

Owns the payload of profile ``edgegw/noise`` (device_profiles/edgegw/noise.yaml; both must
change together) on FPort 10, 11 bytes, big-endian:

    byte 0      flags: bit 0 loud (LAeq of the interval >= ``loud_laeq_db``)
    bytes 1-2   LAeq over the interval, 0.1 dB, uint16
    bytes 3-4   LAmax (highest sample), 0.1 dB, uint16
    bytes 5-6   LA90 (level exceeded 90 % of the time), 0.1 dB, uint16, 0.5 dB steps
    bytes 7-8   period covered, s, uint16
    bytes 9-10  battery voltage, mV, uint16

the acoustics (LAeq = 10 log10 of the mean of 10^(L/10): an energy average, never a mean of
dB; LA90 from a 0.5 dB histogram, so memory stays fixed whatever the interval) and the
reporting policy: a report every ``report_interval_s``, a first one ``loud_min_s`` after
start, and an early one when the running LAeq reaches ``loud_laeq_db`` after at least
``loud_min_s`` of samples, once per loud episode (not again until a report is quiet).
Downlink: ``set_interval`` (nodes/commands.py). It does not own the ADC conversion
(``sensors/sound_level.py``) nor LoRaWAN.
"""

import math
import struct

from nodes.base import Node

BIN_DB = 0.5
BINS = 301  # 0 .. 150 dB

DEFAULTS = {
    "report_interval_s": 900,
    "sample_period_s": 1,
    "loud_laeq_db": 70.0,
    "loud_min_s": 60,
}


def _tenths(db):
    return max(0, min(0xFFFF, int(db * 10 + 0.5)))


def encode(laeq_db, lamax_db, la90_db, period_s, loud, battery_mv):
    """The 11-byte payload."""
    return struct.pack(
        ">BHHHHH",
        1 if loud else 0,
        _tenths(laeq_db),
        _tenths(lamax_db),
        _tenths(la90_db),
        max(0, min(0xFFFF, int(period_s))),
        max(0, min(0xFFFF, int(battery_mv))),
    )


class LevelStats:
    """Energy sum, maximum and a histogram of the samples of one interval."""

    def __init__(self):
        self.histogram = bytearray(2 * BINS)  # uint16 counts, saturating
        self.reset()

    def reset(self):
        self.count = 0
        self.energy = 0.0
        self.max_db = None
        for i in range(len(self.histogram)):
            self.histogram[i] = 0

    def add(self, level_db):
        self.count += 1
        self.energy += math.pow(10.0, level_db / 10.0)
        if self.max_db is None or level_db > self.max_db:
            self.max_db = level_db
        b = max(0, min(BINS - 1, int(level_db / BIN_DB)))
        n = (self.histogram[2 * b] << 8) | self.histogram[2 * b + 1]
        if n < 0xFFFF:
            n += 1
            self.histogram[2 * b] = n >> 8
            self.histogram[2 * b + 1] = n & 0xFF

    def laeq_db(self):
        return 10.0 * math.log10(self.energy / self.count)

    def percentile_db(self, exceeded_pct):
        """L_N: the lower edge of the bin holding the sample exceeded by N % of the samples."""
        rank = self.count * (100 - exceeded_pct) // 100  # index in the ascending order
        seen = 0
        for b in range(BINS):
            seen += (self.histogram[2 * b] << 8) | self.histogram[2 * b + 1]
            if seen > rank:
                return b * BIN_DB
        return (BINS - 1) * BIN_DB


class NoiseNode(Node):
    def __init__(self, device, meter, battery, config=None):
        super().__init__(device, DEFAULTS, config, "noise")
        self.meter = meter
        self.battery = battery
        self.stats = LevelStats()
        self.reports = 0
        self.loud_reported = False

    def sample(self):
        """One ADC sample; call every ``sample_period_s`` (a timer or the main loop), then ``cycle()``."""
        self.stats.add(self.meter.level_db())
        # Time is counted in samples, not passed to cycle().
        self.since_report_s = self.stats.count * self.config["sample_period_s"]

    def measure(self):
        """The interval so far (LA90 left out: it walks the histogram, done only for a report)."""
        if self.stats.count == 0:
            return None
        laeq = self.stats.laeq_db()
        return {
            "laeq_db": laeq,
            "lamax_db": self.stats.max_db,
            "period_s": self.since_report_s,
            "loud": laeq >= self.config["loud_laeq_db"],
        }

    def reason_to_send(self, reading):
        """'first', 'loud', 'interval' or None."""
        if reading is None:
            return None
        elapsed = reading["period_s"]
        if elapsed >= self.config["report_interval_s"]:
            return "first" if self.reports == 0 else "interval"
        if elapsed < self.config["loud_min_s"]:
            return None
        if self.reports == 0:
            return "first"
        if reading["loud"] and not self.loud_reported:
            return "loud"
        return None

    def encode_reading(self, reading):
        # LA90 walks the histogram: computed only for a report, and kept in the reading returned.
        reading["la90_db"] = self.stats.percentile_db(90)
        reading["battery_mv"] = self.battery.voltage_mv()
        return encode(
            reading["laeq_db"],
            reading["lamax_db"],
            reading["la90_db"],
            reading["period_s"],
            reading["loud"],
            reading["battery_mv"],
        )

    def reported(self, reading):
        self.stats.reset()
        self.reports += 1
        self.loud_reported = reading["loud"]
