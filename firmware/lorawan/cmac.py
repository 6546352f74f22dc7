"""AES-CMAC (RFC 4493 / NIST SP 800-38B) over ``aes.Aes``: the LoRaWAN MIC primitive.

Owns ``cmac(key, msg) -> 16 bytes``. It does not know which bytes a MIC covers (``frames``).
"""

from lorawan.aes import Aes


def _shift_left(block):
    out = bytearray(16)
    carry = 0
    for i in range(15, -1, -1):
        b = block[i]
        out[i] = ((b << 1) & 0xFF) | carry
        carry = b >> 7
    return out, carry


def _subkey(block):
    # RFC 4493 §2.3: K1 = L << 1, xor Rb (0x87) when the msb of L was set; K2 likewise from K1.
    out, carry = _shift_left(block)
    if carry:
        out[15] ^= 0x87
    return out


def cmac(key, msg, cipher=None):
    """The 16-byte AES-CMAC of ``msg`` under ``key`` (``cipher``: an ``Aes`` already keyed)."""
    aes = cipher if cipher is not None else Aes(key)
    k1 = _subkey(aes.encrypt_block(bytes(16)))
    k2 = _subkey(k1)
    n = (len(msg) + 15) // 16
    if n == 0:
        n = 1
        complete = False
    else:
        complete = len(msg) % 16 == 0
    last = bytearray(16)
    tail = msg[16 * (n - 1) :]
    if complete:
        for i in range(16):
            last[i] = tail[i] ^ k1[i]
    else:
        for i in range(len(tail)):
            last[i] = tail[i]
        last[len(tail)] = 0x80
        for i in range(16):
            last[i] ^= k2[i]
    x = bytes(16)
    block = bytearray(16)
    for j in range(n - 1):
        base = 16 * j
        for i in range(16):
            block[i] = x[i] ^ msg[base + i]
        x = aes.encrypt_block(block)
    for i in range(16):
        block[i] = x[i] ^ last[i]
    return aes.encrypt_block(block)
