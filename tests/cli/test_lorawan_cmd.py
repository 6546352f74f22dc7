"""``edgegw lorawan decode``: the JSON document and exit codes of ARCHITECTURE.md §3.1.

Frames: [LP] lora-packet README / __tests__ (data uplink 40f17dbe..., MIC 2b11ff0d, "test"),
[BL] brocaar/lorawan phypayload_test.go (join-request AAQDAgEE..., AppKey 01 x 16; join-accept
20493eeb..., AppKey 00112233...), [CS] chirpstack lrwn phy_payload.rs 1.0.x join-accept
(2023cf33..., DevNonce 258) and lrwn/src/keys.rs-style derivation recomputed with our crypto.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from gateway import config, db
from gateway.cli.main import main
from gateway.config import LorawanSection
from gateway.lorawan import phy
from gateway.lorawan.crypto import SessionKeys, derive_session_keys
from gateway.lorawan.join import JoinServer, load_otaa_devices, store_join
from gateway.lorawan.sessions import SessionTable
from gateway.messages import AesKey, DevAddr, DevEui, JoinEui, MType, RadioFrame, RxInfo
from gateway.provisioning import keystore, registry

LP_FRAME = "40F17DBE4900020001954378762B11FF0D"
LP_NWK = "44024241ed4ce9a68c6a8bc055233fd3"
LP_APP = "ec925802ae430ca77fd3dd73cb2cc588"
KEY_1_16 = "0102030405060708090a0b0c0d0e0f10"


def decode(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object] | None, str]:
    code = main(["lorawan", "decode", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_data_uplink_verified_and_decrypted(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = decode(capsys, LP_FRAME, "--nwkskey", LP_NWK, "--appskey", LP_APP)
    assert code == 0
    assert doc == {
        "mtype": "UnconfirmedDataUp",
        "dev_addr": "49be7df1",
        "fctrl": {"adr": False, "adr_ack_req": False, "ack": False, "fpending": False, "fopts_len": 0},
        "fcnt": 2,
        "fopts": "",
        "fport": 1,
        "frm_payload": "74657374",
        "mic": "2b11ff0d",
        "mic_ok": True,
    }


def test_without_keys_mic_ok_is_null_and_payload_stays_encrypted(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = decode(capsys, LP_FRAME.lower())
    assert code == 0 and doc is not None
    assert doc["mic_ok"] is None and doc["frm_payload"] == "95437876"


def test_bad_mic_exits_1_with_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, err = decode(capsys, LP_FRAME, "--nwkskey", LP_APP)
    assert code == 1 and doc is not None and doc["mic_ok"] is False and "MIC" in err


def test_last_fcnt_rebuilds_the_32_bit_counter(capsys: pytest.CaptureFixture[str]) -> None:
    keys = SessionKeys(bytes.fromhex(LP_NWK), bytes.fromhex(LP_APP))
    frame = phy.build_data_frame(
        keys,
        mtype=MType.CONFIRMED_DATA_DOWN,
        dev_addr=bytes.fromhex("01020304"),
        fcnt32=0x1_0002,
        fport=0,
        payload=b"\x02\x07\x01",
        ack=True,
    )
    code, doc, _ = decode(capsys, frame.hex(), "--nwkskey", LP_NWK, "--last-fcnt", str(0xFFF0))
    assert code == 0 and doc is not None
    assert (doc["mtype"], doc["fcnt"], doc["fport"], doc["mic_ok"]) == (
        "ConfirmedDataDown",
        0x1_0002,
        0,
        True,
    )
    assert doc["frm_payload"] == "020701"  # FPort 0: decrypted with the NwkSKey
    assert doc["fctrl"] == {
        "adr": False,
        "adr_ack_req": False,
        "ack": True,
        "fpending": False,
        "fopts_len": 0,
    }
    # Without --last-fcnt, only the 16 bits on the air: the MIC (over 32 bits) fails.
    code, doc, _ = decode(capsys, frame.hex(), "--nwkskey", LP_NWK)
    assert code == 1 and doc is not None and doc["fcnt"] == 2


def test_join_request(capsys: pytest.CaptureFixture[str]) -> None:
    # [BL] TestPHYPayloadJoinRequest: AppEUI 01020304.., DevEUI 02030405.., DevNonce [2]byte{16, 45}.
    frame = base64.b64decode("AAQDAgEEAwIBBQQDAgUEAwItEGqZDhI=").hex()
    code, doc, _ = decode(capsys, frame, "--appkey", "01" * 16)
    assert code == 0
    assert doc == {
        "mtype": "JoinRequest",
        "join_eui": "0102030401020304",
        "dev_eui": "0203040502030405",
        "dev_nonce": "102d",
        "mic": "6a990e12",
        "mic_ok": True,
    }


def test_join_accept_with_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = decode(
        capsys, "2023cf335489aae3183c0be0baa8dee5f3", "--appkey", KEY_1_16, "--dev-nonce", "0102"
    )
    nwk, app = derive_session_keys(
        bytes.fromhex(KEY_1_16), bytes.fromhex("010101"), bytes.fromhex("020202"), bytes.fromhex("0102")
    )
    assert code == 0
    assert doc == {
        "mtype": "JoinAccept",
        "join_nonce": "010101",
        "net_id": "020202",
        "dev_addr": "01020304",
        "rx1_dr_offset": 0,
        "rx2_dr": 0,
        "rx_delay": 0,
        "cflist": None,
        "mic": "3449f212",
        "mic_ok": True,
        "nwk_s_key": nwk.hex(),
        "app_s_key": app.hex(),
    }


def test_join_accept_with_cflist_and_without_key(capsys: pytest.CaptureFixture[str]) -> None:
    freqs = [867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000]
    frame = phy.build_join_accept(
        bytes.fromhex(KEY_1_16),
        join_nonce=b"\x00\x00\x05",
        net_id=b"\x00\x00\x13",
        dev_addr=bytes.fromhex("26011f2a"),
        rx1_dr_offset=1,
        rx2_dr=3,
        cflist=freqs,
    )
    code, doc, _ = decode(capsys, frame.hex(), "--appkey", KEY_1_16)
    assert code == 0 and doc is not None
    assert (doc["cflist"], doc["rx1_dr_offset"], doc["rx2_dr"], doc["rx_delay"]) == (freqs, 1, 3, 1)
    assert "nwk_s_key" not in doc
    code, doc, _ = decode(capsys, frame.hex())
    assert code == 0 and doc is not None and doc["mtype"] == "JoinAccept" and doc["mic_ok"] is None
    code, doc, _ = decode(capsys, frame.hex(), "--appkey", "00" * 16)
    assert code == 1 and doc is not None and doc["mic_ok"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["zz"], "not hex"),
        (["40f17d"], "truncated"),
        ([LP_FRAME, "--nwkskey", "0011"], "16 bytes"),
        (["2023cf335489aae3183c0be0baa8dee5f3", "--dev-nonce", "0102"], "--dev-nonce needs --appkey"),
        ([LP_FRAME, "--last-fcnt", "-1"], "--last-fcnt"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, doc, err = decode(capsys, *argv)
    assert code == 2 and doc is None and message in err and err.count("\n") == 1


def test_proprietary_and_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = decode(capsys, "e0010203")
    assert code == 0 and doc == {"mtype": "Proprietary", "frm_payload": "010203", "mic": None, "mic_ok": None}
    assert main(["lorawan", "decode", LP_FRAME]) == 0
    assert "dev_addr: 49be7df1" in capsys.readouterr().out


ABP_EUI = "a84041035660e3aa"
OTAA_EUI = "70b3d57ed1000001"
JOIN_EUI = "70b3d57ed0000001"


@pytest.fixture
def registered(cfg: Path) -> Path:
    """An ABP device with the [LP] session, keys encrypted at rest, and an OTAA device not joined yet."""
    data_dir = config.load(str(cfg)).data_dir
    conn = db.connect(db.db_path(data_dir))
    store = keystore.create_key(data_dir)
    abp = registry.AbpKeys(DevAddr.from_hex("49be7df1"), AesKey.from_hex(LP_NWK), AesKey.from_hex(LP_APP))
    otaa = registry.OtaaKeys(JoinEui.from_hex(JOIN_EUI), AesKey.from_hex(KEY_1_16))
    registry.add_device(conn, dev_eui=DevEui.from_hex(ABP_EUI), profile="p", keys=abp, keystore=store)
    registry.add_device(conn, dev_eui=DevEui.from_hex(OTAA_EUI), profile="p", keys=otaa, keystore=store)
    conn.close()
    return cfg


def test_dev_eui_takes_the_registered_abp_session_and_prints_no_key(
    registered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc, _ = decode(capsys, LP_FRAME, "--dev-eui", ABP_EUI, "--config", str(registered))
    assert code == 0 and doc is not None
    assert (doc["mic_ok"], doc["frm_payload"]) == (True, "74657374")
    assert main(["--config", str(registered), "lorawan", "decode", LP_FRAME, "--dev-eui", ABP_EUI]) == 0
    out = capsys.readouterr().out
    assert "frm_payload: 74657374" in out
    assert LP_NWK not in out.lower() and LP_APP not in out.lower()


def test_dev_eui_of_an_otaa_device_uses_its_session_after_a_join(
    registered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not joined yet: no session to decode a data frame with.
    code, doc, err = decode(capsys, LP_FRAME, "--dev-eui", OTAA_EUI, "--config", str(registered))
    assert code == 2 and doc is None and "has no session" in err and err.count("\n") == 1
    # Its join-request is checked with the registered AppKey.
    request = phy.build_join_request(
        bytes.fromhex(KEY_1_16),
        join_eui=bytes.fromhex(JOIN_EUI),
        dev_eui=bytes.fromhex(OTAA_EUI),
        dev_nonce=b"\x00\x07",
    )
    code, doc, _ = decode(capsys, request.hex(), "--dev-eui", OTAA_EUI, "--config", str(registered))
    assert code == 0 and doc is not None and doc["mic_ok"] is True
    # The join server accepts it and stores the session (encrypted), as the agent does.
    data_dir = config.load(str(registered)).data_dir
    store = keystore.open_key(data_dir)
    conn = db.connect(db.db_path(data_dir))
    server = JoinServer(LorawanSection(), load_otaa_devices(conn, store.decrypt_hex))
    rx = RxInfo(868_100_000, -60.0, 7.0, 7, 125_000, "4/5", True, "test")
    accepted = server.handle(RadioFrame(request, rx, 1_700_000_000.0, 100.0), SessionTable())
    store_join(conn, accepted, store.encrypt_hex)
    conn.close()
    keys = SessionKeys(accepted.nwk_s_key.value, accepted.app_s_key.value)
    frame = phy.build_data_frame(
        keys,
        mtype=MType.UNCONFIRMED_DATA_UP,
        dev_addr=accepted.session.dev_addr.value,
        fcnt32=1,
        fport=5,
        payload=b"\x01\x02",
    )
    code, doc, _ = decode(capsys, frame.hex(), "--dev-eui", OTAA_EUI, "--config", str(registered))
    assert code == 0 and doc is not None and (doc["mic_ok"], doc["frm_payload"]) == (True, "0102")
    # A frame of another session does not verify: exit 1, the message names the keys' origin.
    code, doc, err = decode(capsys, LP_FRAME, "--dev-eui", OTAA_EUI, "--config", str(registered))
    assert code == 1 and doc is not None and f"registered keys of {OTAA_EUI}" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([LP_FRAME, "--dev-eui", "0000000000000009"], "not registered"),
        ([LP_FRAME, "--dev-eui", "zz"], "--dev-eui"),
        ([LP_FRAME, "--dev-eui", ABP_EUI, "--nwkskey", LP_NWK], "give no key options"),
    ],
)
def test_dev_eui_errors_exit_2(
    registered: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, doc, err = decode(capsys, *argv, "--config", str(registered))
    assert code == 2 and doc is None and message in err and err.count("\n") == 1
