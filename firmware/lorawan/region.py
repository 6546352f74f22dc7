"""EU868 defaults for an end device (LoRaWAN Regional Parameters RP002-1.0.x §2.1) and LoRa airtime.

Owns the numbers the device needs before the network tells it otherwise: the three default
channels, the data-rate table, RX2, the join and receive delays, and the 1 % duty cycle of the
868.0-868.6 MHz sub-band (ETSI EN 300 220, band g1). Also the time on air of a LoRa frame
(Semtech AN1200.13), used for duty-cycle bookkeeping and the energy budget.
"""

DEFAULT_CHANNELS_HZ = (868100000, 868300000, 868500000)
RX2_FREQ_HZ = 869525000
RX2_DR = 0
RECEIVE_DELAY1_S = 1
JOIN_ACCEPT_DELAY1_S = 5
JOIN_ACCEPT_DELAY2_S = 6
DUTY_CYCLE_DIVISOR = 100  # 1 %: after t on air, wait 99 t on the same sub-band
MAX_EIRP_DBM = 16
DEFAULT_TX_POWER_DBM = 14

# Sub-bands of 863-870 MHz with their duty-cycle off-time divisor (ETSI EN 300 220-2 / ERC Rec 70-03
# Annex 1 bands h1.3..h1.7, as listed in RP002 §2.1.2): 1000 = 0.1 %, 100 = 1 %, 10 = 10 %.
SUB_BANDS = (
    (863000000, 865000000, 1000),
    (865000000, 868000000, 100),
    (868000000, 868600000, 100),
    (868700000, 869200000, 1000),
    (869400000, 869650000, 10),
    (869700000, 870000000, 100),
)

# DR -> (SF, bandwidth Hz): RP002 Table "EU863-870 Data Rate" (DR6 SF7/250 kHz, DR7 FSK omitted).
DATA_RATES = ((12, 125000), (11, 125000), (10, 125000), (9, 125000), (8, 125000), (7, 125000), (7, 250000))

# Maximum MACPayload (M) per DR without repeater (RP002 EU868 Table "Maximum payload size").
MAX_MAC_PAYLOAD = (59, 59, 59, 123, 250, 250, 250)


def rx1_dr(uplink_dr, rx1_dr_offset):
    """RX1 data rate for an uplink DR and RX1DROffset (RP002 EU868: DR - offset, floored at DR0)."""
    dr = uplink_dr - rx1_dr_offset
    return dr if dr > 0 else 0


def airtime_us(sf, bw_hz, phy_bytes, preamble_symbols=8, crc=True, explicit_header=True, coding_rate=1):
    """Time on air of one LoRa frame in microseconds (Semtech AN1200.13 §4, LoRa Modem Designer's Guide).

    Low-data-rate optimisation is on for symbol times of 16 ms and more (SF11/SF12 at 125 kHz),
    as LoRaWAN radios configure it.
    """
    t_sym_us = (1 << sf) * 1000000 // bw_hz
    de = 1 if t_sym_us >= 16000 else 0
    ih = 0 if explicit_header else 1
    num = 8 * phy_bytes - 4 * sf + 28 + (16 if crc else 0) - 20 * ih
    den = 4 * (sf - 2 * de)
    n = -(-num // den) if num > 0 else 0  # ceil for positive numerators
    payload_symbols = 8 + n * (coding_rate + 4)
    # Preamble: (n_preamble + 4.25) symbols, in quarter symbols to stay in integers.
    return ((4 * preamble_symbols + 17) * t_sym_us) // 4 + payload_symbols * t_sym_us


def sub_band(freq_hz):
    """Index in ``SUB_BANDS`` of the sub-band holding ``freq_hz``, or None (outside every band)."""
    for i, band in enumerate(SUB_BANDS):
        if band[0] <= freq_hz < band[1]:
            return i
    return None
