"""DevStatusReq through the running agent (issue 20): a device is asked its battery and margin in the
FOpts of a downlink after one of its uplinks, answers DevStatusAns in the FOpts of its next uplink,
and `edgegw devices --json`, `device show` and the MQTT inventory show the answer, still after a
restart of the agent.

Real UDP (the simulator's Semtech packet forwarder), real SQLite, real mosquitto; the device side
reads the downlink with ``phy`` and ``mac`` as a device would. Bytes from LoRaWAN 1.0.4 §5.5:
DevStatusReq = 0x06; DevStatusAns = 0x06, Battery, Margin (6-bit two's complement).
"""

from __future__ import annotations

import base64
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.lorawan import mac, phy
from gateway.lorawan.crypto import SessionKeys
from gateway.messages import MType
from simulator.devices import AbpDevice
from simulator.forwarder import PacketForwarder
from tests.e2e.harness import GATEWAY_EUI, GATEWAY_ID, AgentProcess, cli, em310, wait_ready

pytestmark = pytest.mark.e2e

PERIOD_S = 2
"""lorawan.dev_status_period_s of the test: a never-asked device is asked within 2 s of the start."""
BATTERY = 200  # of 254: 78.7 %
MARGIN_BYTE = 0x3A  # 0b111010: -6 dB


def uplink(device: AbpDevice, fopts: bytes = b"") -> bytes:
    """The device's next uplink, with MAC answers in FOpts (as a device puts them, LoRaWAN 1.0.4 §4.3.1.6)."""
    frame = phy.build_data_frame(
        SessionKeys(device.nwk_s_key, device.app_s_key), mtype=MType.UNCONFIRMED_DATA_UP,
        dev_addr=device.dev_addr, fcnt32=device.fcnt_up, fport=85, payload=em310(90, 1500, False),
        fopts=fopts,
    )  # fmt: skip
    device.fcnt_up += 1
    return frame


def heard(config_file: Path, dev_eui: str) -> dict[str, Any]:
    """The device's row of `edgegw devices --json`."""
    out = cli(config_file, "devices", "--json")
    assert out.returncode == 0, out.stderr
    row: dict[str, Any] = next(d for d in json.loads(out.stdout)["devices"] if d["dev_eui"] == dev_eui)
    return row


def wait_status(config_file: Path, dev_eui: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = heard(config_file, dev_eui).get("dev_status")
        if status is not None:
            assert isinstance(status, dict)
            return status
        assert time.monotonic() < deadline, "no DevStatusAns in `edgegw devices --json`"
        time.sleep(0.3)


def inventory_status(sub: Any, dev_eui: str) -> dict[str, Any] | None:
    pages = sub.json_on(f"edgegw/{GATEWAY_ID}/inventory")
    schema = json.loads((resources.files("gateway") / "schemas" / "inventory-v1.json").read_text())
    for page in pages:
        jsonschema.validate(page, schema)
    rows = [d for page in pages for d in page["devices"] if d["dev_eui"] == dev_eui]
    return rows[-1]["dev_status"] if rows else None


def test_a_device_is_asked_its_status_and_the_answer_is_shown_and_kept_across_a_restart(
    setup: tuple[Path, int, list[AbpDevice]], subscribe: Any
) -> None:
    config_file, udp_port, (device, _other) = setup
    text = config_file.read_text().replace("tls: false}", "tls: false, inventory_interval_s: 0.5}")
    config_file.write_text(text + f"lorawan: {{dev_status_period_s: {PERIOD_S}}}\n")
    eui = device.dev_eui.hex()
    sub = subscribe(f"edgegw/{GATEWAY_ID}/inventory")
    agent = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)
            asked: list[tuple[str, bytes]] = []
            for n in range(6):  # the first request waits for the device's phase in the spread (< 2 s)
                fwd.send_frames([(uplink(device), {"tmst_us": 1_000_000 + n * 10_000_000})])
                down = fwd.wait_downlink(timeout_s=3.0)
                if down is None:
                    continue
                parsed = phy.parse(base64.b64decode(down.txpk["data"]))
                assert isinstance(parsed, phy.DataFrame) and parsed.dev_addr == device.dev_addr
                commands, unread = mac.parse_commands(parsed.fopts, uplink=False)
                asked = [(c.name, c.payload) for c in commands]
                assert unread == b"" and asked == [("DevStatusReq", b"")]
                break
            assert asked, "no DevStatusReq in a downlink after 6 uplinks"
            # The device answers in FOpts of its next uplink.
            fwd.send_frames([(uplink(device, bytes([0x06, BATTERY, MARGIN_BYTE])), {"tmst_us": 90_000_000})])
            status = wait_status(config_file, eui)
            shown = cli(config_file, "device", "show", eui)
            sub.wait_for(lambda _msgs: inventory_status(sub, eui) is not None, timeout_s=10)
    finally:
        assert agent.stop() == 0
    assert status["power"] == "battery" and status["battery_pct"] == 78.7 and status["margin_db"] == -6
    assert shown.returncode == 0, shown.stderr
    assert "battery 79 %" in shown.stdout and "margin -6 dB" in shown.stdout
    published = inventory_status(sub, eui)
    assert published is not None and published["margin_db"] == -6 and published["at"].endswith("Z")

    restarted = AgentProcess(config_file)
    try:
        with PacketForwarder(GATEWAY_EUI, ("127.0.0.1", udp_port)) as fwd:
            wait_ready(fwd)  # serving: its views answer
            after = heard(config_file, eui).get("dev_status")
            shown_after = cli(config_file, "device", "show", eui)
    finally:
        assert restarted.stop() == 0
    assert after == status
    assert "battery 79 %" in shown_after.stdout and "margin -6 dB" in shown_after.stdout
