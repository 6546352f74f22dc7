"""The LoRaWAN 1.0.x MAC stage: parse frames, authenticate and decrypt them, track sessions.

Pure wire and crypto modules (``phy``, ``crypto``, ``fcnt``) plus the session table
(``sessions``). It does not own radio I/O, payload decoding or storage.
"""
