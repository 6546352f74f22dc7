"""Node provisioning over a raw REPL: framing, node config, and install against a fake MicroPython on a pty.

The fake implements the raw REPL as MicroPython documents it ("The MicroPython Interactive
Interpreter Mode (aka REPL)", section "Raw mode and raw-paste mode"; micropython/micropython
tools/pyboard.py): Ctrl-A answers ``raw REPL; CTRL-B to exit\\r\\n>``, Ctrl-D runs the code received
and answers ``OK<stdout>\\x04<stderr>\\x04>``. Code runs under CPython ``exec`` in a namespace whose
only builtins are the few the install code uses, with ``os``/``open`` confined to a tmp directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import threading
import traceback
import tty
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import NodeError, ProvisioningError
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui
from gateway.provisioning import node, raw_repl
from gateway.provisioning.groups import GroupInfo
from gateway.provisioning.registry import Device

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
APP_KEY = "000102030405060708090a0b0c0d0e0f"


class FakeMicroPython:
    """A MicroPython raw REPL on the master side of a pty; ``port`` is the slave's path for pyserial."""

    BANNER = b"raw REPL; CTRL-B to exit\r\n>"

    def __init__(self, root: Path, *, corrupt: bool = False, stop_after_execs: int | None = None) -> None:
        self.root = root
        self.corrupt = corrupt
        self.stop_after_execs = stop_after_execs
        self.execs = 0
        self.codes: list[str] = []
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._out: list[str] = []
        os_module = types.SimpleNamespace(
            mkdir=lambda p: os.mkdir(self._path(p)),
            remove=lambda p: os.remove(self._path(p)),
            rename=lambda a, b: os.rename(self._path(a), self._path(b)),
        )
        modules: dict[str, Any] = {"os": os_module, "hashlib": hashlib, "binascii": __import__("binascii")}

        def _import(name: str, *_: Any) -> Any:
            if name not in modules:
                raise ImportError(f"no module named '{name}'")
            return modules[name]

        builtins = {
            "__import__": _import,
            "open": lambda p, mode="r": open(self._path(p), mode),
            "print": lambda *a: self._out.append(" ".join(str(x) for x in a) + "\r\n"),
            "OSError": OSError,
            "range": range,
            "len": len,
        }
        self._ns: dict[str, Any] = {"__builtins__": builtins}
        self._thread = threading.Thread(target=self._serve, name="fake-micropython", daemon=True)

    def _path(self, p: str) -> Path:
        if not p.startswith("/") or ".." in p:
            raise OSError(2, "ENOENT")
        return self.root / p[1:]

    def __enter__(self) -> FakeMicroPython:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self._master)
        os.close(self._slave)

    def _serve(self) -> None:
        raw, code = False, bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            for byte in os.read(self._master, 4096):
                if byte == 0x01:
                    raw, code = True, bytearray()
                    self._send(self.BANNER)
                elif byte == 0x02:
                    raw = False
                    self._send(b"\r\nMicroPython fake\r\n>>> ")
                elif byte == 0x03:
                    code = bytearray()
                elif raw and byte == 0x04:
                    self._run(code.decode())
                    code = bytearray()
                elif raw:
                    code.append(byte)

    def _send(self, data: bytes) -> None:
        os.write(self._master, data)

    def _run(self, code: str) -> None:
        self.execs += 1
        if self.stop_after_execs is not None and self.execs > self.stop_after_execs:
            return  # the node hangs: no OK, no reply
        if self.corrupt and "unhexlify('" in code:
            # One hex digit changed on the way: still valid code, different bytes on flash.
            at = code.index("unhexlify('") + len("unhexlify('")
            code = code[:at] + ("1" if code[at] != "1" else "2") + code[at + 1 :]
            self.corrupt = False
        self.codes.append(code)
        self._out.clear()
        err = b""
        try:
            exec(compile(code, "<stdin>", "exec"), self._ns)
        except Exception as exc:  # a REPL reports every exception as a traceback
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            err = f'Traceback (most recent call last):\r\n  File "<stdin>", line 1\r\n{last}\r\n'.encode()
        self._send(b"OK" + "".join(self._out).encode() + b"\x04" + err + b"\x04>")


