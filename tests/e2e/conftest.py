"""Fixtures of the end-to-end tests: a config with test ports and two registered ABP devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.devices import AbpDevice
from tests.conftest import Broker
from tests.e2e.harness import make_device, minimal_config, register_abp


@pytest.fixture
def setup(tmp_path: Path, mosquitto: Broker, free_udp_port: int) -> tuple[Path, int, list[AbpDevice]]:
    config_file = minimal_config(tmp_path, free_udp_port, mosquitto.port)
    devices = [make_device(1), make_device(2)]
    for d in devices:
        register_abp(config_file, d)
    return config_file, free_udp_port, devices
