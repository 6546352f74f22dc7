"""Test shim of MicroPython's ``machine`` (Pin, ADC, PWM, SPI, time_pulse_us), driven by ``sim``.

Written in MicroPython for the WebAssembly port, which has no ``machine`` module. The echo of
the ultrasonic ranger is produced from the simulated distance and air temperature with the
physics the firmware inverts (c = 331.3 + 0.606 T m/s), rounded to whole µs as the real
``time_pulse_us`` counts. Output levels, PWM duties and SPI bytes are recorded in ``sim`` so a
scenario can check what the firmware drove; ``Pin.irq`` handlers are kept in ``sim.irqs`` so a
scenario can play edges into them (``sim.edge``).
"""

import sim


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 1
    IRQ_RISING = 2

    def __init__(self, pin_id, mode=-1, pull=-1, value=None):
        self.id = pin_id
        self.mode = mode
        self._level = value or 0
        if value is not None:
            sim.levels[pin_id] = self._level

    def value(self, level=None):
        if level is not None:
            rising = level and not self._level
            self._level = 1 if level else 0
            sim.levels[self.id] = self._level
            if rising and self.id in sim.on_rising:
                sim.on_rising[self.id]()
            return None
        reader = sim.pins.get(self.id)
        return reader() if reader is not None else self._level

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING):
        sim.irqs[self.id] = (handler, self)


class ADC:
    def __init__(self, pin):
        self.pin = pin

    def read_u16(self):
        reader = sim.pins.get(("adc", self.pin.id))
        return reader() if reader is not None else 0


class PWM:
    def __init__(self, pin, freq=1000, duty_u16=0):
        self.pin = pin
        self._freq = freq
        self.duty_u16(duty_u16)

    def freq(self, hz=None):
        if hz is None:
            return self._freq
        self._freq = hz
        return None

    def duty_u16(self, duty=None):
        if duty is None:
            return sim.pwm[self.pin.id]
        if not 0 <= duty <= 65535:
            raise ValueError("duty out of range")
        sim.pwm[self.pin.id] = duty
        return None


class SPI:
    def __init__(self, bus_id, baudrate=1000000, polarity=0, phase=0, sck=None, mosi=None, miso=None):
        self.bus_id = bus_id
        self.baudrate = baudrate

    def write(self, buf):
        sim.spi_bytes.extend(buf)


def time_pulse_us(pin, level, timeout_us):
    if not sim.state["echo"]:
        return -1
    c_mm_per_us = (331.3 + 0.606 * sim.state["temperature_c"]) / 1000.0
    echo = int(2 * sim.state["distance_mm"] / c_mm_per_us + 0.5)
    if echo > timeout_us:
        return -2
    sim.echoes_us.append(echo)
    return echo
