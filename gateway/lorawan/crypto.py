"""LoRaWAN 1.0.x cryptography of data frames: the MIC and FRMPayload encryption.

Owns the AES-128 computations a data frame needs (LoRaWAN 1.0.4 §4.3.3 and
§4.4), with per-session cached ``cryptography`` contexts because they run for
every uplink; and the join crypto of LoRaWAN 1.0.x: the join-request and
join-accept MICs (§6.2.5, §6.2.6), the join-accept encryption (the AES *decrypt*
trick of §6.2.6) and the session-key derivation (§6.2.6: NwkSKey and AppSKey
from AppKey, AppNonce/JoinNonce, NetID and DevNonce). Everything comes from the
``cryptography`` package (OpenSSL); no AES is implemented here.

It does not own parsing (``phy``), the frame-counter policy (``fcnt``), the
constant-time MIC comparison (the caller uses ``hmac.compare_digest``), the
LoRaWAN 1.1 key hierarchy (out of scope), or key storage.

Identifiers are passed MSB first, as people write them; the blocks put them
little-endian, as on the air (§1.2 "octet order ... little endian").
"""

from __future__ import annotations

import logging
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

__all__ = [
    "KEY_BYTES",
    "MIC_BYTES",
    "SessionKeys",
    "decrypt_join_accept",
    "derive_session_keys",
    "encrypt_join_accept",
    "join_accept_mic",
    "join_request_mic",
]

logger = logging.getLogger(__name__)

KEY_BYTES = 16
MIC_BYTES = 4
_BLOCK_BYTES = 16
_MAX_BLOCKS = 255
"""The block counter i of A_i is one octet (§4.3.3.1)."""

# B0 (§4.4): 0x49 | 4 x 0x00 | Dir | DevAddr | FCnt (32-bit) | 0x00 | len(msg)
_B0 = struct.Struct("<B4xB4sIxB")
# A_i (§4.3.3.1): 0x01 | 4 x 0x00 | Dir | DevAddr | FCnt (32-bit) | 0x00 | i
_A = struct.Struct("<B4xB4sIxB")
_COUNTERS = tuple(bytes(range(1, n + 1)) for n in range(_MAX_BLOCKS + 1))
_DIR_UP = 0
_DIR_DOWN = 1
_FCNT_MAX = 0xFFFFFFFF


def _check_key(key: bytes, name: str) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"{name} must be {KEY_BYTES} bytes, got {len(key)}")


def _bad_frame_ids(dev_addr: bytes, fcnt32: int) -> ValueError:
    if len(dev_addr) != 4:
        return ValueError(f"dev_addr must be 4 bytes, got {len(dev_addr)}")
    return ValueError(f"fcnt32 out of range: {fcnt32}")


class SessionKeys:
    """The crypto of one ABP/OTAA session (NwkSKey, AppSKey) with cached contexts.

    A keyed CMAC template is ``copy()``'d per frame and one ECB encryptor per key
    is reused for every keystream (ECB has no state between blocks, so it never
    needs finalising): about 2.5x cheaper than building the objects per frame
    (research/perf-anchors.md, "Crypto per frame").

    Not thread-safe: the cached encryptors must be used by one thread at a time
    (the event loop).
    """

    __slots__ = ("_app_ecb", "_nwk_cmac", "_nwk_ecb")

    def __init__(self, nwk_s_key: bytes, app_s_key: bytes) -> None:
        _check_key(nwk_s_key, "nwk_s_key")
        _check_key(app_s_key, "app_s_key")
        self._nwk_cmac = CMAC(algorithms.AES(nwk_s_key))
        self._nwk_ecb: CipherContext = Cipher(algorithms.AES(nwk_s_key), modes.ECB()).encryptor()
        self._app_ecb: CipherContext = Cipher(algorithms.AES(app_s_key), modes.ECB()).encryptor()

    def __repr__(self) -> str:
        return "SessionKeys(<secret>)"

    def data_mic(self, msg: bytes, dev_addr: bytes, fcnt32: int, uplink: bool) -> bytes:
        """4-byte MIC of a data frame (LoRaWAN 1.0.4 §4.4): CMAC(NwkSKey, B0 | msg)[0:4].

        ``msg`` is MHDR | FHDR | FPort | FRMPayload (the frame without its MIC, at
        most 255 bytes since B0 holds its length in one octet). ``dev_addr`` is 4
        bytes MSB first; B0 holds it little-endian. ``fcnt32`` is the full 32-bit
        counter, of which only the low 16 bits travel in FHDR.
        """
        # Checked inline (hot path); struct's "4s" would silently pad or cut a DevAddr of the wrong size.
        if len(dev_addr) != 4 or not 0 <= fcnt32 <= _FCNT_MAX:
            raise _bad_frame_ids(dev_addr, fcnt32)
        if len(msg) > 255:
            raise ValueError(f"msg too long for B0's length octet: {len(msg)} bytes")
        mac = self._nwk_cmac.copy()
        mac.update(_B0.pack(0x49, _DIR_UP if uplink else _DIR_DOWN, dev_addr[::-1], fcnt32, len(msg)))
        mac.update(msg)
        return mac.finalize()[:MIC_BYTES]

    def crypt_frm_payload(
        self, payload: bytes, dev_addr: bytes, fcnt32: int, uplink: bool, fport: int
    ) -> bytes:
        """Encrypt or decrypt an FRMPayload (the same operation, §4.3.3.1).

        The keystream is AES(K, A_1) | AES(K, A_2) | ..., truncated to the payload
        and XORed with it; K is NwkSKey when ``fport`` is 0 (MAC commands) and
        AppSKey otherwise.
        """
        if len(dev_addr) != 4 or not 0 <= fcnt32 <= _FCNT_MAX:
            raise _bad_frame_ids(dev_addr, fcnt32)
        size = len(payload)
        if size == 0:
            return b""
        blocks = (size + _BLOCK_BYTES - 1) // _BLOCK_BYTES
        direction = _DIR_UP if uplink else _DIR_DOWN
        if blocks == 1:  # most sensor payloads: A_1 alone
            counter_blocks: bytes | bytearray = _A.pack(0x01, direction, dev_addr[::-1], fcnt32, 1)
        elif blocks <= _MAX_BLOCKS:
            # A_1 .. A_n differ only in their last octet: repeat A_0, then write i into every 16th byte.
            counter_blocks = bytearray(_A.pack(0x01, direction, dev_addr[::-1], fcnt32, 0) * blocks)
            counter_blocks[_BLOCK_BYTES - 1 :: _BLOCK_BYTES] = _COUNTERS[blocks]
        else:
            raise ValueError(f"payload too long for one-octet block counter: {size} bytes")
        encryptor = self._nwk_ecb if fport == 0 else self._app_ecb
        keystream = encryptor.update(counter_blocks)
        # One big-integer XOR is faster in CPython than a per-byte loop.
        mixed = int.from_bytes(payload, "big") ^ int.from_bytes(keystream[:size], "big")
        return mixed.to_bytes(size, "big")


