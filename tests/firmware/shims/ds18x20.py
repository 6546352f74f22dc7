"""Test shim of MicroPython's ``ds18x20``: one probe whose reading is ``sim.state['temperature_c']``.

A real DS18B20 reports in steps of 0.0625 °C (12 bit); the shim rounds to that step too.
"""

import sim

ROM = b"\x28\x01\x02\x03\x04\x05\x06\x07"


class DS18X20:
    def __init__(self, bus):
        self.bus = bus

    def scan(self):
        return [ROM] if sim.state["probe"] else []

    def convert_temp(self):
        pass

    def read_temp(self, rom):
        return round(sim.state["temperature_c"] * 16) / 16
