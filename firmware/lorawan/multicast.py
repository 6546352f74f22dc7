"""Multicast groups of a class C end device (LoRaWAN 1.0.4 §11.2.2 frame rules, TS005 contexts).

Owns the device side of up to ``MAX_GROUPS`` multicast contexts, as TS005 (Remote Multicast
Setup) defines them: the group address McAddr, the session keys McNwkSKey (MIC) and McAppSKey
(FRMPayload), the counter window minMcFCount..maxMcFCount and the last McFCntDown accepted, and
the channel (frequency, DR) the group is sent on, by default RX2's (869.525 MHz, DR0). It says
which received frames belong to a group (their DevAddr is its McAddr), checks and decrypts them,
and keeps the counters in a JSON-able form that ``device`` saves with the session, so a reset
never reopens a replay.

A multicast frame is accepted only as LoRaWAN allows one (1.0.4 §11.2.2, TS005 §2.1): MType
Unconfirmed Data Down, ACK and the RFU/ADRACKReq bit clear, no FOpts, an FPort above 0 (no MAC
commands: a key every member shares authenticates nothing about one device), a MIC under
McNwkSKey with Dir = 1 and McAddr in B0, and a 32-bit FCnt above the last one accepted and
inside the group's window. The device never answers or acknowledges one (``device`` does not
touch the ACK owed, the MAC state nor ADR_ACK_CNT for it).

It does not own the radio, the class C loop (``device.listen_class_c``) nor what the frame
commands (the node's ``on_downlink``). Remote setup (McGroupSetupReq, McClassCSessionReq) and
the McKey derivation are not here: the groups come from the node's ``config.json``.
"""

import binascii

from lorawan import frames, region
from lorawan.frames import FrameError

MAX_GROUPS = 4  # TS005: McGroupIDHeader is 2 bits
MAX_FCNT = 0xFFFFFFFF
_MIN_FREQ_HZ = 863000000  # EU868 band edges (RP002 §2.1.1)
_MAX_FREQ_HZ = 870000000


def _unhex(text, size, what):
    raw = binascii.unhexlify(text)
    if len(raw) != size:
        raise ValueError("multicast " + what + " must be " + str(size) + " bytes")
    return raw


class McGroup:
    """One multicast context; ``mc_addr`` MSB first (as printed), ``last_fcnt`` -1 before the first frame."""

    def __init__(
        self,
        mc_addr,
        mc_nwk_s_key,
        mc_app_s_key,
        min_fcnt=0,
        max_fcnt=MAX_FCNT,
        freq_hz=region.RX2_FREQ_HZ,
        dr=region.RX2_DR,
    ):
        if not 0 <= min_fcnt <= max_fcnt <= MAX_FCNT:
            raise ValueError("multicast needs 0 <= min_fcnt <= max_fcnt <= 2^32-1")
        if not 0 <= dr < len(region.DATA_RATES):
            raise ValueError("multicast dr out of range")
        if not _MIN_FREQ_HZ <= freq_hz <= _MAX_FREQ_HZ:
            raise ValueError("multicast freq_hz outside 863-870 MHz")
        self.mc_addr = bytes(mc_addr)
        self.keys = frames.new_keys(mc_nwk_s_key, mc_app_s_key)
        # A key check value (AES of a zero block, as card and HSM tooling use): it tells whether the
        # stored counter belongs to these keys without writing a key to the state file.
        self.key_check = binascii.hexlify(self.keys[0].encrypt_block(bytes(16))[:4]).decode()
        self.min_fcnt = min_fcnt
        self.max_fcnt = max_fcnt
        self.freq_hz = freq_hz
        self.dr = dr
        self.last_fcnt = -1

    @property
    def name(self):
        return binascii.hexlify(self.mc_addr).decode()


def group_from_config(item):
    """A ``McGroup`` from one ``config.json`` entry (hex keys; see firmware/README.md)."""
    known = ("mc_addr", "mc_nwk_s_key", "mc_app_s_key", "min_fcnt", "max_fcnt", "freq_hz", "dr")
    for key in item:
        if key not in known:
            raise ValueError("unknown multicast key: " + key)
    return McGroup(
        _unhex(item["mc_addr"], 4, "mc_addr"),
        _unhex(item["mc_nwk_s_key"], 16, "mc_nwk_s_key"),
        _unhex(item["mc_app_s_key"], 16, "mc_app_s_key"),
        item.get("min_fcnt", 0),
        item.get("max_fcnt", MAX_FCNT),
        item.get("freq_hz", region.RX2_FREQ_HZ),
        item.get("dr", region.RX2_DR),
    )


