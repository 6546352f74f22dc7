"""The chaos tests use the reliability tests' persistent broker (sessions kept across restarts)."""

from tests.reliability.conftest import persistent_broker

__all__ = ["persistent_broker"]
