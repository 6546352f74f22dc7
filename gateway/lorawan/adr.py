"""Network-side ADR (adaptive data rate) of the edge network server, EU868.

Owns the decision (``decide``, pure: Semtech's recommended algorithm, as ChirpStack's default
one), the LinkADRReq bytes and the LinkADRAns reading (LoRaWAN 1.0.4 §5.3), and ``AdrPeer``: the
``MacPeer`` of the downlink scheduler that keeps, per device, the last uplinks (FCnt, best SNR,
data rate) and the settings the device acknowledged, asks a LinkADRReq when the decision differs,
asks again when the request went unanswered, falls back to the 3 default channels for a device that
refuses the gateway's channel mask alone, and stops asking what the device refused. It is a
``CommitSink`` for that state (table ``adr_state``, ``gateway/db/schema_add_adr.sql``), restored at
start and reset with each new session (a join).

A device takes part only when its uplinks set FCtrl ADR (bit 7, §4.3.1.1: the device lets the
network drive its rate) and its registry entry does not opt it out (``devices.adr = 0``).

It does not own when a downlink is sent nor the FOpts room (``downlink``), ADRACKReq (the
scheduler answers it), nor the device's side (``firmware/lorawan/mac.py``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from gateway.lorawan import mac, region
from gateway.messages import UplinkData

__all__ = [
    "DEFAULT_CHANNELS_HZ",
    "MAX_EIRP_DBM",
    "AdrPeer",
    "AdrRow",
    "AdrSettings",
    "LinkAdrAns",
    "LinkSettings",
    "channel_mask",
    "decide",
    "link_adr_req",
    "lost_ratio",
    "parse_link_adr_ans",
    "required_snr_db",
    "tx_power_dbm",
]

logger = logging.getLogger(__name__)

LINK_ADR: Final = 0x03
"""CID of LinkADRReq (downlink) and LinkADRAns (uplink), LoRaWAN 1.0.4 §5.3."""
DEFAULT_CHANNELS_HZ: Final = (868_100_000, 868_300_000, 868_500_000)
"""The three channels every EU868 device has (RP002-1.0.3 §2.4.2): ChMask bits 0..2."""
MAX_EIRP_DBM: Final = 16
"""EU868 default MaxEIRP (RP002 §2.4.1): TXPower index 0; each index lowers it by 2 dB."""
MAX_LORA_DR: Final = 5
"""DR0..DR5: the 125 kHz LoRa data rates the SNR rule applies to (DR6 is 250 kHz)."""
REASK_AFTER_UPLINKS: Final = 3
"""A LinkADRReq unanswered after this many uplinks is sent again (the downlink may be lost)."""
HISTORY_WRITE_EVERY: Final = 5
"""A device's history alone is written every this many uplinks (SD-card wear); settings at once."""

_FCTRL_ADR: Final = 0x80
"""Uplink FCtrl bit 7 (§4.3.1.1): the device accepts network-side ADR."""
_FCTRL_ADR_ACK_REQ: Final = 0x40
"""Uplink FCtrl bit 6 (§4.3.1.1): no downlink for ADR_ACK_LIMIT uplinks; its backoff may have begun."""
_DEFAULT_MASK: Final = (1 << len(DEFAULT_CHANNELS_HZ)) - 1


@dataclass(frozen=True, slots=True)
class LinkSettings:
    dr: int
    """EU868 DR0..DR5 (LoRa 125 kHz)."""
    tx_power: int
    """RP002 EU868 TXPower index 0..7: 0 = max EIRP (16 dBm), each step -2 dB."""
    nb_trans: int
    """1..15 transmissions of each uplink."""


@dataclass(frozen=True, slots=True)
class AdrSettings:
    installation_margin_db: float = 10.0
    history: int = 20
    """Uplinks whose SNR and loss the decision looks at."""
    min_dr: int = 0
    max_dr: int = 5
    max_tx_power: int = 7
    """The lowest power index allowed (EU868: 0..7)."""