def open_frame(group, phy):
    """Check and decrypt a multicast frame of ``group``: a ``frames.Downlink`` with ``mc_addr`` set.

    ``FrameError`` (with a reason) for anything LoRaWAN forbids in a multicast frame, another
    address, a bad MIC, a counter not above the last accepted one or outside the group's window.
    The header rules are checked before the MIC: they cost nothing, the pure-Python CMAC does.
    Does not move ``group.last_fcnt`` (``Multicast.accept`` does, once the frame is taken).
    """
    if len(phy) < 13:
        # MHDR 1, DevAddr 4, FCtrl 1, FCnt 2, FPort 1, MIC 4: a multicast frame always has an FPort.
        raise FrameError("multicast frame of " + str(len(phy)) + " bytes", "truncated")
    if phy[0] >> 5 != frames.MTYPE_UNCONFIRMED_DOWN:
        raise FrameError("multicast frames are unconfirmed data down", "not_unconfirmed_down")
    fctrl = phy[5]
    if fctrl & 0x0F:
        raise FrameError("multicast frames carry no FOpts", "fopts")
    if fctrl & 0x60:
        raise FrameError("multicast frames have ACK and ADRACKReq clear", "ack")
    if phy[8] == 0:
        raise FrameError("multicast frames carry no MAC commands on FPort 0", "fport0")
    # The 32-bit counter is rebuilt above the last accepted one, and never below the window.
    last = group.last_fcnt if group.last_fcnt >= group.min_fcnt else group.min_fcnt - 1
    nwk_aes, app_aes = group.keys
    down = frames.open_downlink(nwk_aes, app_aes, group.mc_addr, last, phy)
    if down.fcnt32 > group.max_fcnt:
        raise FrameError("multicast FCnt beyond the group's max_fcnt", "beyond_max_fcnt")
    down.mc_addr = group.mc_addr
    return down


class Multicast:
    """The device's groups: which frames are theirs, their check, their counters (JSON for storage)."""

    def __init__(self, groups=()):
        groups = list(groups)
        if len(groups) > MAX_GROUPS:
            raise ValueError("at most " + str(MAX_GROUPS) + " multicast groups")
        names = [g.name for g in groups]
        for name in names:
            if names.count(name) > 1:
                raise ValueError("multicast group " + name + " given twice")
        # One SX1276 demodulates one frequency and spreading factor at a time.
        for g in groups:
            if (g.freq_hz, g.dr) != (groups[0].freq_hz, groups[0].dr):
                raise ValueError("multicast groups must share one frequency and DR")
        self.groups = groups

    @classmethod
    def from_config(cls, items):
        """From ``config.json``'s ``multicast`` list (None or empty: no groups)."""
        return cls([group_from_config(item) for item in items or ()])

    def channel(self):
        """(freq_hz, dr) the class C receiver listens on for the groups, or None without groups."""
        if not self.groups:
            return None
        return self.groups[0].freq_hz, self.groups[0].dr

    def group_of(self, phy):
        """The group whose McAddr is the frame's DevAddr (frames carry it little-endian), or None."""
        if len(phy) < 5:
            return None
        addr = bytes(reversed(bytes(phy[1:5])))
        for g in self.groups:
            if g.mc_addr == addr:
                return g
        return None

    def accept(self, group, phy):
        """``open_frame``, then the group's counter moves to the frame's (the caller saves ``to_dict``)."""
        down = open_frame(group, phy)
        group.last_fcnt = down.fcnt32
        return down

    def load(self, saved):
        """Take back the counters ``to_dict`` saved; a group whose keys changed starts afresh."""
        for g in self.groups:
            entry = saved.get(g.name)
            if entry is not None and entry.get("key_check") == g.key_check:
                g.last_fcnt = entry.get("last_fcnt", -1)

    def to_dict(self):
        return {g.name: {"key_check": g.key_check, "last_fcnt": g.last_fcnt} for g in self.groups}
