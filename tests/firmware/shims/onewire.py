"""Test shim of MicroPython's ``onewire``: a bus object, nothing on the wire."""


class OneWire:
    def __init__(self, pin):
        self.pin = pin
