"""DS18B20 one-wire temperature probe via MicroPython's ``onewire`` and ``ds18x20`` modules.

Owns: find the probe, start a conversion, wait the 750 ms of a 12-bit conversion (DS18B20
datasheet, tCONV), read °C. Returns None when no probe answers (a cut cable must not stop the
node from reporting its distance).
"""

import time

import ds18x20
import machine
import onewire

CONVERSION_MS = 750


class Ds18b20:
    def __init__(self, data_pin, sleep_ms=None):
        self._bus = ds18x20.DS18X20(onewire.OneWire(machine.Pin(data_pin)))
        self._sleep_ms = sleep_ms or time.sleep_ms

    def temperature_c(self):
        try:
            roms = self._bus.scan()
            if not roms:
                return None
            self._bus.convert_temp()
            self._sleep_ms(CONVERSION_MS)
            return self._bus.read_temp(roms[0])
        except OSError:  # CRC error or bus fault: report "no reading", not a crash
            return None
