"""``firmware/main.py`` end to end under CPython: config.json -> SX1276 driver -> emulator -> gateway.

The whole node as the board runs it, except the silicon: ``main`` reads a ``config.json`` written
by the gateway's own ``edgegw provision node`` code (``gateway.provisioning.node.node_config``),
builds ``machine.SPI``/``Pin`` (the MicroPython shims of ``shims/``, run under CPython, with SPI
transactions going to ``simulator/sx127x_emulator.py`` through ``SingleRxEmulator``), the
``drivers.sx127x`` radio, the ``Device`` and the node. What the emulated chip transmits is
accepted by the gateway's ``SessionTable`` and decoded by the node's profile; a class C lamp
controller obeys a ``set_dim`` downlink (profile encoder + ``phy.build_data_frame``) injected
into the chip while main's class C loop keeps RX2 open. Real time: each uplink costs its two
receive windows (RX1 1 s, RX2 2 s after the uplink; LoRaWAN 1.0.4 §3.3).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gateway.codec.profile import load_profile
from gateway.lorawan import crypto, phy
from gateway.lorawan.sessions import Session, SessionTable, session_tag
from gateway.messages import AesKey, DevAddr, DevEui, MType, RadioFrame, RxInfo
from gateway.provisioning.node import node_config
from gateway.provisioning.registry import Device as RegistryDevice
from simulator import sx127x_emulator as emu
from tests.firmware.test_sx127x_driver import SingleRxEmulator

HERE = Path(__file__).resolve().parent
FIRMWARE = HERE.parents[1] / "firmware"
PROFILES = HERE.parents[1] / "device_profiles" / "edgegw"
NWK, APP = bytes(range(16)), bytes(range(16, 32))
DEV_EUI = "70b3d57ed00c0002"
DEV_ADDR = "26011f40"
WAIT_S = 10.0


class EmuSpi:
    """``machine.SPI`` backed by the emulator; transfers only while the NSS pin (shim level) is low."""

    def __init__(self, chip: emu.Sx127xEmulator, sim: ModuleType, nss: int) -> None:
        self.chip, self.sim, self.nss = chip, sim, nss

    def write_readinto(self, tx: bytes, rx: bytearray) -> None:
        assert self.sim.levels.get(self.nss) == 0, "SPI transfer with NSS high"
        rx[:] = bytes(self.chip.xfer(list(tx)))

    def write(self, data: bytes) -> None:  # a MAX7219 on the same bus would use this
        pass


class FakeRtc:
    """``machine.RTC`` with ESP32-style ``memory()`` (survives deep sleep)."""

    stored = b""

    def memory(self, data: bytes | None = None) -> bytes | None:
        if data is None:
            return FakeRtc.stored
        FakeRtc.stored = bytes(data)
        return None


class Board:
    def __init__(
        self, main: ModuleType, machine: ModuleType, sim: ModuleType, chip: SingleRxEmulator
    ) -> None:
        self.main, self.machine, self.sim, self.chip = main, machine, sim, chip


@pytest.fixture
def board(monkeypatch: pytest.MonkeyPatch) -> Iterator[Board]:
    before = set(sys.modules)
    saved = {n: sys.modules[n] for n in before if n.split(".")[0] in ("machine", "sim", "nodes", "sensors")}
    for name in saved:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(FIRMWARE))
    monkeypatch.syspath_prepend(str(HERE / "shims"))
    # MicroPython's time.sleep_ms/sleep_us, which the sensor drivers call (no-ops: the world is simulated).
    monkeypatch.setattr(time, "sleep_ms", lambda ms: None, raising=False)
    monkeypatch.setattr(time, "sleep_us", lambda us: None, raising=False)
    import machine  # the shim  # type: ignore[import-not-found]
    import sim  # type: ignore[import-not-found]

    chip = SingleRxEmulator()
    config_pins = {"nss": 5, "reset": 14, "dio0": 26}
    monkeypatch.setattr(machine, "SPI", lambda *a, **kw: EmuSpi(chip, sim, config_pins["nss"]), raising=False)
    monkeypatch.setattr(machine, "RTC", FakeRtc, raising=False)
    FakeRtc.stored = b""
    # NRESET: a rising edge after a low pulse resets the chip; DIO0 edges run the driver's IRQ handler.
    sim.on_rising[config_pins["reset"]] = chip.reset
    chip.wiring.dio0 = lambda: sim.edge(26) if 26 in sim.irqs else None
    sys.modules.pop("main", None)
    import main  # type: ignore[import-not-found]

    try:
        yield Board(main, machine, sim, chip)
    finally:
        chip.wiring.dio0 = lambda: None
        for name in set(sys.modules) - before:
            del sys.modules[name]
        sys.modules.update(saved)


def _gateway(profile: str) -> SessionTable:
    addr = DevAddr.from_hex(DEV_ADDR)
    return SessionTable(
        [
            Session(
                DevEui.from_hex(DEV_EUI),
                addr,
                profile,
                session_tag(addr, AesKey(NWK)),
                crypto.SessionKeys(NWK, APP),
                None,
            )
        ]
    )


def _accept(table: SessionTable, sent: emu.Transmission) -> Any:
    rx = RxInfo(sent.freq_hz, -90.0, 7.0, sent.sf, sent.bw_hz, "4/5", True, "t")
    return table.accept(RadioFrame(sent.payload, rx, 0.0, time.monotonic()))


def _abp_config(profile: str, tmp_path: Path, **params: float) -> Path:
    device = RegistryDevice(
        dev_eui=DevEui.from_hex(DEV_EUI),
        profile=profile,
        activation="abp",
        site="test",
        created_at="2026-01-01T00:00:00Z",
        dev_addr=DevAddr.from_hex(DEV_ADDR),
        fcnt_up=None,
        params=params,
    )
    doc = node_config(device, {"nwk_s_key": NWK.hex(), "app_s_key": APP.hex()}, board="esp32")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


def test_fill_level_node_runs_one_cycle_and_keeps_state_over_deep_sleep(
    board: Board, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lorawan.storage import FileStorage  # type: ignore[import-not-found]

    main, sim = board.main, board.sim
    light_sleeps: list[int] = []

    def lightsleep(ms: int) -> None:
        light_sleeps.append(ms)
        time.sleep(ms / 1000)

    monkeypatch.setattr(board.machine, "lightsleep", lightsleep, raising=False)
    cfg = main.load_config(
        str(_abp_config("edgegw/fill-level", tmp_path, empty_distance_mm=1200, full_distance_mm=200))
    )
    assert main.application(cfg) == "fill_level"
    cfg["light_sleep_waits"] = True
    sim.state.update({"distance_mm": 800, "temperature_c": 18.0, "tilt": False, "echo": True, "probe": True})
    sim.pins[27] = lambda: 0  # tilt switch open
    sim.pins[("adc", 34)] = lambda: int(3000 / 2 * 65535 / 3300 + 0.5)  # 3.0 V battery through 1:1 divider
    storage = FileStorage(str(tmp_path / "state.json"))
    store = main.SleepStore(str(tmp_path / "sleep.json"))
    spi = main.make_spi(cfg)
    radio = main.make_radio(cfg, spi)
    device, node, slept_s = main.wake(cfg, radio, storage, store, False, spi)
    assert slept_s == 0 and device.battery_level() == 211  # (3000 - 2000) * 254 // 1200
    sleep_s = main.run_class_a(cfg, device, node, store, slept_s)
    assert sleep_s == 900  # measure_interval_s of fill_level's settings
    # The wait for RX1 (~1 s after TxDone) and then RX2 were light sleeps, not busy waits.
    assert len(light_sleeps) >= 2 and 900 <= light_sleeps[0] <= 1000
    [sent] = board.chip.transmitted
    assert sent.crc_on and not sent.invert_iq and (sent.sf, sent.bw_hz) == (7, 125_000)
    table = _gateway("edgegw/fill-level")
    uplink = _accept(table, sent)
    profile = load_profile(PROFILES / "fill-level.yaml", expected_id="edgegw/fill-level")
    decoded = profile.decode(
        uplink.fport, uplink.payload, {"empty_distance_mm": 1200, "full_distance_mm": 200}
    ).data
    assert abs(decoded["distance"] - 800) <= 1 and decoded["battery_voltage"] == 3000
    # RTC memory holds the node's last report and the sub-band's remaining off-time.
    saved = json.loads(FakeRtc.stored)
    assert saved["sleep_s"] == 900 and saved["node"]["last_report"][0] == decoded["distance"]
    [band_wait] = saved["device"]["band_wait_ms"].values()
    # 99 x the 57 ms frame (5.6 s) less the ~2.1 s the receive windows took already (loose: real time).
    assert 1500 < band_wait <= 99 * 58
    radio.sleep()
    assert board.chip.mode == emu.MODE_SLEEP
    # Wake from deep sleep: nothing changed, so no report (the restored state says so).
    board.chip.transmitted.clear()
    radio = main.make_radio(cfg, spi)
    device, node, slept_s = main.wake(cfg, radio, FileStorage(str(tmp_path / "state.json")), store, True, spi)
    assert slept_s == 900 and node.last_report is not None
    main.run_class_a(cfg, device, node, store, slept_s)
    assert board.chip.transmitted == []
    assert json.loads(FakeRtc.stored)["node"]["since_report_s"] == 900


def _inject_when_listening_continuous(chip: SingleRxEmulator, frame: bytes) -> threading.Thread:
    def run() -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if chip.mode == emu.MODE_RXCONT and chip.receive(frame):
                return
            time.sleep(0.005)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_lamp_controller_main_loop_obeys_a_class_c_command(board: Board, tmp_path: Path) -> None:
    from lorawan.storage import FileStorage  # type: ignore[import-not-found]

    main, sim = board.main, board.sim
    cfg = {
        "format": 1,
        "application": "lamp_controller",
        "dr": 5,
        "abp": {"dev_addr": DEV_ADDR, "nwk_s_key": NWK.hex(), "app_s_key": APP.hex()},
        "settings": {"report_interval_s": 60},
        "pins": {
            "spi": {"id": 2, "sck": 18, "mosi": 23, "miso": 19},
            "sx127x": {"nss": 5, "reset": 14, "dio0": 26},
            "lamp": {"relay": 25, "pwm": 27},
            "meter": 32,
        },
    }
    profile = load_profile(PROFILES / "lamp-controller.yaml", expected_id="edgegw/lamp-controller")
    command = profile.encode("set_dim", {"percent": 40})
    frame = phy.build_data_frame(
        crypto.SessionKeys(NWK, APP),
        mtype=MType.UNCONFIRMED_DATA_DOWN,
        dev_addr=bytes.fromhex(DEV_ADDR),
        fcnt32=0,
        fport=command.fport,
        payload=command.payload,
    )
    spi = main.make_spi(cfg)
    radio = main.make_radio(cfg, spi)
    device, node, _ = main.wake(
        cfg, radio, FileStorage(str(tmp_path / "state.json")), main.SleepStore(), False
    )
    assert device.battery_level() == 0  # mains powered (DevStatusAns Battery 0, §5.5)
    thread = _inject_when_listening_continuous(board.chip, frame)
    main.run_class_c(cfg, device, node, rounds=2)
    thread.join(WAIT_S)
    # Class C: RX2 at 869.525 MHz, SF12, inverted IQ, in RX continuous.
    assert abs(board.chip.freq_hz - 869_525_000) <= 31 and board.chip.sf == 12 and board.chip.invert_iq
    assert sim.levels[25] == 1 and sim.pwm[27] == 40 * 65535 // 100
    table = _gateway("edgegw/lamp-controller")
    first, second = (_accept(table, t) for t in board.chip.transmitted)
    before = profile.decode(first.fport, first.payload, {}).data
    after = profile.decode(second.fport, second.payload, {}).data
    assert (before["relay_on"], before["dim_level"]) == (False, 0)
    assert (after["relay_on"], after["dim_level"], after["commanded"]) == (True, 40, True)
