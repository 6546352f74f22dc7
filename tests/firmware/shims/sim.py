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
"""pin id -> callable returning the level an input pin reads."""
echoes_us = []
"""Every echo time machine.time_pulse_us produced (what the simulated ranger 'measured')."""
