"""Config loading: the minimal file of the foundation issue, defaults, env overrides, precise errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway import config
from gateway.errors import ConfigError

MINIMAL = """\
gateway: {id: gw-test-1}
radio: {url: "semtech-udp://127.0.0.1:1700"}
mqtt: {host: 127.0.0.1, port: 1883, tls: false}
data_dir: /var/lib/edgegw
"""


def test_minimal_file_works_as_is(tmp_path: Path) -> None:
    path = tmp_path / "edgegw.yaml"
    path.write_text(MINIMAL)
    cfg = config.load(path, environ={})
    assert cfg.gateway.id == "gw-test-1"
    assert cfg.radio.url == "semtech-udp://127.0.0.1:1700"
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("127.0.0.1", 1883, False)
    assert cfg.data_dir == "/var/lib/edgegw"
    assert cfg.source == str(path)
    # Defaults fill the rest.
    assert cfg.outbox.batch_max_records == 100
    assert cfg.mqtt_client_id == "edgegw-gw-test-1"


def test_config_is_frozen() -> None:
    cfg = config.loads(MINIMAL, environ={})
    with pytest.raises(AttributeError):
        cfg.mqtt.port = 1  # type: ignore[misc]


def test_template_is_a_valid_config_with_every_default() -> None:
    text = config.template()
    cfg = config.loads(text, environ={})
    defaults = config.Config(gateway=config.GatewaySection(id="gw-change-me"))
    assert dataclasses.replace(cfg, source="<defaults>") == defaults
    # Every key is explained by a comment line above it.
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and ":" in line:
            index = text.splitlines().index(line)
            assert text.splitlines()[index - 1].lstrip().startswith("#"), line


def test_environment_overrides_nested_and_top_level_keys() -> None:
    env = {"EDGEGW_MQTT__PORT": "1884", "EDGEGW_MQTT__TLS": "true", "EDGEGW_DATA_DIR": "/tmp/x", "HOME": "/"}
    cfg = config.loads(MINIMAL, environ=env)
    assert cfg.mqtt.port == 1884
    assert cfg.mqtt.tls is True
    assert cfg.data_dir == "/tmp/x"


@pytest.mark.parametrize(
    ("text", "key_path", "reason"),
    [
        ("mqtt: {host: x}", "gateway", "required key is missing"),
        ("gateway: {id: g}\nmqtt: {prot: 1}", "mqtt.prot", "did you mean 'port'"),
        ("gateway: {id: g}\nmqtt: {port: abc}", "mqtt.port", "expected an integer"),
        ("gateway: {id: g}\nmqtt: {port: 70000}", "mqtt.port", "1..65535"),
        ("gateway: {id: g}\nmqtt: {tls: 'yes please'}", "mqtt.tls", "expected true or false"),
        ("gateway: {id: 'a b'}", "gateway.id", "letters, digits"),
        ("gateway: {id: g}\nlog: {level: LOUD}", "log.level", "expected one of"),
        ("gateway: {id: g}\nradio: {url: 1700}", "radio.url", "expected a URL"),
        ("gateway: {id: g}\noutbox: {batch_max_records: 0}", "outbox.batch_max_records", "at least 1"),
        ("gateway: {id: g}\nmqtt: 5", "mqtt", "expected a mapping"),
        ("gateway: {id: g}\nmqtt: {cert_file: /a.pem}", "mqtt.cert_file", "go together"),
        # Values a signed push could otherwise use against the gateway or the broker (issue 16).
        ("gateway: {id: g}\nmqtt: {reconnect_min_s: 0}", "mqtt.reconnect_min_s", "at least 0.05"),
        ("gateway: {id: g}\nmqtt: {reconnect_max_s: -5}", "mqtt.reconnect_max_s", "at least reconnect_min_s"),
        ("gateway: {id: g}\nmqtt: {drain_rate_records_s: 0.0001}", "mqtt.drain_rate_records_s", "at least 1"),
        ("gateway: {id: g}\noutbox: {commit_interval_ms: 3600000}", "outbox.commit_interval_ms", "at most"),
        ("gateway: {id: g}\nlorawan: {downlink_power_dbm: 30}", "lorawan.downlink_power_dbm", "0..27 dBm"),
        (
            "gateway: {id: g}\nlorawan: {cflist_hz: '867100000 869300000'}",
            "lorawan.cflist_hz",
            "869300000 Hz",
        ),
        ("gateway: {id: g}\nradio: {antenna_gain_dbi: 40}", "radio.antenna_gain_dbi", "-10..30 dBi"),
    ],
)
def test_errors_name_file_key_path_and_reason(text: str, key_path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(text, file="/etc/edgegw/edgegw.yaml", environ={})
    err = info.value
    assert err.file == "/etc/edgegw/edgegw.yaml"
    assert err.key_path == key_path
    assert reason in err.reason
    assert str(err).startswith(f"/etc/edgegw/edgegw.yaml: {key_path}: ")


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("gateway:\n  id: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML: line \d+"):
        config.load(path, environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.yaml", environ={})


def test_bad_environment_override_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        config.loads(MINIMAL, environ={"EDGEGW_MQTT__PORT": "high"})
    # The variable is named, not the file's key: the file has no mqtt.port to fix.
    assert str(info.value) == "EDGEGW_MQTT__PORT: expected an integer, got 'high'"


@pytest.mark.parametrize("value", ["2001-02-30", "{a: 1, a: 2}"])
def test_an_override_the_strict_loader_refuses_is_reported(value: str) -> None:
    # 2001-02-30 is a YAML date PyYAML cannot build (a ValueError, not a YAMLError); the other
    # repeats a key. Overrides are read like the files.
    with pytest.raises(ConfigError, match="environment override EDGEGW_GATEWAY__NAME is not a YAML scalar"):
        config.loads(MINIMAL, environ={"EDGEGW_GATEWAY__NAME": value})


# ETSI EN 300 220-2 V3.1.1 Table B.1, the sub-bands of generic short-range devices in 863-870 MHz as
# The Things Stack lists them (pkg/band/eu_863_870.go); 869.2-869.4 MHz is not one of them. Written
# here from the standard, not read from gateway.eu868.
_EN_300_220_2_BANDS_HZ = [
    (863_000_000, 865_000_000),
    (865_000_000, 868_000_000),
    (868_000_000, 868_600_000),
    (868_700_000, 869_200_000),
    (869_400_000, 869_650_000),
    (869_700_000, 870_000_000),
]


def _channel_in_a_band(freq_hz: int, bw_hz: int = 125_000) -> bool:
    return any(
        low <= freq_hz - bw_hz / 2 and freq_hz + bw_hz / 2 <= high for low, high in _EN_300_220_2_BANDS_HZ
    )


@pytest.mark.parametrize("freq_hz", range(863_000_000, 870_000_001, 25_000))
def test_a_cflist_channel_is_accepted_exactly_when_it_lies_in_one_sub_band(freq_hz: int) -> None:
    # A CFList entry is a 125 kHz uplink channel (RP002-1.0.3 EU863-870 CFList); every 25 kHz step.
    text = f"gateway: {{id: g}}\nlorawan: {{cflist_hz: '{freq_hz}'}}"
    if _channel_in_a_band(freq_hz):
        assert config.loads(text, environ={}).lorawan.cflist == (freq_hz,)
    else:
        with pytest.raises(ConfigError) as info:
            config.loads(text, environ={})
        assert info.value.key_path == "lorawan.cflist_hz"


@pytest.mark.parametrize("freq_hz", [869_525_000, 868_500_000, 869_300_000, 868_650_000, 869_675_000])
def test_an_rx2_frequency_outside_the_sub_bands_is_refused_at_load(freq_hz: int) -> None:
    # RX2 and class C send there: refused at load, not at every downlink.
    text = f"gateway: {{id: g}}\nlorawan: {{rx2_freq_hz: {freq_hz}}}"
    if _channel_in_a_band(freq_hz):
        assert config.loads(text, environ={}).lorawan.rx2_freq_hz == freq_hz
    else:
        with pytest.raises(ConfigError) as info:
            config.loads(text, environ={})
        assert info.value.key_path == "lorawan.rx2_freq_hz"
