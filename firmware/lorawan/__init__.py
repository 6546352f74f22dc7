"""LoRaWAN 1.0.x class A and C end-device core for MicroPython (edgegw's own sensor nodes).

Owns the MAC-layer frames and keys: AES-128 (``aes``), AES-CMAC (``cmac``), frame building and
parsing (``frames``), EU868 defaults and airtime (``region``), the persisted state (``storage``),
the class C multicast groups (``multicast``) and the device state machine (``device``). It does
not own the radio: a driver object with ``transmit`` and ``receive`` (and ``listen`` for class C)
is handed in (see ``device.Device``).

Written for MicroPython (also runs under CPython for tooling): no dataclasses, no typing at
run time, ``int.to_bytes`` with positional arguments only.
"""
