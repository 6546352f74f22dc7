"""Fixtures of the composition tests: the fleet tests' platform key, pinned data dir and signer."""

from __future__ import annotations

from tests.fleet.conftest import data_dir, platform_key, signed

__all__ = ["data_dir", "platform_key", "signed"]
