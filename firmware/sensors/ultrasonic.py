"""Ultrasonic ranger with trigger/echo pins (JSN-SR04T waterproof, HC-SR04): distance in mm.

Owns the ping (10 µs trigger pulse, echo pulse timed with ``machine.time_pulse_us``), the
speed of sound corrected for air temperature, and a median of several pings (a single ping
off a container wall or a falling bag is common; the median rejects it). It does not decide
what a distance means (the node application does).
"""

import time

import machine

ECHO_TIMEOUT_US = 30000  # ~5 m round trip at 20 °C; JSN-SR04T range is 0.25..4.5 m
PINGS = 5
PING_GAP_MS = 60  # JSN-SR04T datasheet: >= 50 ms between measurement cycles


def speed_of_sound_mm_per_us(temperature_c):
    """c = 331.3 + 0.606 T m/s in dry air (the usual linearisation around 0 °C), in mm/µs."""
    return (331.3 + 0.606 * temperature_c) / 1000.0


def distance_mm_from_echo(echo_us, temperature_c):
    """One-way distance for a round-trip echo time."""
    return int(echo_us * speed_of_sound_mm_per_us(temperature_c) / 2 + 0.5)


class Ultrasonic:
    def __init__(self, trig_pin, echo_pin, sleep_ms=None):
        self._trig = machine.Pin(trig_pin, machine.Pin.OUT, value=0)
        self._echo = machine.Pin(echo_pin, machine.Pin.IN)
        self._sleep_ms = sleep_ms or time.sleep_ms

    def ping_us(self):
        """Round-trip echo time in µs, or None when no echo came back in time."""
        self._trig.value(0)
        time.sleep_us(5)
        self._trig.value(1)
        time.sleep_us(10)
        self._trig.value(0)
        echo_us = machine.time_pulse_us(self._echo, 1, ECHO_TIMEOUT_US)
        return echo_us if echo_us > 0 else None  # -1: no pulse start, -2: pulse too long

    def distance_mm(self, temperature_c=20.0, pings=PINGS):
        """Median distance of ``pings`` pings, or None when fewer than half of them echoed."""
        echoes = []
        for i in range(pings):
            if i:
                self._sleep_ms(PING_GAP_MS)
            echo = self.ping_us()
            if echo is not None:
                echoes.append(echo)
        if len(echoes) * 2 < pings:
            return None
        echoes.sort()
        return distance_mm_from_echo(echoes[len(echoes) // 2], temperature_c)
