"""atheris harness: the rules file (``RuleSet.parse``); only ConfigError."""

from __future__ import annotations

import _common
import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["gateway"]):
    import yaml

    from tests.fuzz import mutate, targets

TEXTS = targets.rules_seeds()
DOCS = [yaml.safe_load(text) for text in TEXTS]


def test_one_input(data: bytes) -> None:
    mode, rest = _common.split_mode(data)
    if mode == _common.RAW:
        targets.check_rules(rest.decode("utf-8", errors="replace"))
        return
    ch = _common.FdpChooser(rest)
    index = ch.integer(0, len(TEXTS) - 1)
    targets.check_rules(mutate.mutate_yaml(ch, DOCS[index], TEXTS[index]))


if __name__ == "__main__":
    _common.main(test_one_input, [_common.raw_seed(text.encode()) for text in TEXTS])
