"""Radio drivers for the node firmware (MicroPython): the SX127x LoRa transceiver."""
