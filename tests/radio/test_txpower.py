"""Transmit power against the EU868 limits (issue 18, "Radio limits"), through ``RadioBackend.transmit``.

The reference is written here as arithmetic from the documents, never read from the code under test:

* ETSI EN 300 220-2 (V3.1.1, Table B.1; the sub-bands as The Things Stack encodes them in
  pkg/band/eu_863_870.go, "See ETSI EN 300.220-2 V3.1.1"; LoRaWAN RP002-1.0.3 §2.4 EU863-870):
  25 mW e.r.p. in 863-865, 865-868, 868.0-868.6, 868.7-869.2 and 869.7-870 MHz, 500 mW e.r.p. in
  869.4-869.65 MHz (the RX2 channel 869.525 MHz), nothing in 869.2-869.4 MHz.
* e.r.p. is referred to a half-wave dipole, whose gain over an isotropic radiator is 2.15 dBi:
  e.i.r.p. = e.r.p. + 2.15 dB.
* What reaches the air is the conducted power at the antenna port plus the antenna's gain:
  e.r.p. = conducted + gain_dBi - 2.15.
* 25 mW = 13.98 dBm and 500 mW = 26.99 dBm; RP002 and the network servers write them 14 and 27 dBm,
  and the concentrator is commanded in whole dBm (PROTOCOL.TXT §6 ``powe``), so the limit is the
  mW figure in dBm rounded to the whole dBm.
"""

from __future__ import annotations

import math

import pytest

from gateway.config import LorawanSection, RadioSection
from gateway.lorawan.downlink import DownlinkScheduler
from gateway.lorawan.sessions import Session, SessionTable
from gateway.messages import DevAddr, TxRequest, TxResult, TxStatus
from gateway.radio.base import RadioBackend
from tests.lorawan.test_downlink import EUI, KEYS, up

DIPOLE_GAIN_DBI = 2.15


def dbm(milliwatts: float) -> float:
    return 10.0 * math.log10(milliwatts)


ERP_LIMIT_25_MW_DBM = round(dbm(25))  # 13.98 → 14
ERP_LIMIT_500_MW_DBM = round(dbm(500))  # 26.99 → 27


def erp_dbm(conducted_dbm: float, antenna_gain_dbi: float) -> float:
    return conducted_dbm + antenna_gain_dbi - DIPOLE_GAIN_DBI


class Captures(RadioBackend):
    """A transmitter that always works and keeps what it was asked to send."""

    def __init__(self) -> None:
        super().__init__("capture")
        self.sent: list[TxRequest] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def _transmit(self, request: TxRequest, airtime_s: float) -> TxResult:
        self.sent.append(request)
        return TxResult(TxStatus.SENT)


# One channel in each EN 300 220-2 sub-band LoRaWAN uses, and the band's e.r.p. limit.
CHANNELS = [
    (863_500_000, ERP_LIMIT_25_MW_DBM),  # 863-865 MHz, 25 mW, 0.1 %
    (867_100_000, ERP_LIMIT_25_MW_DBM),  # 865-868 MHz, 25 mW, 1 % (the CFList channels)
    (868_100_000, ERP_LIMIT_25_MW_DBM),  # 868.0-868.6 MHz, 25 mW, 1 % (the default channels)
    (868_900_000, ERP_LIMIT_25_MW_DBM),  # 868.7-869.2 MHz, 25 mW, 0.1 %
    (869_525_000, ERP_LIMIT_500_MW_DBM),  # 869.4-869.65 MHz, 500 mW, 10 % (RX2)
    (869_850_000, ERP_LIMIT_25_MW_DBM),  # 869.7-870 MHz, 25 mW, 1 %
]


