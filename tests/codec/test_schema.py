"""gateway/schemas/profile-v1.json: every shipped profile conforms, and load rejects what it rejects.

The malformed documents are made up; the compiler's own precise messages come first and the
schema is the second line (ConfigError with key path and "schema profile-v1").
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.codec import default_profiles_dir, load_profile
from gateway.codec.profile import _check_schema
from gateway.errors import ConfigError
from tests.codec.test_profile import BASE, write_profile

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "gateway/schemas/profile-v1.json").read_text())
SHIPPED_FILES = sorted(default_profiles_dir().glob("*/*.yaml"))


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_profile_conforms(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(SCHEMA).validate(document)


def test_schema_errors_name_file_and_key_path(tmp_path: Path) -> None:
    doc = copy.deepcopy(BASE)
    doc["examples"][0]["payload"] = "zz"
    path = write_profile(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        _check_schema(yaml.safe_load(path.read_text()), str(path))
    assert info.value.key_path == "examples[0].payload"
    assert str(path) in str(info.value)
    assert "schema profile-v1" in str(info.value)


def test_load_runs_the_schema(tmp_path: Path) -> None:
    # A derived value with an empty name passes the compiler (any string) but not... the compiler
    # accepts any unit string too; the schema's id pattern is the same as the compiler's. Here the
    # example params must be numbers: the compiler says so precisely first.
    doc = copy.deepcopy(BASE)
    doc["examples"][0]["params"] = {"empty_distance_mm": "far"}
    with pytest.raises(ConfigError) as info:
        load_profile(write_profile(tmp_path, doc))
    assert info.value.key_path == "examples[0].params.empty_distance_mm"
