"""Lamp outputs of a street-light controller: a relay on the driver's mains and a PWM dim signal.

Owns the GPIO level of the relay (through a transistor; ``relay_active_low`` for modules that
switch on a low input) and the PWM duty of the LED driver's dimming input (a PWM-dimmable
driver, or a 1-10 V interface fed by the filtered PWM: duty = level %). It does not decide the
level (the node does) nor speak DALI.
"""

import machine


class LampOutput:
    def __init__(self, relay_pin, pwm_pin, pwm_freq_hz=1000, relay_active_low=False):
        self._active_low = relay_active_low
        self._relay = machine.Pin(relay_pin, machine.Pin.OUT, value=1 if relay_active_low else 0)
        self._pwm = machine.PWM(machine.Pin(pwm_pin), freq=pwm_freq_hz, duty_u16=0)

    def set(self, on, percent):
        """Relay on/off and dim level 0..100 %; the dim signal is held at 0 while the relay is open."""
        percent = max(0, min(100, int(percent)))
        duty = percent * 65535 // 100 if on else 0
        self._pwm.duty_u16(duty)
        self._relay.value((0 if on else 1) if self._active_low else (1 if on else 0))
