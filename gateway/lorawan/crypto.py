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
from collections import deque
from typing import ClassVar

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
_MAX_MSG_BYTES = 255
"""B0 holds len(msg) in one octet (§4.4)."""

# B0 (§4.4): 0x49 | 4 x 0x00 | Dir | DevAddr | FCnt (32-bit) | 0x00 | len(msg), followed here by msg
# itself: one Struct per message length packs B0 | msg in a single call (no concatenation per frame).
_B0_MSG = tuple(struct.Struct(f"<B4xB4sIxB{size}s") for size in range(_MAX_MSG_BYTES + 1))
# A_i (§4.3.3.1): 0x01 | 4 x 0x00 | Dir | DevAddr | FCnt (32-bit) | 0x00 | i. Octets 1..14 ("mid") are the
# same in every A_i, so A_1 | ... | A_n is mid.join((0x01, 0x01 0x01, 0x02 0x01, ..., n)): one C call.
_A_MID = struct.Struct("<4xB4sIx")
_A_SEPARATORS = tuple(
    (b"\x01", *(bytes((i, 0x01)) for i in range(1, blocks)), bytes((blocks,)))
    for blocks in range(_MAX_BLOCKS + 1)
)
# Right shift that drops the keystream's unused tail octets (XOR of the payload with its first octets).
_TAIL_BITS = tuple(8 * (-size % _BLOCK_BYTES) for size in range(_MAX_BLOCKS * _BLOCK_BYTES + 1))


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
    (research/perf-anchors.md, "Crypto per frame"). Per frame the Python around
    them is kept to one struct pack per block sequence (B0 | msg; A_1 .. A_n via
    a join), one CMAC update, one ECB update and one big-integer XOR
    (bench/bench_mac.py measures it against the bare ``cryptography`` calls).

    The OpenSSL contexts cost ~2.9 KiB per session, most of an agent's memory per
    registered device, so only the ``WARM_SESSIONS`` sessions that built theirs most
    recently keep them (first in, first out: a check of one attribute on the hot
    path, where least-recently-used bookkeeping would cost every frame); the others
    hold their two keys (32 bytes) and rebuild the contexts on their next frame
    (6.7 µs: bench/bench_mac.py, "contexts rebuilt"; for a device that sends every
    few minutes at most). With 10,000 devices that saves ~25 MiB (docs/performance.md).

    Not thread-safe: the cached encryptors and the warm set must be used by one
    thread at a time (the event loop).
    """

    __slots__ = ("_app_ecb", "_app_key", "_nwk_cmac", "_nwk_ecb", "_nwk_key")

    WARM_SESSIONS: ClassVar[int] = 1024
    """Sessions whose contexts stay built; beyond, the first built gives its up."""
    _warm: ClassVar[deque[SessionKeys]] = deque()

    def __init__(self, nwk_s_key: bytes, app_s_key: bytes) -> None:
        _check_key(nwk_s_key, "nwk_s_key")
        _check_key(app_s_key, "app_s_key")
        self._nwk_key = bytes(nwk_s_key)
        self._app_key = bytes(app_s_key)
        self._nwk_cmac: CMAC | None = None
        self._nwk_ecb: CipherContext | None = None
        self._app_ecb: CipherContext | None = None

    def __repr__(self) -> str:
        return "SessionKeys(<secret>)"

    @property
    def warm(self) -> bool:
        """The contexts are built (the session is among the ``WARM_SESSIONS``)."""
        return self._nwk_cmac is not None

    def _warm_up(self) -> tuple[CMAC, CipherContext, CipherContext]:
        contexts = (
            CMAC(algorithms.AES(self._nwk_key)),
            Cipher(algorithms.AES(self._nwk_key), modes.ECB()).encryptor(),
            Cipher(algorithms.AES(self._app_key), modes.ECB()).encryptor(),
        )
        self._nwk_cmac, self._nwk_ecb, self._app_ecb = contexts
        # The deque holds the instance itself: a session dropped from the table leaves within
        # WARM_SESSIONS warm-ups. An instance is in it at most once (only a cold one warms up).
        warm = SessionKeys._warm
        warm.append(self)
        while len(warm) > SessionKeys.WARM_SESSIONS:
            cold = warm.popleft()
            cold._nwk_cmac = cold._nwk_ecb = cold._app_ecb = None
        return contexts

    def data_mic(self, msg: bytes, dev_addr: bytes, fcnt32: int, uplink: bool) -> bytes:
        """4-byte MIC of a data frame (LoRaWAN 1.0.4 §4.4): CMAC(NwkSKey, B0 | msg)[0:4].

        ``msg`` is MHDR | FHDR | FPort | FRMPayload (the frame without its MIC, at
        most 255 bytes since B0 holds its length in one octet). ``dev_addr`` is 4
        bytes MSB first; B0 holds it little-endian. ``fcnt32`` is the full 32-bit
        counter, of which only the low 16 bits travel in FHDR.
        """
        # Hot path (every uplink): checks ride on the pack, whose "I" refuses a counter outside 32 bits;
        # only the DevAddr size is tested apart, because "4s" would silently pad or cut it.
        size = len(msg)
        if len(dev_addr) != 4:
            raise _bad_frame_ids(dev_addr, fcnt32)
        try:
            # Dir (§4.3.3.1) is 0 up, 1 down: `not uplink` packs as exactly that octet.
            block = _B0_MSG[size].pack(0x49, not uplink, dev_addr[::-1], fcnt32, size, msg)
        except IndexError:
            raise ValueError(f"msg too long for B0's length octet: {size} bytes") from None
        except struct.error as exc:
            raise _bad_frame_ids(dev_addr, fcnt32) from exc
        cmac = self._nwk_cmac
        if cmac is None:
            cmac = self._warm_up()[0]
        mac = cmac.copy()
        mac.update(block)
        return mac.finalize()[:MIC_BYTES]

    def crypt_frm_payload(
        self, payload: bytes, dev_addr: bytes, fcnt32: int, uplink: bool, fport: int
    ) -> bytes:
        """Encrypt or decrypt an FRMPayload (the same operation, §4.3.3.1).

        The keystream is AES(K, A_1) | AES(K, A_2) | ..., truncated to the payload
        and XORed with it; K is NwkSKey when ``fport`` is 0 (MAC commands) and
        AppSKey otherwise.
        """
        if len(dev_addr) != 4:
            raise _bad_frame_ids(dev_addr, fcnt32)
        try:
            mid = _A_MID.pack(not uplink, dev_addr[::-1], fcnt32)
        except struct.error as exc:
            raise _bad_frame_ids(dev_addr, fcnt32) from exc
        size = len(payload)
        if not size:
            return b""
        try:
            separators = _A_SEPARATORS[(size + _BLOCK_BYTES - 1) // _BLOCK_BYTES]
        except IndexError:
            raise ValueError(f"payload too long for one-octet block counter: {size} bytes") from None
        # All A_i in one ECB call (ECB keeps no state between blocks, so the encryptor is reused as is).
        ecb = self._app_ecb if fport else self._nwk_ecb
        if ecb is None:
            _cmac, nwk_ecb, app_ecb = self._warm_up()
            ecb = app_ecb if fport else nwk_ecb
        keystream = ecb.update(mid.join(separators))
        # One big-integer XOR is faster in CPython than a per-byte loop; the shift drops the keystream's
        # unused tail instead of slicing a copy of it.
        mixed = int.from_bytes(payload) ^ (int.from_bytes(keystream) >> _TAIL_BITS[size])
        return mixed.to_bytes(size)


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
