"""Sound-level module with an analog output on an ADC pin: the level in dB(A), as L = a + b·V.

Owns the conversion of the module's DC output to decibels with a calibrated line (``offset_db``
a, ``db_per_v`` b). The default is DFRobot SEN0232 (Gravity analog sound level meter: 30-130
dB(A) as 0.6-2.6 V, "dBA = V x 50"), which applies the A weighting and the time weighting
itself; calibrate a and b against a class 1 or 2 meter at two levels. It does not average
levels (energy averaging and percentiles are the node's job, ``nodes/noise.py``).
"""

import machine


class SoundLevelMeter:
    def __init__(self, adc_pin, offset_db=0.0, db_per_v=50.0, vref_mv=3300):
        self._adc = machine.ADC(machine.Pin(adc_pin))
        self._offset_db = offset_db
        # dB per ADC count: b x (vref / 65535) V.
        self._db_per_count = db_per_v * vref_mv / 1000.0 / 65535

    def level_db(self):
        return self._offset_db + self._adc.read_u16() * self._db_per_count
