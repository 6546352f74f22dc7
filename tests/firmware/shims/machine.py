"""Test shim of MicroPython's ``machine`` (Pin, ADC, time_pulse_us), driven by ``sim``.

Written in MicroPython for the WebAssembly port, which has no ``machine`` module. The echo of
the ultrasonic ranger is produced from the simulated distance and air temperature with the
physics the firmware inverts (c = 331.3 + 0.606 T m/s), rounded to whole µs as the real
``time_pulse_us`` counts.
"""

import sim


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, pin_id, mode=-1, pull=-1, value=None):
        self.id = pin_id
        self.mode = mode
        self._level = value or 0

    def value(self, level=None):
        if level is not None:
            self._level = level
            return None
        reader = sim.pins.get(self.id)
        return reader() if reader is not None else self._level


class ADC:
    def __init__(self, pin):
        self.pin = pin

    def read_u16(self):
        reader = sim.pins.get(("adc", self.pin.id))
        return reader() if reader is not None else 0


def time_pulse_us(pin, level, timeout_us):
    if not sim.state["echo"]:
        return -1
    c_mm_per_us = (331.3 + 0.606 * sim.state["temperature_c"]) / 1000.0
    echo = int(2 * sim.state["distance_mm"] / c_mm_per_us + 0.5)
    if echo > timeout_us:
        return -2
    sim.echoes_us.append(echo)
    return echo
