"""Sensor drivers for edgegw nodes (MicroPython ``machine`` API); one module per sensor."""
