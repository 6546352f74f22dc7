"""atheris harness: the rules file (``gateway.rules.loader.parse_rules``); only ConfigError."""

from __future__ import annotations

import _common
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["gateway"]):
    from tests.fuzz import targets

TEXTS = targets.rules_seeds()
test_one_input = _common.yaml_harness(TEXTS, targets.check_rules)


if __name__ == "__main__":
    _common.main(test_one_input, [_common.raw_seed(text.encode()) for text in TEXTS])
