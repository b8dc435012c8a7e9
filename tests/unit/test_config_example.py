"""config.example.toml is the documentation of every key: it must stay valid and complete."""

from __future__ import annotations

import re
import tomllib

from helpers import ROOT
from pydantic import BaseModel

from audit_job.config import (
    JsonlSinkSettings,
    PolicySettings,
    Settings,
    WebhookSinkSettings,
)

EXAMPLE = ROOT / "config.example.toml"


def test_the_example_validates_and_equals_the_defaults() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert Settings.model_validate(data) == Settings()


BLOCKS = {"policy": [PolicySettings], "sink": [WebhookSinkSettings, JsonlSinkSettings]}


def test_every_key_is_documented_with_a_comment() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", text, flags=re.M | re.S))
    for name, field in Settings.model_fields.items():
        if name in BLOCKS:
            continue
        assert name in sections, f"[{name}] missing from config.example.toml"
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        body = sections[name]
        for key in model.model_fields:
            line = re.search(rf"^#? ?{key} = ", body, flags=re.M)
            assert line, f"[{name}] {key} is not in config.example.toml"
            before = body[: line.start()].rstrip("\n").splitlines()
            assert before and before[-1].startswith("#"), f"[{name}] {key} has no comment"


def test_every_block_key_is_documented_with_a_comment() -> None:
    """[[policy]] and [[sink]] have no defaults to show: each is one commented-out block
    naming every key of every kind, each with a comment above it."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert set(BLOCKS) == {
        n for n, f in Settings.model_fields.items() if "list" in repr(f.annotation)
    }
    for name, models in BLOCKS.items():
        found = re.search(rf"^# \[\[{name}\]\]\n(.*?)(?=^# \[\[|^\[|\Z)", text, flags=re.M | re.S)
        assert found, f"[[{name}]] missing from config.example.toml"
        body = found.group(1)
        for model in models:
            for key in model.model_fields:
                line = re.search(rf"^# {key} = ", body, flags=re.M)
                assert line, f"[[{name}]] {key} is not in config.example.toml"
                before = body[: line.start()].rstrip("\n").splitlines()
                assert before and before[-1].startswith("#") and " = " not in before[-1], (
                    f"[[{name}]] {key} has no comment"
                )


def test_the_example_blocks_validate_when_uncommented() -> None:
    """The commented-out blocks are real configuration: uncommented, they load."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for name, models in BLOCKS.items():
        body = re.search(rf"^# \[\[{name}\]\]\n(.*?)(?=^# \[\[|^\[|\Z)", text, flags=re.M | re.S)
        assert body
        keys = dict(re.findall(r"^# (\w+) = (.+)$", body.group(1), flags=re.M))
        for model in models:
            values = {
                k: tomllib.loads(f"v = {v}")["v"]
                for k, v in keys.items()
                if k in model.model_fields
            }
            if name == "sink":
                values["type"] = "jsonl" if model is JsonlSinkSettings else "webhook"
            model.model_validate(values)
