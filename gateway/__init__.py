"""edgegw: the edge-gateway agent of the metropolitan LoRaWAN monitoring network.

Data flow (ARCHITECTURE.md §1): radio → lorawan → codec → outbox → uplink.
"""

__version__ = "0.1.0"
