"""Test shim of the radio for class C (MicroPython): ``hostradio.HostRadio`` plus ``listen``.

``listen(freq_hz, sf, bw_hz, until_ms)`` asks the host test what arrives on the air while the
receiver stays open; the host answers ``{"phy": hex or null, "after_ms": n}`` and the virtual
clock moves to the frame's arrival (or to ``until_ms`` when nothing came).
"""

import json

import host
from hostradio import HostRadio


class ClassCRadio(HostRadio):
    def __init__(self, clock, airtime):
        HostRadio.__init__(self, clock, airtime)
        self.last_snr_db = None

    def listen(self, freq_hz, sf, bw_hz, until_ms):
        host.send(
            json.dumps({"listen": {"freq_hz": freq_hz, "sf": sf, "bw_hz": bw_hz, "until_ms": until_ms}})
        )
        answer = json.loads(host.recv())
        phy = answer.get("phy")
        if phy is None:
            self.clock.now_ms = max(self.clock.now_ms, until_ms)
            return None
        self.clock.now_ms += answer.get("after_ms", 0)
        self.last_snr_db = answer.get("snr_db")
        return bytes.fromhex(phy)
