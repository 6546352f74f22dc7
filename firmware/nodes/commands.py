"""Downlink commands common to the edgegw nodes: FPort 20, one opcode byte, big-endian arguments.

Owns the opcodes shared by every node and their parsing (the node-specific opcodes live with
their node). The device profiles under ``device_profiles/edgegw/`` encode the same bytes
(``downlink`` section); both must change together.

    01 ssss        set_interval: report interval in s, uint16 (10..65535)
    02 pp          set_dim: dim level %, uint8 (lamp controller)
    03 oo          switch: 00 off, 01 on (lamp controller)
    10 ll vvvvvvvv show_count: show value (uint32) on line ll (display)
    11 tttttttt yyyyyyyy  show_counts: today on line 0, year to date on line 1 (display)

A command that does not parse is ignored (``None``): a node never crashes on a downlink.
"""

FPORT = 20
SET_INTERVAL = 0x01
SET_DIM = 0x02
SWITCH = 0x03
SHOW_COUNT = 0x10
SHOW_COUNTS = 0x11
MIN_INTERVAL_S = 10


def interval_s(fport, payload):
    """The seconds of a well-formed set_interval command, else None."""
    if fport != FPORT or len(payload) != 3 or payload[0] != SET_INTERVAL:
        return None
    seconds = (payload[1] << 8) | payload[2]
    return seconds if seconds >= MIN_INTERVAL_S else None


def uint32_be(data, at):
    return (data[at] << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]