def required_snr_db(dr: int) -> float:
    """The lowest SNR at which data rate ``dr`` still demodulates (SX1276 datasheet floor)."""
    return mac.DEMOD_FLOOR_DB[region.data_rate(min(dr, MAX_LORA_DR)).sf]


def tx_power_dbm(tx_power: int) -> int:
    """The EIRP of a TXPower index (RP002 EU868 table: MaxEIRP - 2 dB per index)."""
    return MAX_EIRP_DBM - 2 * tx_power


def decide(
    snrs_db: Sequence[float],
    current: LinkSettings,
    *,
    lost_ratio: float,
    settings: AdrSettings = AdrSettings(),
) -> LinkSettings:
    """Semtech's recommended network-side ADR (as ChirpStack's default algorithm): margin = max SNR
    of the history - required SNR of current DR - installation margin; steps = margin / 3 truncated
    toward zero (Semtech's ``NStep = int(SNRmargin / 3)``, ChirpStack's ``as isize``: a margin within
    ±3 dB changes nothing, where floor() raised the power at -0.1 dB and lowered it again at +3 dB,
    settling p95 595 uplinks instead of 142 in ``bench/bench_adr.py``);
    positive steps raise DR up to max_dr, then lower power (raise the index) up to max_tx_power;
    negative steps raise power back to index 0 (never lower DR). NbTrans from the loss ratio
    (ChirpStack's table: <5 % -> one less, 5-10 % same, 10-30 % one more, >30 % two more; 1..3).

    An empty history changes nothing. A DR above ``max_dr`` is brought down to it."""
    nb_trans = _nb_trans(current.nb_trans, lost_ratio)
    dr, tx_power = min(current.dr, settings.max_dr), current.tx_power
    if not snrs_db:
        return LinkSettings(dr, tx_power, current.nb_trans)
    margin_db = max(snrs_db) - required_snr_db(current.dr) - settings.installation_margin_db
    steps = int(margin_db / 3)
    while steps > 0:
        if dr < settings.max_dr:
            dr += 1
        elif tx_power < settings.max_tx_power:
            tx_power += 1
        else:
            break
        steps -= 1
    while steps < 0 and tx_power > 0:
        tx_power -= 1
        steps += 1
    return LinkSettings(max(dr, settings.min_dr), tx_power, nb_trans)


def _nb_trans(current: int, lost_ratio: float) -> int:
    index = max(1, min(3, current)) - 1
    if lost_ratio < 0.05:
        row = (1, 1, 2)
    elif lost_ratio < 0.10:
        row = (1, 2, 3)
    elif lost_ratio < 0.30:
        row = (2, 3, 3)
    else:
        row = (3, 3, 3)
    return row[index]


def lost_ratio(fcnts: Sequence[int]) -> float:
    """The share of uplinks lost, from the gaps between the FCnts received (oldest first)."""
    if len(fcnts) < 2:
        return 0.0
    expected = fcnts[-1] - fcnts[0] + 1
    return max(0.0, (expected - len(fcnts)) / expected)


def channel_mask(cflist_hz: Sequence[int]) -> int:
    """EU868 ChMask of the channels the gateway uses: the 3 default channels (bits 0..2) and the
    join-accept CFList channels in order (bits 3..7, RP002 §2.4.4)."""
    return (1 << (len(DEFAULT_CHANNELS_HZ) + len(cflist_hz))) - 1


def link_adr_req(wanted: LinkSettings, ch_mask: int) -> bytes:
    """LinkADRReq (CID 0x03, §5.3): DataRate_TXPower (DR in bits 7..4, TXPower in 3..0), ChMask
    (16 bits, little-endian), Redundancy (ChMaskCntl 0 in bits 6..4, NbTrans in 3..0)."""
    if not 0 <= wanted.dr <= 15 or not 0 <= wanted.tx_power <= 15 or not 0 <= wanted.nb_trans <= 15:
        raise ValueError(f"LinkADRReq fields are 4 bits: {wanted}")
    return bytes(
        (LINK_ADR, wanted.dr << 4 | wanted.tx_power, ch_mask & 0xFF, ch_mask >> 8 & 0xFF, wanted.nb_trans)
    )


