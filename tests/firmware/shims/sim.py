"""The simulated world the shims read: sensor values set by the test scenario (MicroPython)."""

state = {
    "distance_mm": 1000,
    "temperature_c": 20.0,
    "tilt": False,
    "battery_mv": 3000,
    "echo": True,
    "probe": True,
}
pins = {}
"""pin id -> callable returning the level an input pin reads; ("adc", pin id) -> read_u16 value."""
echoes_us = []
"""Every echo time machine.time_pulse_us produced (what the simulated ranger 'measured')."""
levels = {}
"""pin id -> the last level the firmware drove on an output pin."""
pwm = {}
"""pin id -> the PWM duty (0..65535) the firmware set."""
irqs = {}
"""pin id -> (handler, pin) registered with Pin.irq."""
spi_bytes = []
"""Bytes written on SPI since the last chip-select latch (a device model consumes them)."""
on_rising = {}
"""pin id -> callable run when the firmware drives that output pin from 0 to 1 (a CS latch)."""


def edge(pin_id):
    """One edge on an input pin: run the firmware's IRQ handler as the hardware would."""
    handler, pin = irqs[pin_id]
    handler(pin)
