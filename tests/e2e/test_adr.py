"""Network-side ADR through the running agent (issue 20): real UDP forwarder, real SQLite, real broker.

An ABP device at SF12 with a strong link sets FCtrl ADR in its uplinks; after a full history (20
uplinks) the agent puts a LinkADRReq in the FOpts of the downlink that follows. The device reads
that downlink as a device does (MIC with the downlink B0, FOpts split into MAC commands), applies
it and answers LinkADRAns, every bit ACK, in its next uplink. The settings survive a kill -9 of the
agent (``edgegw devices --json`` after the restart). A device registered with ``--adr off`` sets
the same bit and never gets a LinkADRReq.

Expected bytes from the specifications: +11 dB at SF12 (floor -20 dB) with the 10 dB installation
margin is 21 dB = 7 steps of 3 dB: DR0 -> DR5 (5 steps), then TXPower index 0 -> 2 (16 -> 12 dBm).
LinkADRReq (LoRaWAN 1.0.4 §5.3): CID 0x03, DataRate_TXPower 0x52, ChMask 0x00FF little-endian (the 3
EU868 default channels and the 5 CFList channels of the default configuration), Redundancy 0x01
(ChMaskCntl 0, NbTrans 1).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.lorawan import mac, phy
from gateway.lorawan.crypto import SessionKeys
from gateway.messages import MType
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, AgentProcess, cli, em310, wait_ready

pytestmark = pytest.mark.e2e

LINK_ADR_REQ = bytes([0x03, 0x52, 0xFF, 0x00, 0x01])
LINK_ADR_ANS_ALL_ACK = bytes([0x03, 0b111])
HISTORY = 20


@dataclass
class AdrDevice:
    """A device that lets the network drive its rate: every uplink has FCtrl ADR set."""

    device: AbpDevice
    sf: int = 12
    fcnt: int = 0
    keys: SessionKeys = field(init=False)

    def __post_init__(self) -> None:
        self.keys = SessionKeys(self.device.nwk_s_key, self.device.app_s_key)

    def uplink(self, fopts: bytes = b"") -> bytes:
        frame = phy.build_data_frame(
            self.keys, mtype=MType.UNCONFIRMED_DATA_UP, dev_addr=self.device.dev_addr, fcnt32=self.fcnt,
            fport=85, payload=em310(90, 1500, False), fopts=fopts, adr=True,
        )  # fmt: skip
        self.fcnt += 1
        return frame

    def reads(self, phy_payload: bytes) -> list[mac.MacCommand] | None:
        """The MAC commands of a downlink for this device (None: not for it), MIC checked as it would."""
        down = phy.parse(phy_payload)
        assert isinstance(down, phy.DataFrame) and not down.uplink
        if down.dev_addr != self.device.dev_addr:
            return None
        # FCntDown of this test's downlinks stays below 2**16: the 16 bits on air are the counter.
        assert self.keys.data_mic(down.mic_input, down.dev_addr, down.fcnt16, False) == down.mic
        commands, unread = mac.parse_commands(down.fopts, uplink=False)
        assert unread == b""
        return commands


def send(fwd: PacketForwarder, dev: AdrDevice, snr_db: float, fopts: bytes = b"") -> None:
    rx = {"sf": dev.sf, "snr_db": snr_db, "rssi_dbm": -90.0}
    fwd.send_frames([(dev.uplink(fopts), rx)])


def downlinks(fwd: PacketForwarder, wait_s: float) -> list[bytes]:
    got = []
    while (resp := fwd.wait_downlink(timeout_s=wait_s)) is not None:
        got.append(base64.b64decode(resp.txpk["data"]))
    return got


def devices_json(config_file: Path) -> dict[str, dict[str, Any]]:
    done = cli(config_file, "devices", "--json")
    assert done.returncode == 0, done.stderr
    return {d["dev_eui"]: d for d in json.loads(done.stdout)["devices"]}


def test_adr_asks_a_strong_sf12_device_for_dr5_and_less_power_and_keeps_it_across_a_kill_9(
    setup: tuple[Path, int, list[AbpDevice]],
) -> None:
    config_file, udp_port, (dev1, dev2) = setup
    off = cli(config_file, "device", "set", dev2.dev_eui.hex(), "--adr", "off")
    assert off.returncode == 0, off.stderr
    strong, opted_out = AdrDevice(dev1), AdrDevice(dev2)
    asked: list[mac.MacCommand] = []
    asked_opted_out: list[mac.MacCommand] = []
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            for _ in range(HISTORY + 2):
                send(fwd, strong, 11.0)
                send(fwd, opted_out, 11.0)
                for frame in downlinks(fwd, 0.3):
                    asked += [c for c in strong.reads(frame) or () if c.name == "LinkADRReq"]
                    asked_opted_out += [c for c in opted_out.reads(frame) or () if c.name == "LinkADRReq"]
                if asked:
                    break
            assert [bytes([c.cid]) + c.payload for c in asked] == [LINK_ADR_REQ]
            assert strong.fcnt == HISTORY, "asked after the 20th uplink, not before"
            # The device applies DR5 (SF7) and TXPower 2: 4 dB less power, 4 dB less SNR; it answers.
            strong.sf = 7
            send(fwd, strong, 7.0, LINK_ADR_ANS_ALL_ACK)
            for _ in range(3):
                send(fwd, strong, 7.0)
            after = [c for frame in downlinks(fwd, 1.0) for c in strong.reads(frame) or ()]
            for _ in range(HISTORY + 2):
                send(fwd, opted_out, 11.0)
                for frame in downlinks(fwd, 0.05):
                    asked_opted_out += [c for c in opted_out.reads(frame) or () if c.name == "LinkADRReq"]
            time.sleep(1.0)  # past a group commit (commit_interval_ms) and the views' write interval
            before_kill = devices_json(config_file)[dev1.dev_eui.hex()]
    finally:
        agent.proc.kill()  # SIGKILL: no shutdown code runs
        agent.proc.wait(10)
    assert not [c for c in after if c.name == "LinkADRReq"], "answered: not asked again"
    assert asked_opted_out == [], "a device with --adr off is never asked"
    assert (before_kill["dr"], before_kill["tx_power_dbm"]) == (5, 12)
    # The best SNR since the answer (+7 dB) above the SF7 floor (-7.5 dB).
    assert before_kill["link_margin_db"] == pytest.approx(14.5)
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
        rows = devices_json(config_file)
        shown = cli(config_file, "device", "show", dev1.dev_eui.hex())
    finally:
        assert agent.stop() == 0
    assert agent.final_counters()["downlinks"]["adr.restored"] == 2  # both devices' rows, from the file
    row = rows[dev1.dev_eui.hex()]
    assert (row["dr"], row["tx_power_dbm"], row["adr"]) == (5, 12, True)
    assert rows[dev2.dev_eui.hex()]["adr"] is False
    assert shown.returncode == 0, shown.stderr
    assert "DR5, TX 12 dBm, link margin 14.5 dB" in shown.stdout