@dataclass(frozen=True, slots=True)
class LinkAdrAns:
    """LinkADRAns Status (§5.3): the device applies the request only when all three are ACKs."""

    power_ack: bool
    """Bit 2."""
    dr_ack: bool
    """Bit 1."""
    ch_mask_ack: bool
    """Bit 0."""

    @property
    def accepted(self) -> bool:
        return self.power_ack and self.dr_ack and self.ch_mask_ack


def parse_link_adr_ans(payload: bytes) -> LinkAdrAns:
    """The one Status byte of a LinkADRAns; ValueError for another length."""
    if len(payload) != 1:
        raise ValueError(f"LinkADRAns carries 1 byte, got {len(payload)}")
    status = payload[0]
    return LinkAdrAns(bool(status & 0x04), bool(status & 0x02), bool(status & 0x01))


@dataclass(frozen=True, slots=True)
class _Heard:
    fcnt: int
    snr_db: float
    dr: int


@dataclass(slots=True)
class _Device:
    session_tag: str
    settings: LinkSettings
    """What the device uses as far as we know: DR of its last uplink, power and NbTrans acknowledged."""
    history: deque[_Heard]
    asked: LinkSettings | None = None
    """A LinkADRReq sent and not answered yet."""
    asked_at_fcnt: int = 0
    refused: LinkSettings | None = None
    """The last settings the device NACKed: not asked again until the decision changes."""
    unwritten: int = 0
    """Uplinks in the history since the row was last handed to the group commit."""
    default_channels_only: bool = False
    """The device refused the gateway's channel mask alone: it knows only the default channels."""


@dataclass(frozen=True, slots=True)
class AdrRow:
    """One ``adr_state`` row, as the group commit writes it."""

    dev_eui: str
    session_tag: str
    dr: int
    tx_power: int
    nb_trans: int
    history: str


