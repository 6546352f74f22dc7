"""The gateway's side of a firmware run on real MicroPython, shared by the end-to-end tests.

Owns the conversation with ``run_micropython.mjs`` (the WebAssembly port from npm
``@micropython/micropython-webassembly-pyscript``, run in Node): the scenario prints ``@@`` and
JSON, ``tx`` for a transmission the gateway hears, ``rx`` for a class A window that waits for our
answer, ``listen`` for a class C window that waits for one, anything else an event for the test.
And the gateway parts every run uses, real ones: the ``RadioFrame`` of a transmission,
``JoinServer.handle`` + ``SessionTable.install`` for a join-request (the join-accept goes back
in RX1), ``SessionTable.accept`` for a data uplink, a data downlink framed with the session's
keys (``gateway.lorawan.phy``). What a test answers to an uplink and what it checks stay in the
test (its ``GatewaySide`` subclass).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.codec.profile import Profile, load_profile
from gateway.lorawan import phy
from gateway.lorawan.join import JoinAccepted, JoinServer, OtaaDevice
from gateway.lorawan.sessions import SessionTable
from gateway.messages import DevEui, JoinEui, MType, RadioFrame, RxInfo, UplinkData

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RUNNER = HERE / "run_micropython.mjs"
PACKAGE = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript" / "micropython.mjs"
JOIN_EUI = "70b3d57ed0000000"


def device_profile(profile_id: str) -> Profile:
    """The device profile ``edgegw/...`` from ``device_profiles/``."""
    return load_profile(ROOT / "device_profiles" / f"{profile_id}.yaml", expected_id=profile_id)


def otaa_device(dev_eui: str, app_key: str, profile_id: str) -> OtaaDevice:
    """The JoinServer's record of a node with these hex keys and ``JOIN_EUI``."""
    return OtaaDevice(
        dev_eui=DevEui.from_hex(dev_eui),
        join_eui=JoinEui.from_hex(JOIN_EUI),
        app_key=bytes.fromhex(app_key),
        profile=profile_id,
    )


@dataclass
class GatewaySide:
    """A real JoinServer and SessionTable, no radio; answers in RX1 only (the first window after each
    transmission) with what ``heard`` decided. Subclasses say what a data uplink gets (``uplink``)."""

    server: JoinServer
    sessions: SessionTable = field(default_factory=SessionTable)
    tx: list[dict[str, Any]] = field(default_factory=list)
    _reply: bytes | None = None

    def heard(self, msg: dict[str, Any]) -> None:
        self.tx.append(msg)
        rx = RxInfo(
            msg["freq_hz"], -90.0, 7.5, msg["sf"], msg["bw_hz"], "4/5", True, "test", "aa555a0000000001", 1000
        )
        frame = RadioFrame(bytes.fromhex(msg["tx"]), rx, 1_700_000_000.0, time.monotonic())
        if msg["tx"][:2] == "00":  # MHDR of a join-request
            self._reply = self.join_request(frame)
        else:
            self._reply = self.uplink(self.sessions.accept(frame))

    def join_request(self, frame: RadioFrame) -> bytes | None:
        """The join-accept for RX1 (None: leave the request unanswered)."""
        return self.join(frame).phy_payload

    def join(self, frame: RadioFrame) -> JoinAccepted:
        accepted = self.server.handle(frame, self.sessions)
        self.sessions.install(accepted.session)
        return accepted

    def uplink(self, up: UplinkData) -> bytes | None:
        """A data uplink the SessionTable accepted; the downlink for RX1, or None."""
        raise NotImplementedError

    def window(self, msg: dict[str, Any]) -> bytes | None:
        reply, self._reply = self._reply, None
        return reply

    def listen(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A class C window: ``{"phy": hex or None, "after_ms": ...}``."""
        raise AssertionError(f"this scenario opened no class C window: {msg}")

    def downlink(self, dev_eui: str, fcnt32: int, **kw: Any) -> bytes:
        """An unconfirmed data downlink in the node's current session (``fport``, ``payload``, ``fopts``)."""
        session = self.sessions.by_dev_eui(DevEui.from_hex(dev_eui))
        assert session is not None
        return phy.build_data_frame(
            session.keys,
            mtype=MType.UNCONFIRMED_DATA_DOWN,
            dev_addr=session.dev_addr.value,
            fcnt32=fcnt32,
            **kw,
        )


def run_scenario(
    scenario: str, args: dict[str, Any], gateway: GatewaySide, *, deadline_s: float, max_lines: int
) -> tuple[list[dict[str, Any]], float]:
    """Run ``scenario`` (a file here) on MicroPython, ``gateway`` answering; (events, seconds taken)."""
    node = shutil.which("node")
    if node is None or not PACKAGE.exists():
        pytest.fail("node or the npm package is missing: run `make test` (npm ci installs it)")
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            node,
            str(RUNNER),
            str(ROOT / "firmware"),
            str(HERE / "shims"),
            str(HERE / scenario),
            json.dumps(args),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    events: list[dict[str, Any]] = []
    try:
        for _ in range(max_lines):
            assert time.monotonic() - started < deadline_s, "MicroPython run over its time budget"
            line = proc.stdout.readline()
            if not line:
                break
            if not line.startswith("@@"):
                continue
            msg = json.loads(line[2:])
            if "tx" in msg:
                gateway.heard(msg)
                continue
            if "rx" in msg:
                reply = gateway.window(msg["rx"])
                answer: dict[str, Any] = {"phy": None if reply is None else reply.hex()}
            elif "listen" in msg:
                answer = gateway.listen(msg["listen"])
            else:
                events.append(msg)
                continue
            proc.stdin.write(json.dumps(answer) + "\n")
            proc.stdin.flush()
        rc = proc.wait(timeout=max(1.0, deadline_s - (time.monotonic() - started)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    assert rc == 0, f"MicroPython failed:\n{stderr}"
    return events, time.monotonic() - started
