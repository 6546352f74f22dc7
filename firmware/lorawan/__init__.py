"""LoRaWAN 1.0.x class A end-device core for MicroPython (edgegw's own sensor nodes).

Owns the MAC-layer frames and keys: AES-128 (``aes``), AES-CMAC (``cmac``), frame building and
parsing (``frames``), EU868 defaults and airtime (``region``), the persisted state (``storage``)
and the device state machine (``device``). It does not own the radio: a driver object with
``transmit`` and ``receive`` is handed in (see ``device.Device``).

Written for MicroPython (also runs under CPython for tooling): no dataclasses, no typing at
run time, ``int.to_bytes`` with positional arguments only.
"""