@pytest.fixture
def board(tmp_path: Path) -> Path:
    root = tmp_path / "flash"
    root.mkdir()
    return root


def fill_level_device(**params: float) -> Device:
    return Device(
        dev_eui=DevEui.from_hex("70b3d57ed0000101"),
        profile="edgegw/fill-level",
        activation="otaa",
        site="aix/rue-01",
        created_at="2025-01-01T00:00:00+00:00",
        dev_addr=None,
        fcnt_up=None,
        params=params or {"empty_distance_mm": 1800.0, "full_distance_mm": 300.0},
        join_eui=JoinEui.from_hex("70b3d57ed0000001"),
    )


def otaa_keys() -> dict[str, str]:
    return {"join_eui": "70b3d57ed0000001", "app_key": APP_KEY.upper()}


@pytest.fixture
def repl_of() -> Iterator[Any]:
    ports: list[Any] = []

    def make(fake: FakeMicroPython, timeout_s: float = 3.0) -> raw_repl.RawRepl:
        port = node.open_port(fake.port)
        ports.append(port)
        return raw_repl.RawRepl(port, timeout_s=timeout_s, write_pause_s=0)

    yield make
    for port in ports:
        port.close()


# --- framing (MicroPython docs, raw mode: OK, stdout, 0x04, stderr, 0x04, '>') -----------------


@pytest.mark.parametrize("partial", [b"", b"O", b"OK", b"OKabc", b"OKabc\x04", b"OKabc\x04err\x04"])
def test_incomplete_replies_ask_for_more(partial: bytes) -> None:
    assert raw_repl.parse_exec_reply(partial) is None


def test_complete_reply_splits_stdout_and_stderr() -> None:
    reply = raw_repl.parse_exec_reply(b"OKhello\r\n\x04Traceback\x04>trailing")
    assert reply == raw_repl.ExecReply(
        stdout=b"hello\r\n", stderr=b"Traceback", consumed=len(b"OKhello\r\n\x04Traceback\x04>")
    )


@pytest.mark.parametrize("garbage", [b"X", b">>> ", b"raw REPL"])
def test_reply_without_ok_is_an_error(garbage: bytes) -> None:
    with pytest.raises(NodeError, match="did not accept"):
        raw_repl.parse_exec_reply(garbage)


def test_exec_request_ends_with_ctrl_d_and_refuses_control_bytes() -> None:
    assert raw_repl.exec_request("print(1)\n") == b"print(1)\n\x04"
    with pytest.raises(ValueError):
        raw_repl.exec_request("x = '\x04'")


# --- what goes to the node -----------------------------------------------------------------


def test_firmware_files_are_every_package_module_under_lib() -> None:
    files = node.firmware_files(FIRMWARE)
    paths = {f.path for f in files}
    assert {"/lib/lorawan/device.py", "/lib/nodes/fill_level.py", "/lib/sensors/ultrasonic.py"} <= paths
    assert {"/lib/drivers/sx127x.py", "/lib/nodes/lamp_controller.py", "/main.py"} <= paths
    assert all((p.startswith("/lib/") or p == "/main.py") and p.endswith(".py") for p in paths)
    aes = next(f for f in files if f.path == "/lib/lorawan/aes.py")
    assert aes.data == (FIRMWARE / "lorawan" / "aes.py").read_bytes()


def test_otaa_config_carries_keys_settings_and_installation_params() -> None:
    doc = node.node_config(
        fill_level_device(empty_distance_mm=1750.0, full_distance_mm=250.0, report_interval_s=1800.0),
        otaa_keys(),
        board="rp2",
        dr=3,
    )
    assert doc["otaa"] == {"dev_eui": "70b3d57ed0000101", "join_eui": "70b3d57ed0000001", "app_key": APP_KEY}
    assert doc["application"] == "fill_level" and doc["dr"] == 3 and doc["board"] == "rp2"
    # firmware/nodes/fill_level.py DEFAULTS, with the installation parameter overriding one.
    assert doc["settings"] == {
        "report_interval_s": 1800,
        "measure_interval_s": 900,
        "fire_alarm_c": 60,
        "distance_delta_mm": 150,
    }
    assert doc["params"]["empty_distance_mm"] == 1750 and doc["params"]["full_distance_mm"] == 250
    assert doc["pins"]["sx127x"] == {"nss": 17, "reset": 20, "dio0": 21}  # firmware/README.md, Pico wiring
    over = node.node_config(fill_level_device(), otaa_keys(), settings={"report_interval_s": 600})
    assert over["settings"]["report_interval_s"] == 600 and "abp" not in over


