"""4-20 mA pressure transducer (submersible level probe) through a shunt resistor on an ADC pin.

Owns: the loop current from the shunt voltage (oversampled), the NAMUR NE 43 fault band
(below 3.6 mA: wire break or dead transmitter; above 21 mA: short or failure), and the
linear scale 4 mA = 0, 20 mA = ``range_mm`` of water column above the probe (a 0-0.5 bar
vented probe is a 0-5099 mm column: 1 bar = 10.197 m of fresh water). A 150 ohm shunt gives
0.6-3.0 V for 4-20 mA, inside a 3.3 V ADC. It does not know the probe's level in the river
(the gateway derives the stage from the installation's reference level).

On batteries the loop supply (a 3.3 V to 12-24 V boost converter) is switched on only to
measure: ``power_pin`` drives its enable input and ``settle_ms`` lets the transmitter's output
settle (its datasheet's response time; 200 ms is common for piezoresistive probes).
"""

import time

import machine

FAULT_LOW_MA = 3.6
FAULT_HIGH_MA = 21.0


class LevelTransmitter:
    def __init__(
        self,
        adc_pin,
        range_mm,
        shunt_ohm=150.0,
        vref_mv=3300,
        samples=16,
        power_pin=None,
        settle_ms=200,
        sleep_ms=None,
    ):
        self._adc = machine.ADC(machine.Pin(adc_pin))
        self._power = None if power_pin is None else machine.Pin(power_pin, machine.Pin.OUT, value=0)
        self._settle_ms = settle_ms
        self._sleep_ms = sleep_ms or time.sleep_ms
        self._range_mm = range_mm
        self._ma_per_count = vref_mv / 65535 / shunt_ohm
        self._samples = samples

    def current_ma(self):
        if self._power is not None:
            self._power.value(1)
            self._sleep_ms(self._settle_ms)
        total = 0
        for _ in range(self._samples):
            total += self._adc.read_u16()
        if self._power is not None:
            self._power.value(0)
        return total * self._ma_per_count / self._samples

    def depth_mm(self):
        """Water column above the probe in mm, or None when the loop current says 'fault'."""
        ma = self.current_ma()
        if ma < FAULT_LOW_MA or ma > FAULT_HIGH_MA:
            return None
        # 3.6..4 mA (and 20..21 mA) is the transmitter's own under/over range: clamp.
        ma = min(20.0, max(4.0, ma))
        return int((ma - 4.0) * self._range_mm / 16.0 + 0.5)
