"""Installer tools: the device registry today; keys, QR labels and node flashing later (issue 9)."""