def test_abp_config_carries_session_keys() -> None:
    device = Device(
        dev_eui=DevEui.from_hex("70b3d57ed0000102"),
        profile="edgegw/fill-level",
        activation="abp",
        site="",
        created_at="",
        dev_addr=DevAddr.from_hex("26011bda"),
        fcnt_up=0,
        params={"empty_distance_mm": 1800.0, "full_distance_mm": 300.0},
    )
    keys = {"nwk_s_key": str(AesKey(bytes(range(16)))), "app_s_key": "2b7e151628aed2a6abf7158809cf4f3c"}
    doc = node.node_config(device, keys)
    assert (
        doc["abp"]["dev_addr"] == "26011bda" and doc["abp"]["app_s_key"] == "2b7e151628aed2a6abf7158809cf4f3c"
    )
    assert "otaa" not in doc


@pytest.mark.parametrize(("profile", "application"), sorted(node.APPLICATIONS.items()))
@pytest.mark.parametrize("board", ["esp32", "rp2"])
def test_every_node_application_gets_its_settings_and_the_pins_main_py_reads(
    profile: str, application: str, board: str
) -> None:
    device = fill_level_device()
    device = Device(**{**{s: getattr(device, s) for s in Device.__slots__}, "profile": profile})
    doc = node.node_config(device, otaa_keys(), board=board)
    assert doc["application"] == application
    defaults = (FIRMWARE / "nodes" / f"{application}.py").read_text()
    assert all(f'"{name}"' in defaults for name in doc["settings"])  # the node's own DEFAULTS keys
    # firmware/main.py reads these pin keys for the application (its _<application> builder).
    main = (FIRMWARE / "main.py").read_text()
    builder = main[main.index(f"def _{application}(") :].split("\ndef ", 1)[0]
    used = set(re.findall(r'\bp\["(\w+)"\]', builder)) | {"spi", "sx127x"}
    assert used <= set(doc["pins"]), used - set(doc["pins"])


@pytest.mark.parametrize(
    ("device", "match"),
    [
        (fill_level_device(empty_distance_mm=1800.0), "full_distance_mm"),
        (fill_level_device(empty_distance_mm=300.0, full_distance_mm=1800.0), "greater than"),
    ],
)
def test_config_refuses_missing_or_inverted_container_params(device: Device, match: str) -> None:
    with pytest.raises(ProvisioningError, match=match):
        node.node_config(device, otaa_keys())


def test_config_refuses_a_profile_without_firmware() -> None:
    device = fill_level_device()
    other = Device(**{**{s: getattr(device, s) for s in Device.__slots__}, "profile": "milesight/em310-udl"})
    with pytest.raises(ProvisioningError, match="no node firmware"):
        node.node_config(other, otaa_keys())


# --- install against the fake node ------------------------------------------------------------


def test_install_writes_verifies_and_reads_back(board: Path, repl_of: Any) -> None:
    files = [
        *node.firmware_files(FIRMWARE),
        node.config_file(node.node_config(fill_level_device(), otaa_keys())),
    ]
    (board / "config.json").write_text("{old}")  # a node provisioned before: replaced
    with FakeMicroPython(board) as fake:
        installed = node.install(repl_of(fake), files)
    assert [i.path for i in installed] == [f.path for f in files]
    for f, i in zip(files, installed, strict=True):
        on_flash = (board / f.path[1:]).read_bytes()
        assert (
            on_flash == f.data
            and i.sha256 == hashlib.sha256(on_flash).hexdigest()
            and i.size_bytes == len(f.data)
        )
    assert not list(board.rglob("*.new"))
    assert APP_KEY in (board / "config.json").read_text()


def test_silent_node_is_a_clear_error_quickly(board: Path, repl_of: Any) -> None:
    fake = FakeMicroPython(board)  # not started: nobody answers on the pty
    try:
        with pytest.raises(NodeError, match="no answer from the node while entering the raw REPL"):
            node.install(repl_of(fake, timeout_s=0.3), [node.NodeFile("/lib/x.py", b"x = 1\n")])
    finally:
        fake._stop.set()
        os.close(fake._master)
        os.close(fake._slave)
    assert list(board.iterdir()) == []


