"""config.example.toml is the documentation of every key: it must stay valid and complete."""

from __future__ import annotations

import re
import tomllib

from helpers import ROOT
from pydantic import BaseModel

from audit_job.config import Settings

EXAMPLE = ROOT / "config.example.toml"


def test_the_example_validates_and_equals_the_defaults() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert Settings.model_validate(data) == Settings()


def test_every_key_is_documented_with_a_comment() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", text, flags=re.M | re.S))
    for name, field in Settings.model_fields.items():
        assert name in sections, f"[{name}] missing from config.example.toml"
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        body = sections[name]
        for key in model.model_fields:
            line = re.search(rf"^#? ?{key} = ", body, flags=re.M)
            assert line, f"[{name}] {key} is not in config.example.toml"
            before = body[: line.start()].rstrip("\n").splitlines()
            assert before and before[-1].startswith("#"), f"[{name}] {key} has no comment"