class AdrPeer:
    """Per-device ADR on the downlink scheduler (``MacPeer``); a ``CommitSink`` for its state.

    ``requests`` runs once for each accepted uplink (``MacPeer`` contract): it is where the uplink
    joins the device's history and where the decision is made.
    """

    def __init__(
        self,
        settings: AdrSettings = AdrSettings(),
        *,
        cflist_hz: Sequence[int] = (),
        enabled: bool = True,
    ) -> None:
        self._settings = settings
        self._ch_mask = channel_mask(cflist_hz)
        self._enabled = enabled
        self._devices: dict[str, _Device] = {}
        self._opted_out: frozenset[str] = frozenset()
        self._pending: dict[str, AdrRow] = {}
        self._nack_logged: set[str] = set()
        self.counters: Counter[str] = Counter()

    # --- what the registry says --------------------------------------------------------------------

    def set_opted_out(self, dev_euis: Iterable[str]) -> None:
        """The devices whose registry entry says ``adr`` off (DevEUI hex): never asked."""
        self._opted_out = frozenset(dev_euis)

    def forget(self, dev_eui: str) -> None:
        """The device left the registry (its ``adr_state`` row went with it: ON DELETE CASCADE)."""
        self._devices.pop(dev_eui, None)
        self._pending.pop(dev_eui, None)
        self._nack_logged.discard(dev_eui)

    # --- MacPeer -------------------------------------------------------------------------------

    def answer(self, up: UplinkData, command: mac.MacCommand) -> None:
        if command.cid != LINK_ADR:
            return
        eui = str(up.dev_eui)
        device = self._devices.get(eui)
        try:
            status = parse_link_adr_ans(command.payload)
        except ValueError:
            self.counters["adr.bad_answer"] += 1
            return
        if device is None or device.session_tag != up.session_tag or device.asked is None:
            self.counters["adr.unasked_answer"] += 1
            return
        asked, device.asked = device.asked, None
        if status.accepted:
            self.counters["adr.accepted"] += 1
            device.settings, device.refused = asked, None
            device.history.clear()  # its SNRs were measured at the old power
            self._stage(eui, device)
            self._nack_logged.discard(eui)
            return
        if (
            status.power_ack
            and status.dr_ack
            and not device.default_channels_only
            and self._ch_mask != _DEFAULT_MASK
        ):
            # Only the mask refused: a channel it enables is not defined in the device (§5.3), an
            # ABP device that never got the CFList. Asked again next uplink with the default channels.
            self.counters["adr.default_channels"] += 1
            device.default_channels_only = True
            logger.info("%s does not know the CFList channels: LinkADRReq with the 3 default channels", eui)
            return
        self.counters["adr.refused"] += 1
        device.refused = asked
        if eui not in self._nack_logged:
            self._nack_logged.add(eui)
            logger.warning(
                "%s refused LinkADRReq DR%d TXPower %d NbTrans %d (power %s, DR %s, channel mask %s):"
                " not asked again until its uplinks change",
                eui, asked.dr, asked.tx_power, asked.nb_trans, _ack(status.power_ack),
                _ack(status.dr_ack), _ack(status.ch_mask_ack),
            )  # fmt: skip

    def requests(self, up: UplinkData, room_bytes: int) -> bytes:
        eui = str(up.dev_eui)
        rx = up.frame.rx
        try:
            uplink_dr = region.dr_of(rx.sf, rx.bw_hz)
        except ValueError:
            return b""  # FSK or a modulation outside EU868: nothing to measure against
        device = self._note(eui, up, uplink_dr)
        if not self._enabled or eui in self._opted_out or not up.frame.phy_payload[5] & _FCTRL_ADR:
            return b""
        if device.asked is not None:
            if up.fcnt - device.asked_at_fcnt < REASK_AFTER_UPLINKS:
                return b""
            self.counters["adr.asked_again"] += 1
            return self._ask(device, device.asked, up.fcnt, room_bytes)
        if len(device.history) < self._settings.history or uplink_dr > MAX_LORA_DR:
            return b""
        wanted = decide(
            [h.snr_db for h in device.history],
            device.settings,
            lost_ratio=lost_ratio([h.fcnt for h in device.history]),
            settings=self._settings,
        )
        if wanted == device.refused:
            return b""
        device.refused = None  # the uplinks changed the decision: asking is worth it again
        if wanted == device.settings:
            if not up.frame.phy_payload[5] & _FCTRL_ADR_ACK_REQ:
                return b""
            # ADRACKReq: no downlink reached the device for ADR_ACK_LIMIT uplinks, and past
            # ADR_ACK_DELAY more it went back to its default power (§4.3.1.1) without telling. What
            # it acknowledged may no longer be what it uses: say it again (the scheduler answers
            # ADRACKReq with a downlink anyway, the request rides in its FOpts).
            self.counters["adr.reasserted"] += 1
            return self._ask(device, wanted, up.fcnt, room_bytes)
        self.counters["adr.asked"] += 1
        return self._ask(device, wanted, up.fcnt, room_bytes)

    def _ask(self, device: _Device, wanted: LinkSettings, fcnt: int, room_bytes: int) -> bytes:
        request = link_adr_req(wanted, _DEFAULT_MASK if device.default_channels_only else self._ch_mask)
        if len(request) > room_bytes:
            return b""  # the scheduler's own answers filled FOpts: decided again next uplink
        device.asked, device.asked_at_fcnt = wanted, fcnt
        return request

    def _note(self, eui: str, up: UplinkData, uplink_dr: int) -> _Device:
        device = self._devices.get(eui)
        if device is None or device.session_tag != up.session_tag:
            # A new session (a join, or the first uplink since the start): the device starts from
            # the defaults of §5.3 (TXPower 0, NbTrans 1) at the data rate it uses.
            device = _Device(
                up.session_tag, LinkSettings(uplink_dr, 0, 1), deque(maxlen=self._settings.history)
            )
            self._devices[eui] = device
        snr_db = up.frame.rx.snr_db
        last = device.history[-1] if device.history else None
        if last is not None and last.fcnt == up.fcnt:
            # The same uplink again (an ACK owed again): keep its best SNR.
            device.history[-1] = replace(last, snr_db=max(last.snr_db, snr_db))
        else:
            device.history.append(_Heard(up.fcnt, snr_db, uplink_dr))
            device.unwritten += 1
        if device.settings.dr != uplink_dr:
            if uplink_dr < device.settings.dr and (device.asked is None or device.asked.dr != uplink_dr):
                # A lower data rate nobody asked for: the device's ADR backoff (§4.3.1.1: default
                # power first, then a lower data rate) or a reset. Either way it is at TXPower 0 now.
                device.settings = replace(device.settings, dr=uplink_dr, tx_power=0)
            else:
                device.settings = replace(device.settings, dr=uplink_dr)
            self._stage(eui, device)
        elif device.unwritten >= HISTORY_WRITE_EVERY or eui in self._pending:
            self._stage(eui, device)  # a row still waiting for its group takes this uplink too
        return device

    # --- views ---------------------------------------------------------------------------------

    def link(self, dev_eui: str) -> dict[str, Any]:
        """What the views show of a device (``dr``, ``tx_power_dbm``, ``link_margin_db``: the best
        SNR of its history above the floor of its DR); {} for a device ADR knows nothing of."""
        device = self._devices.get(dev_eui)
        if device is None:
            return {}
        margin = None
        if device.history:
            best = max(h.snr_db for h in device.history)
            margin = round(best - required_snr_db(device.settings.dr), 1)
        return {
            "dr": device.settings.dr,
            "tx_power_dbm": tx_power_dbm(device.settings.tx_power),
            "link_margin_db": margin,
        }

    # --- durable state -------------------------------------------------------------------------

    def _stage(self, eui: str, device: _Device) -> None:
        device.unwritten = 0
        history = json.dumps([[h.fcnt, h.snr_db, h.dr] for h in device.history], separators=(",", ":"))
        s = device.settings
        self._pending[eui] = AdrRow(eui, device.session_tag, s.dr, s.tx_power, s.nb_trans, history)

    def restore(self, conn: sqlite3.Connection) -> None:
        """Take back the state of the devices' current sessions (at start, on the database thread,
        before any uplink). A row of another session, or damaged, is skipped."""
        rows = conn.execute(
            "SELECT a.dev_eui, a.session_tag, a.dr, a.tx_power, a.nb_trans, a.history FROM adr_state a"
            " JOIN sessions s ON s.dev_eui = a.dev_eui AND s.session_tag = a.session_tag"
        ).fetchall()
        for eui, tag, dr, tx_power, nb_trans, text in rows:
            try:
                heard = [_Heard(int(f), float(snr), int(d)) for f, snr, d in json.loads(text)]
            except (ValueError, TypeError) as exc:
                logger.warning("ADR state of %s not restored: %s", eui, exc)
                continue
            history = deque(heard[-self._settings.history :], maxlen=self._settings.history)
            self._devices[eui] = _Device(tag, LinkSettings(int(dr), int(tx_power), int(nb_trans)), history)
        self.counters["adr.restored"] = len(self._devices)

    def take(self) -> list[AdrRow] | None:
        if not self._pending:
            return None
        taken = list(self._pending.values())
        self._pending = {}
        return taken

    def write(self, conn: sqlite3.Connection, taken: list[AdrRow]) -> None:
        # Only onto the device's current session: a row of a session a join replaced, or of a device
        # removed from the registry, is not written.
        conn.executemany(
            "INSERT OR REPLACE INTO adr_state (dev_eui, session_tag, dr, tx_power, nb_trans, history)"
            " SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS"
            " (SELECT 1 FROM sessions WHERE dev_eui = ? AND session_tag = ?)",
            [
                (r.dev_eui, r.session_tag, r.dr, r.tx_power, r.nb_trans, r.history, r.dev_eui, r.session_tag)
                for r in taken
            ],
        )

    def committed(self, taken: list[AdrRow]) -> None:
        """Nothing to do: the state in memory is already ahead."""

    def give_back(self, taken: list[AdrRow]) -> None:
        """The group failed (a full disk): these rows go with the next one, unless a newer row of the
        same device is already pending."""
        for row in taken:
            self._pending.setdefault(row.dev_eui, row)


def _ack(ok: bool) -> str:
    return "ACK" if ok else "NACK"