def join_request_mic(app_key: bytes, msg: bytes) -> bytes:
    """4-byte MIC of a join-request (LoRaWAN 1.0.4 §6.2.5): CMAC(AppKey, msg)[0:4].

    ``msg`` is MHDR | JoinEUI | DevEUI | DevNonce, as on the air (the 19 bytes the
    MIC follows). Joins are rare, so no context is cached.
    """
    _check_key(app_key, "app_key")
    mac = CMAC(algorithms.AES(app_key))
    mac.update(msg)
    return mac.finalize()[:MIC_BYTES]


def join_accept_mic(app_key: bytes, msg: bytes) -> bytes:
    """4-byte MIC of a LoRaWAN 1.0.x join-accept (§6.2.6): CMAC(AppKey, msg)[0:4].

    ``msg`` is MHDR | AppNonce | NetID | DevAddr | DLSettings | RxDelay | CFList
    as on the air, in clear (the MIC is computed before encryption).
    """
    _check_key(app_key, "app_key")
    mac = CMAC(algorithms.AES(app_key))
    mac.update(msg)
    return mac.finalize()[:MIC_BYTES]


def _check_join_accept_body(body: bytes) -> None:
    if len(body) not in (16, 32):
        raise ValueError(f"a join-accept body (after MHDR, MIC included) is 16 or 32 bytes, got {len(body)}")


def encrypt_join_accept(app_key: bytes, body: bytes) -> bytes:
    """Encrypt a join-accept body (everything after MHDR, MIC included) for the air.

    LoRaWAN 1.0.4 §6.2.6: "The network server uses an AES decrypt operation in
    ECB mode to encrypt the join-accept message so that the end-device can use an
    AES encrypt operation to decrypt the message": a device then needs only the
    AES encryption direction in its code.
    """
    _check_key(app_key, "app_key")
    _check_join_accept_body(body)
    decryptor = Cipher(algorithms.AES(app_key), modes.ECB()).decryptor()
    return decryptor.update(body) + decryptor.finalize()


def decrypt_join_accept(app_key: bytes, body: bytes) -> bytes:
    """Recover a join-accept body from the air: an AES *encrypt* (the inverse of ``encrypt_join_accept``)."""
    _check_key(app_key, "app_key")
    _check_join_accept_body(body)
    encryptor = Cipher(algorithms.AES(app_key), modes.ECB()).encryptor()
    return encryptor.update(body) + encryptor.finalize()


def derive_session_keys(
    app_key: bytes, join_nonce: bytes, net_id: bytes, dev_nonce: bytes
) -> tuple[bytes, bytes]:
    """(NwkSKey, AppSKey) of a LoRaWAN 1.0.x OTAA session (§6.2.6 / 1.0.4 §6.2.6.1)::

        NwkSKey = aes128_encrypt(AppKey, 0x01 | AppNonce | NetID | DevNonce | pad16)
        AppSKey = aes128_encrypt(AppKey, 0x02 | AppNonce | NetID | DevNonce | pad16)

    ``join_nonce`` (AppNonce in 1.0.2, JoinNonce in 1.0.4; 3 bytes), ``net_id``
    (3 bytes) and ``dev_nonce`` (2 bytes) are MSB first, as people write them; the
    blocks hold them little-endian, as on the air.
    """
    _check_key(app_key, "app_key")
    if len(join_nonce) != 3 or len(net_id) != 3 or len(dev_nonce) != 2:
        raise ValueError("join_nonce and net_id are 3 bytes, dev_nonce 2 bytes")
    tail = join_nonce[::-1] + net_id[::-1] + dev_nonce[::-1] + bytes(7)
    encryptor = Cipher(algorithms.AES(app_key), modes.ECB()).encryptor()
    blocks = encryptor.update(b"\x01" + tail + b"\x02" + tail) + encryptor.finalize()
    return blocks[:16], blocks[16:]