@pytest.mark.parametrize("asked_dbm", [14.0, 27.0, 30.0, 40.0])
@pytest.mark.parametrize(("freq_hz", "limit_erp_dbm"), CHANNELS)
async def test_no_transmission_exceeds_its_sub_band_erp(
    freq_hz: int, limit_erp_dbm: int, asked_dbm: float
) -> None:
    radio = Captures()
    result = await radio.transmit(TxRequest(b"\x60" + bytes(12), freq_hz, 9, power_dbm=asked_dbm))
    assert result.status is TxStatus.SENT
    # The default antenna is a dipole-class one (test at the end).
    sent_erp_dbm = erp_dbm(radio.sent[0].power_dbm, DIPOLE_GAIN_DBI)
    assert sent_erp_dbm <= limit_erp_dbm + 1e-9
    # Asking for more than the band allows gets the band's limit (whole dBm), not less.
    assert sent_erp_dbm == pytest.approx(min(asked_dbm, limit_erp_dbm), abs=1.0)


@pytest.mark.parametrize(
    ("gain_dbi", "freq_hz", "limit_erp_dbm"),
    [
        (6.0, 868_100_000, ERP_LIMIT_25_MW_DBM),  # a 6 dBi collinear on the mast
        (6.0, 869_525_000, ERP_LIMIT_500_MW_DBM),
        (0.0, 868_100_000, ERP_LIMIT_25_MW_DBM),  # an antenna that loses what its cable costs
    ],
)
async def test_the_antenna_gain_is_taken_off_the_conducted_power(
    gain_dbi: float, freq_hz: int, limit_erp_dbm: int
) -> None:
    radio = Captures()
    radio.antenna_gain_dbi = gain_dbi
    await radio.transmit(TxRequest(b"\x60" + bytes(12), freq_hz, 9, power_dbm=40.0))
    sent_erp_dbm = erp_dbm(radio.sent[0].power_dbm, gain_dbi)
    assert limit_erp_dbm - 1.0 < sent_erp_dbm <= limit_erp_dbm + 1e-9


async def test_only_a_request_above_the_limit_is_changed_and_counted() -> None:
    radio = Captures()
    await radio.transmit(TxRequest(b"\x60" + bytes(12), 868_100_000, 9, power_dbm=10.0))
    await radio.transmit(TxRequest(b"\x60" + bytes(12), 868_100_000, 9, power_dbm=20.0))
    assert [sent.power_dbm for sent in radio.sent] == [10.0, 14.0]
    assert radio.counters["tx_power_limited"] == 1


async def test_class_a_rx1_and_rx2_with_the_default_configuration() -> None:
    # RX1 on the uplink's 868.5 MHz channel: 25 mW e.r.p.; RX2 on 869.525 MHz: 500 mW e.r.p.,
    # 13 dB more (before issue 18 both went out at 14 dBm).
    session = Session(EUI, DevAddr(bytes.fromhex("26011001")), "p/m", "abcd0123", KEYS, 10, 0)
    scheduler = DownlinkScheduler(LorawanSection(), SessionTable([session]))
    plan = scheduler.on_uplink(up(confirmed=True))
    assert plan is not None and plan.rx1 is not None and plan.rx2 is not None
    radio = Captures()
    await radio.transmit(plan.rx1)
    await radio.transmit(plan.rx2)
    rx1_erp_dbm, rx2_erp_dbm = (erp_dbm(sent.power_dbm, DIPOLE_GAIN_DBI) for sent in radio.sent)
    assert ERP_LIMIT_25_MW_DBM - 1.0 < rx1_erp_dbm <= ERP_LIMIT_25_MW_DBM + 1e-9
    assert ERP_LIMIT_500_MW_DBM - 1.0 < rx2_erp_dbm <= ERP_LIMIT_500_MW_DBM + 1e-9


def test_the_default_antenna_gain_is_a_dipole_and_the_config_agrees() -> None:
    # With a dipole-class antenna (2.15 dBi) the conducted power equals the e.r.p.
    assert RadioSection().antenna_gain_dbi == DIPOLE_GAIN_DBI
    assert Captures().antenna_gain_dbi == DIPOLE_GAIN_DBI
