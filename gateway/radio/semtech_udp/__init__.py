"""Semtech UDP packet-forwarder front end: ``packets`` (pure codec) and ``backend`` (the UDP server).

Import the backend through ``gateway.radio.open_backend("semtech-udp://HOST:PORT")``.
"""
