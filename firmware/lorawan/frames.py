"""LoRaWAN 1.0.x frames as an end device sees them: join-request out, join-accept in, data frames.

Owns the byte layouts and the cryptography bound to them (LoRaWAN 1.0.4 §4, §6.2): MIC
blocks (B0), the FRMPayload keystream (A blocks), the join-accept "decrypt" with AES encrypt,
and session-key derivation. Pure: no radio, no clock, no storage (``device`` has those).

Identifiers passed in are MSB first (as printed on labels: DevEUI 70b3d57ed0001234); the
frame carries them little-endian, and this module does the reversal.
"""

from lorawan.aes import Aes
from lorawan.cmac import cmac

MTYPE_JOIN_REQUEST = 0
MTYPE_JOIN_ACCEPT = 1
MTYPE_UNCONFIRMED_UP = 2
MTYPE_UNCONFIRMED_DOWN = 3
MTYPE_CONFIRMED_UP = 4
MTYPE_CONFIRMED_DOWN = 5

MIC_BYTES = 4
MAX_FOPTS_BYTES = 15


class FrameError(ValueError):
    """A received frame that is malformed, not for us, or does not authenticate; ``reason`` says which."""

    def __init__(self, message, reason):
        # super(), not ValueError.__init__(self, ...): MicroPython's built-in types have no __init__.
        super().__init__(message)
        self.reason = reason


def _rev(b):
    return bytes(reversed(bytes(b)))


def build_join_request(app_key_aes, join_eui, dev_eui, dev_nonce):
    """A join-request (§6.2.4): MHDR | JoinEUI | DevEUI | DevNonce | MIC (CMAC under the AppKey)."""
    if len(join_eui) != 8 or len(dev_eui) != 8 or not 0 <= dev_nonce <= 0xFFFF:
        raise ValueError("join_eui/dev_eui are 8 bytes, dev_nonce 0..65535")
    msg = bytes((MTYPE_JOIN_REQUEST << 5,)) + _rev(join_eui) + _rev(dev_eui) + dev_nonce.to_bytes(2, "little")
    return msg + cmac(None, msg, app_key_aes)[:MIC_BYTES]


class JoinAccept:
    """The clear fields of a join-accept; identifiers MSB first, ``*_wire`` as sent (for key derivation)."""

    def __init__(self, body):
        self.join_nonce_wire = body[0:3]
        self.net_id_wire = body[3:6]
        self.join_nonce = int.from_bytes(body[0:3], "little")
        self.net_id = _rev(body[3:6])
        self.dev_addr = _rev(body[6:10])
        self.rx1_dr_offset = (body[10] >> 4) & 0x07
        self.rx2_dr = body[10] & 0x0F
        # RxDelay 0 means 1 s (§5.7 RXTimingSetupReq, same encoding in the join-accept).
        self.rx_delay_s = (body[11] & 0x0F) or 1
        self.cflist_hz = []
        cflist = body[12:]
        if len(cflist) == 16 and cflist[15] == 0:
            # EU868 CFList type 0: five 24-bit LE frequencies in units of 100 Hz (RP002 §2.1.3).
            for i in range(0, 15, 3):
                freq = int.from_bytes(cflist[i : i + 3], "little") * 100
                if freq:
                    self.cflist_hz.append(freq)


def open_join_accept(app_key_aes, phy):
    """Decrypt and verify a join-accept (§6.2.6); ``FrameError`` when it is not one for this AppKey.

    The network "encrypts" with AES *decrypt*, so the device recovers the clear text with AES
    encrypt, block by block (ECB), and never needs the inverse cipher.
    """
    if len(phy) not in (17, 33):
        raise FrameError("join-accept of " + str(len(phy)) + " bytes", "bad_length")
    if phy[0] >> 5 != MTYPE_JOIN_ACCEPT:
        raise FrameError("not a join-accept", "not_join_accept")
    clear = b""
    for i in range(1, len(phy), 16):
        clear += app_key_aes.encrypt_block(phy[i : i + 16])
    body, mic = clear[:-MIC_BYTES], clear[-MIC_BYTES:]
    if cmac(None, phy[0:1] + body, app_key_aes)[:MIC_BYTES] != mic:
        raise FrameError("join-accept MIC does not verify", "bad_mic")
    return JoinAccept(body)


def derive_session_keys(app_key_aes, accept, dev_nonce):
    """(NwkSKey, AppSKey) of LoRaWAN 1.0.x (§6.2.5).

    Each is aes128_encrypt(AppKey, 0x0n | JoinNonce | NetID | DevNonce | pad16), n = 1 and 2.
    """
    tail = accept.join_nonce_wire + accept.net_id_wire + dev_nonce.to_bytes(2, "little") + bytes(7)
    nwk = app_key_aes.encrypt_block(b"\x01" + tail)
    app = app_key_aes.encrypt_block(b"\x02" + tail)
    return nwk, app


def _block(first, direction, dev_addr, fcnt32, last):
    # B0 / Ai blocks (§4.3.3, §4.4): first | 4 x 0x00 | Dir | DevAddr LE | FCnt 32-bit LE | 0x00 | last.
    return (
        bytes((first, 0, 0, 0, 0, direction))
        + _rev(dev_addr)
        + fcnt32.to_bytes(4, "little")
        + bytes((0, last))
    )


