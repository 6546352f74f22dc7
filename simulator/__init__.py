"""edgegw-sim: a LoRaWAN fleet simulator that feeds the agent through its real interfaces.

Builds real PHYPayloads (MIC, encryption) and real Semtech UDP datagrams, so the
agent under test cannot tell the simulator from a packet forwarder.
"""
