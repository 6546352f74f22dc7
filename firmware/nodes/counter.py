"""Bike / pedestrian counter node: two pulse inputs (in, out) counted by interrupt; a report per interval.

Owns the payload of profile ``edgegw/counter`` (device_profiles/edgegw/counter.yaml; both
must change together) on FPort 10, 15 bytes, big-endian:

    byte 0       flags: bit 0 restarted (first report since power-up: totals start again at 0)
    bytes 1-2    passages in, since the previous report, uint16 (saturates at 65535)
    bytes 3-4    passages out, since the previous report, uint16
    bytes 5-8    total in since power-up, uint32, wraps modulo 2^32
    bytes 9-12   total out since power-up, uint32, wraps modulo 2^32
    bytes 13-14  battery voltage, mV, uint16

and the reporting policy: a first report at start, then one every ``report_interval_s``
(hourly bins are the national standard for bike counts; 900 s gives quarter hours). The
per-report counts carry the data; the totals let the gateway recover counts of a lost
report (difference of totals modulo 2^32) and the restart flag marks a power-up. Downlink:
``set_interval``. It does not own the IRQ counting (``sensors/pulse_counter.py``).
"""

import struct

from nodes.base import Node

WRAP = 0x100000000

DEFAULTS = {"report_interval_s": 900}


def encode(count_in, count_out, total_in, total_out, restarted, battery_mv):
    """The 15-byte payload."""
    return struct.pack(
        ">BHHIIH",
        1 if restarted else 0,
        min(0xFFFF, count_in),
        min(0xFFFF, count_out),
        total_in % WRAP,
        total_out % WRAP,
        max(0, min(0xFFFF, int(battery_mv))),
    )


class CounterNode(Node):
    def __init__(self, device, counter_in, counter_out, battery, config=None):
        super().__init__(device, DEFAULTS, config, "counter")
        self.counter_in = counter_in
        self.counter_out = counter_out
        self.battery = battery
        self.pending_in = 0  # counted since the last report
        self.pending_out = 0
        self.total_in = 0  # since power-up, modulo 2^32
        self.total_out = 0
        self.reports = 0

    def measure(self):
        got_in = self.counter_in.take()
        got_out = self.counter_out.take()
        self.pending_in += got_in
        self.pending_out += got_out
        self.total_in = (self.total_in + got_in) % WRAP
        self.total_out = (self.total_out + got_out) % WRAP
        return {
            "count_in": self.pending_in,
            "count_out": self.pending_out,
            "total_in": self.total_in,
            "total_out": self.total_out,
            "battery_mv": self.battery.voltage_mv(),
        }

    def reason_to_send(self, reading):
        if self.reports == 0:
            return "first"
        if self.since_report_s >= self.config["report_interval_s"]:
            return "interval"
        return None

    def encode_reading(self, reading):
        return encode(
            reading["count_in"],
            reading["count_out"],
            reading["total_in"],
            reading["total_out"],
            self.reports == 0,
            reading["battery_mv"],
        )

    def reported(self, reading):
        self.pending_in = 0
        self.pending_out = 0
        self.reports += 1
