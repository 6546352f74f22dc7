"""Serial LoRa modem front end: RAK RUI3 modules in LoRa P2P mode over a UART/USB serial port.

``protocol.py`` is the pure line codec; ``backend.py`` is the pyserial transport.
"""
