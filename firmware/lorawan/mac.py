"""LoRaWAN 1.0.4 MAC commands on the device side (EU868): parse what the network asks, apply it, answer.

Owns the device's MAC state (channel plan with per-channel DR range and downlink frequency,
channel mask, DR, TX power, NbTrans, aggregated duty cycle, RX1DROffset, RX2 DR and
frequency, RX1 delay) and its rules from LoRaWAN 1.0.4 §5 and RP002-1.0.3 §2.1 (EU863-870):
the answers owed (LinkADRAns, DutyCycleAns, RXParamSetupAns, DevStatusAns, NewChannelAns,
RXTimingSetupAns, DlChannelAns), the "sticky" answers of §5.4/§5.7/§5.8 that repeat in every
uplink until a class A downlink arrives, and the requests a device may make (LinkCheckReq,
DeviceTimeReq) with their answers parsed.

Pure: no radio, clock or storage. ``device`` feeds it the FOpts / FPort-0 bytes of each
verified downlink, takes ``uplink_fopts()`` for the next uplink, and persists ``to_dict()``.
"""

import binascii

from lorawan import region

LINK_CHECK = 0x02
LINK_ADR = 0x03
DUTY_CYCLE = 0x04
RX_PARAM_SETUP = 0x05
DEV_STATUS = 0x06
NEW_CHANNEL = 0x07
RX_TIMING_SETUP = 0x08
TX_PARAM_SETUP = 0x09
DL_CHANNEL = 0x0A
DEVICE_TIME = 0x0D

# CID -> payload bytes of the commands a network sends (1.0.4 §5 Table 4).
DOWNLINK_SIZES = {
    LINK_CHECK: 2,
    LINK_ADR: 4,
    DUTY_CYCLE: 1,
    RX_PARAM_SETUP: 4,
    DEV_STATUS: 0,
    NEW_CHANNEL: 5,
    RX_TIMING_SETUP: 1,
    TX_PARAM_SETUP: 1,
    DL_CHANNEL: 4,
    DEVICE_TIME: 5,
}

MAX_CHANNELS = 16
MIN_FREQ_HZ = 863000000  # EU863-870 band edges (RP002 §2.1.2)
MAX_FREQ_HZ = 870000000
MAX_DR = len(region.DATA_RATES) - 1  # DR7 (FSK) is not supported by this firmware
ANTENNA_GAIN_DB = 2
"""MaxEIRP 16 dBm - 2 dBi antenna = 14 dBm conducted at TXPower 0 (RP002 §2.1.3 Table: TXPower)."""
MAX_TX_POWER_INDEX = 7  # TXPower 0..7 = MaxEIRP - 2·index dB (RP002 EU868)
MIN_POWER_DBM = 2
DEFAULT_NB_TRANS = 1


def parse_commands(data):
    """Split a downlink command stream into [(cid, payload)]; stops at the first unknown or cut one (§5)."""
    out = []
    pos = 0
    while pos < len(data):
        cid = data[pos]
        size = DOWNLINK_SIZES.get(cid)
        if size is None or pos + 1 + size > len(data):
            break
        out.append((cid, bytes(data[pos + 1 : pos + 1 + size])))
        pos += 1 + size
    return out


def _freq(b):
    return int.from_bytes(b[0:3], "little") * 100  # 24-bit, units of 100 Hz (§5.4, §5.6)


def _freq_ok(freq_hz):
    return MIN_FREQ_HZ <= freq_hz <= MAX_FREQ_HZ


