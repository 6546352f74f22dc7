"""Ball tilt switch (SW-520D) on a GPIO with pull-up: closed (reads 0) when upright.

Owns one fact: a container lifted for emptying, or a lid flipped open, opens the switch.
"""

import machine


class TiltSwitch:
    def __init__(self, pin):
        self._pin = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)

    def tilted(self):
        return self._pin.value() == 1
