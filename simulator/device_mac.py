"""The device side of the LoRaWAN MAC for a simulated device: the firmware's ``MacState`` under CPython.

Owns what a simulated device does with the MAC commands the network sends it (issue 20): it applies
LinkADRReq (data rate, TX power, channel mask, NbTrans; all or nothing, LoRaWAN 1.0.4 §5.3), answers
DevStatusReq (§5.5) and the other requests, and puts the answers in the FOpts of its next uplink. The
rules are not written twice: every command goes through ``firmware/lorawan/mac.py``, the MAC the
project's MicroPython nodes run (plain Python, tested there on real MicroPython), imported the way
``simulator.models.own_nodes`` imports the node applications (``firmware/`` appended to the path).

It does not own frames (``simulator.devices`` builds them, ``simulator.city`` sends them) nor the radio
model (``simulator.radio``): ``links_at_power`` only turns the device's TX power into the path loss
the radio model already knows how to use.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from gateway.lorawan.mac import parse_commands
from simulator import radio
from simulator.models.own_nodes import FirmwareNotFound

FIRMWARE_DIR: Final = Path(__file__).resolve().parents[1] / "firmware"
REFERENCE_POWER_DBM: Final = radio.TX_POWER_DBM
"""The TX power the radio model's links assume (14 dBm): a lower power is that much more path loss."""


def firmware_mac(firmware_dir: Path = FIRMWARE_DIR) -> ModuleType:
    """``lorawan.mac`` of the firmware, imported as the board imports it (``/lib`` on the path).

    It imports ``binascii`` and the firmware's ``lorawan.region`` only: plain Python that CPython runs.
    """
    if not (firmware_dir / "lorawan" / "mac.py").is_file():
        raise FirmwareNotFound(f"no firmware MAC (lorawan/mac.py) in {firmware_dir}")
    if str(firmware_dir) not in sys.path:
        sys.path.append(str(firmware_dir))  # appended: never shadows a module of the simulator
    return importlib.import_module("lorawan.mac")


class DeviceMac:
    """One device's MAC state: the firmware's ``MacState`` and the answers it owes.

    ``dr`` is where the device starts (EU868 DR0 = SF12 for a device nobody tuned yet); the TX
    power starts at the firmware's default (14 dBm conducted, TXPower 0). ``cflist_hz``: the channels
    it knows beyond the three default ones (an OTAA device: the join-accept's CFList; an ABP device:
    what it was provisioned with). A LinkADRReq whose ChMask enables a channel it does not know is
    refused (LoRaWAN 1.0.4 §5.3: channel mask NACK).
    """

    def __init__(self, dr: int = 0, cflist_hz: tuple[int, ...] = ()) -> None:
        self._mac_module = firmware_mac()
        self.state: Any = self._mac_module.MacState(dr=dr, cflist_hz=cflist_hz)
        self.link_adr_answers: list[int] = []
        """Status byte of every LinkADRAns the device owed (7: all three bits set, applied)."""
        self.dev_status_answers = 0

    # --- what the radio uses ----------------------------------------------------------------

    @property
    def dr(self) -> int:
        return int(self.state.dr)

    @property
    def sf(self) -> int:
        return int(self._mac_module.region.DATA_RATES[self.state.dr][0])

    @property
    def tx_power_dbm(self) -> int:
        return int(self.state.power_dbm)

    @property
    def nb_trans(self) -> int:
        """Transmissions of each unconfirmed uplink (1.0.4 §5.3: NbTrans, 1..15)."""
        return int(self.state.nb_trans)

    @property
    def ch_mask(self) -> int:
        return int(self.state.ch_mask)

    def links_at_power(self, links: list[radio.Link]) -> list[radio.Link]:
        """The device's links as heard at its TX power (the model's links assume 14 dBm)."""
        below_db = REFERENCE_POWER_DBM - self.tx_power_dbm
        if below_db == 0:
            return links
        return [replace(link, loss_db=link.loss_db + below_db) for link in links]

    # --- the MAC exchange ---------------------------------------------------------------------

    def uplink_fopts(self) -> bytes:
        """The FOpts of the uplink being sent now (answers owed, sticky ones first); one-shot ones go."""
        fopts = bytes(self.state.uplink_fopts())
        self.state.uplink_sent()
        return fopts

    def downlink(
        self, commands: bytes, *, snr_db: float = 0.0, battery: int = 255, class_a: bool = True
    ) -> list[tuple[int, bytes]]:
        """Apply the MAC commands of one class A downlink (its FOpts, or its decrypted FPort-0 payload).

        ``battery`` goes in DevStatusAns (0 external power, 1..254, 255 unknown) with the downlink's
        ``snr_db`` as the demodulation margin. Returns the (CID, payload) list the firmware handled.
        A class A downlink also tells the device the network has its sticky answers (§5.4); a
        class C one does not.
        """
        if class_a:
            self.state.downlink_received()
        before = len(self.state.pending)
        handled: list[tuple[int, bytes]] = list(self.state.handle(commands, battery, snr_db))
        # What this downlink made the device owe, read back with the gateway's parser of uplink FOpts.
        owed, _ = parse_commands(bytes(self.state.pending[before:]), uplink=True)
        for answer in owed:
            if answer.name == "LinkADRAns":
                self.link_adr_answers.append(answer.payload[0])
            elif answer.name == "DevStatusAns":
                self.dev_status_answers += 1
        return handled
