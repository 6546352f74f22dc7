"""Battery voltage through a resistor divider on an ADC pin, in mV.

Owns the conversion ``read_u16`` (0..65535 over the ADC reference) x divider ratio. The
reference (3.3 V) and ratio (2.0 for two equal resistors) are board facts from the config.
"""

import machine


class Battery:
    def __init__(self, adc_pin, divider_ratio=2.0, vref_mv=3300):
        self._adc = machine.ADC(machine.Pin(adc_pin))
        self._scale = vref_mv * divider_ratio / 65535

    def voltage_mv(self):
        return int(self._adc.read_u16() * self._scale + 0.5)