class MacState:
    """What the network configured, and the answers owed; ``to_dict``/``from_dict`` for flash."""

    def __init__(self, dr=5, power_dbm=region.DEFAULT_TX_POWER_DBM, cflist_hz=()):
        # channel i: [freq_hz, min_dr, max_dr, dl_freq_hz or 0] or None (undefined)
        self.channels = [None] * MAX_CHANNELS  # type: list[list[int] | None]
        for i, f in enumerate(region.DEFAULT_CHANNELS_HZ):
            self.channels[i] = [f, 0, 5, 0]
        # CFList channels get DR0..DR5 (RP002 §2.1.4).
        for i, f in enumerate(cflist_hz):
            if i + 3 < MAX_CHANNELS:
                self.channels[i + 3] = [f, 0, 5, 0]
        self.ch_mask = 0
        for i, ch in enumerate(self.channels):
            if ch is not None:
                self.ch_mask |= 1 << i
        self.dr = dr
        self.power_dbm = power_dbm
        self.max_power_dbm = power_dbm
        self.nb_trans = DEFAULT_NB_TRANS
        self.max_duty_cycle = 0
        self.rx1_dr_offset = 0
        self.rx2_dr = region.RX2_DR
        self.rx2_freq_hz = region.RX2_FREQ_HZ
        self.rx_delay_s = region.RECEIVE_DELAY1_S
        self.pending = b""  # answers for the next uplink only
        self.sticky = {}  # type: dict[int, bytes]  # repeated until a class A downlink arrives
        self.link_check = None  # (margin_db, gw_cnt)
        self.device_time = None  # (gps_seconds, fraction_256)
        self.requests = b""  # LinkCheckReq / DeviceTimeReq queued for the next uplink

    # --- persistence ------------------------------------------------------------------

    def to_dict(self):
        return {
            "channels": self.channels,
            "ch_mask": self.ch_mask,
            "dr": self.dr,
            "power_dbm": self.power_dbm,
            "nb_trans": self.nb_trans,
            "max_duty_cycle": self.max_duty_cycle,
            "rx1_dr_offset": self.rx1_dr_offset,
            "rx2_dr": self.rx2_dr,
            "rx2_freq_hz": self.rx2_freq_hz,
            "rx_delay_s": self.rx_delay_s,
            "sticky": {str(cid): binascii.hexlify(ans).decode() for cid, ans in self.sticky.items()},
        }

    def load(self, d):
        for key in (
            "channels",
            "ch_mask",
            "dr",
            "power_dbm",
            "nb_trans",
            "max_duty_cycle",
            "rx1_dr_offset",
            "rx2_dr",
            "rx2_freq_hz",
            "rx_delay_s",
        ):
            if key in d:
                setattr(self, key, d[key])
        self.sticky = {int(cid): binascii.unhexlify(ans) for cid, ans in d.get("sticky", {}).items()}

    # --- what the device uses --------------------------------------------------------------

    def enabled_channels(self, dr=None):
        """[(index, freq_hz)] of the channels in the mask that allow ``dr`` (default: the current DR)."""
        dr = self.dr if dr is None else dr
        out = []  # type: list[tuple[int, int]]
        for i, ch in enumerate(self.channels):
            if ch is not None and self.ch_mask & (1 << i) and ch[1] <= dr <= ch[2]:
                out.append((i, ch[0]))
        return out

    def rx1_freq_hz(self, index):
        """RX1 frequency for an uplink on channel ``index``: the uplink's, unless DlChannelReq moved it."""
        ch = self.channels[index] if 0 <= index < MAX_CHANNELS else None
        if ch is None:
            return None
        return ch[3] or ch[0]

    def duty_cycle_divisor(self):
        """Off-time factor: the stricter of the sub-band's 1 % and the network's 1/2^MaxDCycle (§5.3)."""
        return max(region.DUTY_CYCLE_DIVISOR, 1 << self.max_duty_cycle)

    def uplink_fopts(self):
        """The MAC bytes for the next uplink (at most 15: whole commands only, sticky ones first)."""
        out = b""
        parts = [self.sticky[cid] for cid in sorted(self.sticky)] + [self.pending, self.requests]
        for ans in parts:
            # What does not fit is dropped: sticky answers come again, the network re-asks the rest.
            if len(out) + len(ans) <= 15:
                out += ans
        return out

    def uplink_sent(self):
        """The one-shot answers and requests went out; sticky answers stay (§5.4)."""
        self.pending = b""
        self.requests = b""

    def downlink_received(self):
        """A class A downlink arrived: the network has the sticky answers (§5.4, §5.7)."""
        self.sticky = {}

    def request_link_check(self):
        self.requests += bytes((LINK_CHECK,))

    def request_device_time(self):
        self.requests += bytes((DEVICE_TIME,))

    # --- commands ----------------------------------------------------------------------

    def handle(self, data, battery=255, snr_db=0):
        """Apply a downlink's MAC commands; returns the (cid, payload) list handled.

        ``battery`` (0 external power, 1..254, 255 unknown) and ``snr_db`` (of this downlink)
        go into DevStatusAns (§5.5).
        """
        commands = parse_commands(data)
        i = 0
        while i < len(commands):
            cid, payload = commands[i]
            if cid == LINK_ADR:
                j = i
                while j < len(commands) and commands[j][0] == LINK_ADR:
                    j += 1
                self._link_adr([p for _, p in commands[i:j]])
                i = j
                continue
            if cid == DUTY_CYCLE:
                # 1/2^MaxDCycle aggregated; 0 = no limit beyond the region's (§5.3).
                self.max_duty_cycle = payload[0] & 0x0F
                self.pending += bytes((DUTY_CYCLE,))
            elif cid == RX_PARAM_SETUP:
                self._rx_param_setup(payload)
            elif cid == DEV_STATUS:
                margin = int(snr_db + 0.5) if snr_db >= 0 else -int(-snr_db + 0.5)
                margin = max(-32, min(31, margin)) & 0x3F  # 6-bit signed (§5.5)
                self.pending += bytes((DEV_STATUS, max(0, min(255, battery)), margin))
            elif cid == NEW_CHANNEL:
                self._new_channel(payload)
            elif cid == RX_TIMING_SETUP:
                self.rx_delay_s = (payload[0] & 0x0F) or 1  # 0 means 1 s (§5.7)
                self.sticky[RX_TIMING_SETUP] = bytes((RX_TIMING_SETUP,))
            elif cid == DL_CHANNEL:
                self._dl_channel(payload)
            elif cid == LINK_CHECK:
                self.link_check = (payload[0], payload[1])
            elif cid == DEVICE_TIME:
                self.device_time = (int.from_bytes(payload[0:4], "little"), payload[4])
            # TxParamSetupReq: not implemented in EU868 devices (RP002 §2.1.8): no answer.
            i += 1
        return commands

    def _link_adr(self, block):
        """A contiguous block of LinkADRReq: channel masks applied in order, DR/power/NbTrans of the last.

        All or nothing (1.0.4 §5.3): any NACK leaves the state unchanged; every command of the
        block gets the same status.
        """
        mask = self.ch_mask
        mask_ok = True
        for p in block:
            ch_mask = p[1] | (p[2] << 8)
            cntl = (p[3] >> 4) & 0x07
            if cntl == 0:
                for i in range(MAX_CHANNELS):
                    if ch_mask & (1 << i) and self.channels[i] is None:
                        mask_ok = False
                mask = ch_mask
            elif cntl == 6:
                # RP002 EU868: ChMaskCntl 6 = all defined channels on, whatever ChMask says.
                mask = 0
                for i, ch in enumerate(self.channels):
                    if ch is not None:
                        mask |= 1 << i
            else:
                mask_ok = False  # RFU
        if mask == 0:
            mask_ok = False
        last = block[-1]
        dr = last[0] >> 4
        tx_power = last[0] & 0x0F
        nb_trans = last[3] & 0x0F
        dr_ok = True
        if dr == 0x0F:
            dr = self.dr  # 1.0.4: 0xF keeps the current value
        elif dr > MAX_DR:
            dr_ok = False
        if dr_ok:
            # The DR must be allowed on an enabled channel (the new mask, or the kept one on NACK).
            use = mask if mask_ok else self.ch_mask
            dr_ok = False
            for i, ch in enumerate(self.channels):
                if ch is not None and use & (1 << i) and ch[1] <= dr <= ch[2]:
                    dr_ok = True
        power_ok = True
        power_dbm = self.power_dbm
        if tx_power != 0x0F:
            if tx_power > MAX_TX_POWER_INDEX:
                power_ok = False
            else:
                # Above what the device can do: ACK and use its maximum (1.0.4 §5.3).
                power_dbm = min(self.max_power_dbm, region.MAX_EIRP_DBM - ANTENNA_GAIN_DB - 2 * tx_power)
                power_dbm = max(MIN_POWER_DBM, power_dbm)
        status = (4 if power_ok else 0) | (2 if dr_ok else 0) | (1 if mask_ok else 0)
        if status == 7:
            self.ch_mask = mask
            self.dr = dr
            self.power_dbm = power_dbm
            self.nb_trans = nb_trans or DEFAULT_NB_TRANS  # 0 = the default (1.0.4 §5.3)
        self.pending += bytes((LINK_ADR, status)) * len(block)

    def _rx_param_setup(self, p):
        rx1_offset = (p[0] >> 4) & 0x07
        rx2_dr = p[0] & 0x0F
        freq_hz = _freq(p[1:4])
        status = (
            (4 if rx1_offset <= 5 else 0)  # RP002 EU868: RX1DROffset 0..5
            | (2 if rx2_dr <= MAX_DR else 0)
            | (1 if _freq_ok(freq_hz) else 0)
        )
        if status == 7:
            self.rx1_dr_offset = rx1_offset
            self.rx2_dr = rx2_dr
            self.rx2_freq_hz = freq_hz
        # Sticky: repeated in every uplink until a class A downlink is received (§5.4).
        self.sticky[RX_PARAM_SETUP] = bytes((RX_PARAM_SETUP, status))

    def _new_channel(self, p):
        index = p[0]
        freq_hz = _freq(p[1:4])
        min_dr = p[4] & 0x0F
        max_dr = p[4] >> 4
        if index < len(region.DEFAULT_CHANNELS_HZ) or index >= MAX_CHANNELS:
            # The default channels cannot be changed (RP002 §2.1.7): NACK both.
            self.pending += bytes((NEW_CHANNEL, 0))
            return
        if freq_hz == 0:
            # Frequency 0 disables the channel (§5.6).
            self.channels[index] = None
            self.ch_mask &= ~(1 << index)
            self.pending += bytes((NEW_CHANNEL, 3))
            return
        dr_ok = min_dr <= max_dr <= MAX_DR
        freq_ok = _freq_ok(freq_hz)
        if dr_ok and freq_ok:
            self.channels[index] = [freq_hz, min_dr, max_dr, 0]
            self.ch_mask |= 1 << index
        self.pending += bytes((NEW_CHANNEL, (2 if dr_ok else 0) | (1 if freq_ok else 0)))

    def _dl_channel(self, p):
        index = p[0]
        freq_hz = _freq(p[1:4])
        exists = index < MAX_CHANNELS and self.channels[index] is not None
        freq_ok = _freq_ok(freq_hz)
        if exists and freq_ok:
            self.channels[index][3] = freq_hz
        # DlChannelAns is sticky like RXParamSetupAns (1.0.4 §5.8).
        self.sticky[DL_CHANNEL] = bytes((DL_CHANNEL, (2 if exists else 0) | (1 if freq_ok else 0)))
