"""Mains-present input: the power supply's "power good" through an optocoupler on a GPIO.

Owns one fact: is the node running on mains (True) or on its backup battery (False). The
optocoupler pulls the pin low while mains is present (``active_low``, the usual wiring).
"""

import machine


class MainsSense:
    def __init__(self, pin, active_low=True):
        self._pin = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        self._active_low = active_low

    def on_mains(self):
        level = self._pin.value()
        return level == 0 if self._active_low else level == 1
