"""Pulse input counted by interrupt: a loop detector's or a PIR counter's dry contact, an S0 meter.

Owns the IRQ handler (one falling edge = one pulse, edges closer than ``holdoff_ms`` after a
counted one are contact bounce) and a counter that wraps at 2^30 so the handler never
allocates (a MicroPython small int is 31 bits on 32-bit ports; allocating in a hard IRQ
raises MemoryError). ``take()`` returns the pulses since the previous ``take()``, modulo
2^30. It does not know what a pulse means (a passage, a watt-hour: the node does).
"""

import machine

try:
    import time

    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
except AttributeError:  # CPython tooling
    import time

    def _ticks_ms():
        return int(time.monotonic() * 1000)  # type: ignore[attr-defined]  # CPython only

    def _ticks_diff(a, b):
        return a - b


MASK = 0x3FFFFFFF


class PulseCounter:
    def __init__(self, pin, holdoff_ms=50, pull_up=True, ticks_ms=None):
        pull = machine.Pin.PULL_UP if pull_up else machine.Pin.PULL_DOWN
        self._pin = machine.Pin(pin, machine.Pin.IN, pull)
        self._holdoff_ms = holdoff_ms
        self._ticks_ms = ticks_ms or _ticks_ms
        self._count = 0
        self._taken = 0
        self._last_ms = None
        self._pin.irq(handler=self._edge, trigger=machine.Pin.IRQ_FALLING)

    def _edge(self, pin):
        now = self._ticks_ms()
        if self._last_ms is not None and _ticks_diff(now, self._last_ms) < self._holdoff_ms:
            return
        self._last_ms = now
        self._count = (self._count + 1) & MASK

    def take(self):
        """Pulses counted since the previous call (the counter's wrap is undone here)."""
        count = self._count  # one read: the IRQ may fire at any time
        delta = (count - self._taken) & MASK
        self._taken = count
        return delta
