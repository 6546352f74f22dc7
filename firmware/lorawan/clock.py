"""Millisecond ticks and sleeps: MicroPython's ``time.ticks_*``/``sleep_ms``, with CPython stand-ins.

Owns the one place that picks the clock: on a board ``ticks_ms``, ``ticks_diff``, ``ticks_add``
and ``sleep_ms`` are the port's own (ticks wrap, so differences and sums must go through
``ticks_diff``/``ticks_add``); under CPython (the tests, tooling) they are plain integers from
``time.monotonic``. Used by ``lorawan.device``, ``drivers.sx127x`` and ``main``. It does not own
any timing policy (RX delays, duty cycle: ``lorawan.device``).
"""

try:
    import time

    ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
    ticks_diff = time.ticks_diff  # type: ignore[attr-defined]
    ticks_add = time.ticks_add  # type: ignore[attr-defined]
    sleep_ms = time.sleep_ms  # type: ignore[attr-defined]
except AttributeError:  # CPython tests and tooling
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)  # type: ignore[attr-defined]

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b

    def sleep_ms(ms):
        time.sleep(ms / 1000)
