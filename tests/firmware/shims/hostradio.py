"""Test shim of the radio driver: every transmission and receive window goes to the host test.

The host (tests/firmware/test_micropython_e2e.py) plays the gateway: it answers each receive
window with the downlink the gateway would send in it, or nothing. Time is virtual
(``VirtualClock``) so duty-cycle waits and RX delays cost no real time.
"""

import json

import host


class VirtualClock:
    def __init__(self):
        self.now_ms = 0
        self.slept_ms = 0

    def ticks_ms(self):
        return self.now_ms

    def sleep_ms(self, ms):
        self.now_ms += ms
        self.slept_ms += ms


class HostRadio:
    def __init__(self, clock, airtime):
        self.clock = clock
        self._airtime = airtime

    def transmit(self, phy, freq_hz, sf, bw_hz, power_dbm):
        self.clock.now_ms += self._airtime(sf, bw_hz, len(phy)) // 1000
        host.send(
            json.dumps(
                {
                    "tx": phy.hex(),
                    "freq_hz": freq_hz,
                    "sf": sf,
                    "bw_hz": bw_hz,
                    "power_dbm": power_dbm,
                    "at_ms": self.clock.now_ms,
                }
            )
        )
        return self.clock.now_ms

    def receive(self, freq_hz, sf, bw_hz, open_at_ms, timeout_ms):
        self.clock.now_ms = max(self.clock.now_ms, open_at_ms)
        host.send(json.dumps({"rx": {"freq_hz": freq_hz, "sf": sf, "bw_hz": bw_hz, "at_ms": open_at_ms}}))
        answer = json.loads(host.recv())
        self.clock.now_ms += timeout_ms
        phy = answer.get("phy")
        return None if phy is None else bytes.fromhex(phy)
