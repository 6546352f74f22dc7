"""Every top-level module of gateway/ has its place in the layers of .importlinter.

`lint-imports` (in `make test`) checks the layers, but a module named in no layer is bound by none of
them: a new module must be put in its layer when it is added, not discovered later.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def top_level_modules() -> set[str]:
    package = REPO / "gateway"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    return modules | {p.parent.name for p in package.glob("*/__init__.py")}


def layered_modules() -> set[str]:
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    layers = config["importlinter:contract:layers"]["layers"]
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", layers))


def test_every_top_level_module_is_in_a_layer() -> None:
    missing = top_level_modules() - layered_modules()
    assert not missing, f"put these modules in their layer in .importlinter: {sorted(missing)}"


def test_every_layer_names_a_module_that_exists() -> None:
    stale = layered_modules() - top_level_modules()
    assert not stale, f"layers in .importlinter name modules that do not exist: {sorted(stale)}"