def crypt_frm_payload(key_aes, dev_addr, fcnt32, uplink, data):
    """Encrypt or decrypt (the same operation) an FRMPayload with its keystream (§4.3.3)."""
    out = bytearray(len(data))
    direction = 0 if uplink else 1
    for i in range(0, len(data), 16):
        s = key_aes.encrypt_block(_block(0x01, direction, dev_addr, fcnt32, i // 16 + 1))
        for j in range(min(16, len(data) - i)):
            out[i + j] = data[i + j] ^ s[j]
    return bytes(out)


def data_mic(nwk_aes, dev_addr, fcnt32, uplink, msg):
    """The 4-byte MIC of a data frame: CMAC(NwkSKey, B0 | msg) (§4.4)."""
    b0 = _block(0x49, 0 if uplink else 1, dev_addr, fcnt32, len(msg))
    return cmac(None, b0 + msg, nwk_aes)[:MIC_BYTES]


def build_uplink(
    nwk_aes,
    app_aes,
    dev_addr,
    fcnt32,
    fport,
    payload,
    confirmed=False,
    fopts=b"",
    adr=False,
    ack=False,
    adr_ack_req=False,
):
    """A data uplink (§4): MHDR | DevAddr | FCtrl | FCnt | FOpts | FPort | FRMPayload | MIC.

    FCtrl (uplink, §4.3.1): ADR bit 7, ADRACKReq bit 6, ACK bit 5, FOptsLen bits 3..0.
    """
    if len(fopts) > MAX_FOPTS_BYTES:
        raise ValueError("FOpts holds at most 15 bytes")
    if not 0 <= fcnt32 <= 0xFFFFFFFF:
        raise ValueError("fcnt32 out of range")
    mtype = MTYPE_CONFIRMED_UP if confirmed else MTYPE_UNCONFIRMED_UP
    fctrl = (0x80 if adr else 0) | (0x40 if adr_ack_req else 0) | (0x20 if ack else 0) | len(fopts)
    msg = (
        bytes((mtype << 5,))
        + _rev(dev_addr)
        + bytes((fctrl, fcnt32 & 0xFF, (fcnt32 >> 8) & 0xFF))
        + bytes(fopts)
    )
    if fport is not None:
        if not 1 <= fport <= 223 and not (fport == 0 and not fopts):
            raise ValueError("fport out of range")
        key = nwk_aes if fport == 0 else app_aes
        msg += bytes((fport,)) + crypt_frm_payload(key, dev_addr, fcnt32, True, payload)
    elif payload:
        raise ValueError("a payload needs an FPort")
    return msg + data_mic(nwk_aes, dev_addr, fcnt32, True, msg)


class Downlink:
    """A verified, decrypted data downlink."""

    def __init__(self, fcnt32, confirmed, ack, fpending, fopts, fport, payload):
        self.fcnt32 = fcnt32
        self.confirmed = confirmed
        self.ack = ack
        self.fpending = fpending
        self.fopts = fopts
        self.fport = fport
        self.payload = payload
        self.mc_addr = None  # the group's McAddr (MSB first) for a multicast frame (``multicast``)


def open_downlink(nwk_aes, app_aes, dev_addr, last_fcnt_down, phy):
    """Verify and decrypt a data downlink for ``dev_addr``; ``FrameError`` (with a reason) otherwise.

    ``last_fcnt_down`` is the last accepted counter (-1 before the first): the 32-bit counter
    is rebuilt from its 16 low bits, and anything not ahead of it is a replay (§4.3.1.5).
    """
    if len(phy) < 12:
        raise FrameError("downlink of " + str(len(phy)) + " bytes", "truncated")
    mtype = phy[0] >> 5
    if mtype not in (MTYPE_UNCONFIRMED_DOWN, MTYPE_CONFIRMED_DOWN):
        raise FrameError("not a data downlink", "not_downlink")
    if _rev(phy[1:5]) != bytes(dev_addr):
        raise FrameError("downlink for another DevAddr", "other_dev_addr")
    fctrl = phy[5]
    fopts_len = fctrl & 0x0F
    end = len(phy) - MIC_BYTES
    if 8 + fopts_len > end:
        raise FrameError("FOpts beyond end of frame", "bad_fopts")
    low = phy[6] | (phy[7] << 8)
    base = last_fcnt_down + 1 if last_fcnt_down >= 0 else 0
    fcnt32 = (base & 0xFFFF0000) | low
    if fcnt32 < base:
        fcnt32 += 0x10000
    if phy[end:] != data_mic(nwk_aes, dev_addr, fcnt32, False, phy[:end]):
        raise FrameError("downlink MIC mismatch", "bad_mic")
    fopts = bytes(phy[8 : 8 + fopts_len])
    fport = None
    payload = b""
    pos = 8 + fopts_len
    if pos < end:
        fport = phy[pos]
        key = nwk_aes if fport == 0 else app_aes
        payload = crypt_frm_payload(key, dev_addr, fcnt32, False, phy[pos + 1 : end])
    return Downlink(
        fcnt32, mtype == MTYPE_CONFIRMED_DOWN, bool(fctrl & 0x20), bool(fctrl & 0x10), fopts, fport, payload
    )


def new_keys(nwk_s_key, app_s_key):
    """Keyed ciphers for a session (keyed once: the key schedule is the slow part of pure AES)."""
    return Aes(nwk_s_key), Aes(app_s_key)