def test_corrupted_write_fails_verification_and_installs_nothing(board: Path, repl_of: Any) -> None:
    files = [node.NodeFile("/lib/a.py", b"a = 1\n" * 50), node.NodeFile("/config.json", b'{"k": 1}\n')]
    (board / "config.json").write_bytes(b"previous\n")
    with FakeMicroPython(board, corrupt=True) as fake:
        with pytest.raises(
            NodeError, match=r"verification failed for 1 file\(s\) \(/lib/a.py\).*nothing was installed"
        ):
            node.install(repl_of(fake), files)
    assert not (board / "lib" / "a.py").exists() and not list(board.rglob("*.new"))
    assert (board / "config.json").read_bytes() == b"previous\n"


def test_node_hanging_mid_write_leaves_installed_files_unchanged(board: Path, repl_of: Any) -> None:
    files = [node.NodeFile("/lib/a.py", b"a = 1\n"), node.NodeFile("/config.json", b'{"k": 2}\n')]
    (board / "config.json").write_bytes(b"previous\n")
    with FakeMicroPython(board, stop_after_execs=3) as fake:
        with pytest.raises(NodeError, match="no reply from the node"):
            node.install(repl_of(fake, timeout_s=0.5), files)
    assert (board / "config.json").read_bytes() == b"previous\n" and not (board / "lib" / "a.py").exists()


def test_node_traceback_is_reported_by_its_last_line_without_the_code(board: Path, repl_of: Any) -> None:
    secret = node.NodeFile("/config.json", b'{"app_key": "' + APP_KEY.encode() + b'"}')
    (board / "config.json").mkdir()  # a directory where the file goes: the node's rename fails
    with FakeMicroPython(board) as fake:
        with pytest.raises(NodeError, match="the node raised") as info:
            node.install(repl_of(fake), [secret])
    assert APP_KEY not in str(info.value) and secret.data.hex() not in str(info.value)


def _group_info(name: str, mc_addr: str, dr: int | None = None) -> GroupInfo:
    return GroupInfo(name, DevAddr.from_hex(mc_addr), dr, None, 0, "", (), None)


GROUP_KEYS = {"mc_nwk_s_key": "11" * 16, "mc_app_s_key": "22" * 16}


def test_multicast_config_writes_the_channel_and_refuses_what_the_firmware_cannot_take() -> None:
    member_of = [(_group_info("north", "0178a001"), GROUP_KEYS)]
    # A group without its own channel goes on the gateway's RX2, written out: the firmware's default
    # is RX2's default, which this gateway (DR3) does not use.
    assert node.multicast_config(member_of, rx2_dr=3, rx2_freq_hz=869_525_000) == [
        {"mc_addr": "0178a001", **GROUP_KEYS, "freq_hz": 869_525_000, "dr": 3}
    ]
    five = [(_group_info(f"g{i}", f"0178a00{i}"), GROUP_KEYS) for i in range(node.MAX_GROUPS + 1)]
    with pytest.raises(ProvisioningError, match="at most 4"):
        node.multicast_config(five, rx2_dr=0, rx2_freq_hz=869_525_000)
    mixed = [*member_of, (_group_info("city", "0178a0ff", dr=3), GROUP_KEYS)]
    with pytest.raises(ProvisioningError, match="different channels"):
        node.multicast_config(mixed, rx2_dr=0, rx2_freq_hz=869_525_000)
    with pytest.raises(ProvisioningError, match="mc_app_s_key"):
        node.multicast_config([(member_of[0][0], {"mc_nwk_s_key": "11" * 16})], rx2_dr=0, rx2_freq_hz=1)


def test_config_carries_the_multicast_entries_only_when_there_are_some() -> None:
    device = fill_level_device(empty_distance_mm=1800, full_distance_mm=300)
    assert "multicast" not in node.node_config(device, otaa_keys())
    entry = {"mc_addr": "0178a001", **GROUP_KEYS, "freq_hz": 869_525_000, "dr": 0}
    assert node.node_config(device, otaa_keys(), multicast=[entry])["multicast"] == [entry]
