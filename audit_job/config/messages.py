"""One line per configuration problem: where (file, section, key, line) and what is wrong.

pydantic's errors become `FILE: [section] key: must be ..., got VALUE (line N)`; a rejected
URL or secret is never shown as it was typed.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

from audit_job.config.policies import PolicySettings
from audit_job.config.settings import Settings
from audit_job.config.sinks import JsonlSinkSettings, WebhookSinkSettings, mask_webhook_url

BLOCK_SECTIONS = ("policy", "sink")  # arrays of tables: [[policy]], [[sink]]
SINK_TAGS = ("webhook", "jsonl")
HIDDEN_KEYS = ("access_key_secret", "secret_env")
UNION_BRANCHES = ("str", "list[str]")


def describe(origin: str, text: str, err: Mapping[str, Any]) -> str:
    loc = [str(part) for part in err["loc"]]
    if loc and loc[0] in BLOCK_SECTIONS:
        return _describe_block(origin, text, err, loc)
    where = f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else (loc[0] if loc else "")
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
        what = f"unknown key{hint}" if len(loc) > 1 else f"unknown section{hint}"
    elif kind == "missing":
        what = "required"
    else:
        shown = err.get("input")
        if loc and loc[-1] == "url" and isinstance(shown, str):
            shown = mask_url(shown)  # a rejected URL may still carry a real password
        if loc and loc[-1] == "access_key_secret":
            # An all-digit secret left unquoted is still the secret. "(value hidden)" also
            # keeps `key: ` out of the line, which log redaction would mask as a secret.
            shown = SecretStr("")
            where += " (value hidden)"
        what = f"{_expectation(loc, err)}, got {_show(shown)}"
    line = _line_of(text, loc)
    suffix = f" (line {line})" if line else ""
    return f"{origin}: {where}: {what}{suffix}"


def _describe_block(origin: str, text: str, err: Mapping[str, Any], loc: list[str]) -> str:
    """`FILE: [[sink]] #2 url: must be ..., got "https://hooks.example/?token=********"`."""
    section, kind = loc[0], err["type"]
    rest = loc[1:]
    number: int | None = None
    if rest and rest[0].isdigit():
        number = int(rest[0]) + 1
        rest = rest[1:]
    if section == "sink" and rest and rest[0] in SINK_TAGS:
        rest = rest[1:]  # pydantic's union branch, not a key of the file
    rest = [part for part in rest if part not in UNION_BRANCHES]  # `str | list[str]` keys
    msg = str(err["msg"]).removeprefix("Value error, ")
    whole_block = None
    if number is None and kind == "value_error" and (found := re.match(r"#(\d+): ", msg)):
        # a rule over all blocks (unique names), reported on the block that breaks it
        number, whole_block = int(found.group(1)), msg[found.end() :]
        rest = ["name"]
    key = ".".join(rest)
    where = f"[[{section}]]" + (f" #{number}" if number else "") + (f" {key}" if key else "")
    if whole_block is not None:
        what = whole_block
    elif kind == "extra_forbidden":
        known = _block_keys(section, loc)
        close = difflib.get_close_matches(rest[-1], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
        what = f"unknown key{hint}"
    elif kind == "missing":
        what = "required"
    elif kind == "union_tag_invalid":
        where += " type"
        rest = ["type"]
        tag = (err.get("ctx") or {}).get("tag")
        what = f'must be "webhook" or "jsonl", got {_show(tag)}'
    elif kind == "union_tag_not_found":
        where += " type"
        rest = ["type"]
        what = 'required ("webhook" or "jsonl")'
    elif kind in ("list_type", "model_type", "dict_type") and not rest:
        what = f"must be an array of tables: one [[{section}]] header per block"
    else:
        shown = err.get("input")
        if rest and rest[-1] == "url" and isinstance(shown, str):
            shown = mask_webhook_url(shown)  # user info or a query token may be a secret
        if rest and rest[-1] in HIDDEN_KEYS:
            shown = SecretStr("")
            where += " (value hidden)"
        if kind in ("value_error", "assertion_error"):
            what = msg if shown is None or not rest else f"{msg}, got {_show(shown)}"
        else:
            field = _block_field(section, loc, rest)
            what = f"{_expectation_of(field, err)}, got {_show(shown)}"
    line = _block_line(text, section, number, rest[0] if rest else None)
    suffix = f" (line {line})" if line else ""
    return f"{origin}: {where}: {what}{suffix}"


def _block_model(section: str, loc: list[str]) -> type[BaseModel] | None:
    if section == "policy":
        return PolicySettings
    tags = [part for part in loc if part in SINK_TAGS]
    if tags:
        return WebhookSinkSettings if tags[0] == "webhook" else JsonlSinkSettings
    return None


def _block_keys(section: str, loc: list[str]) -> list[str]:
    model = _block_model(section, loc)
    return list(model.model_fields) if model else []


def _block_field(section: str, loc: list[str], rest: list[str]) -> Any:
    model = _block_model(section, loc)
    if model is None or not rest:
        return None
    return model.model_fields.get(rest[0])


def _block_line(text: str, section: str, number: int | None, key: str | None) -> int | None:
    """Line of `key` inside the `number`-th `[[section]]` block (or of its header)."""
    if not text or number is None:
        return None
    count, header_line = 0, None
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if re.match(r"^\[\[\s*" + re.escape(section) + r"\s*\]\]", stripped):
            count += 1
            if count == number:
                header_line = line_number
                if key is None:
                    return line_number
            elif count > number:
                break
            continue
        if stripped.startswith("[") and count >= number:
            break
        if count == number and key and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return line_number
    return header_line


def _known_keys(section: list[str]) -> list[str]:
    model: type[BaseModel] = Settings
    for name in section:
        annotation = model.model_fields[name].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _expectation(loc: list[str], err: Mapping[str, Any]) -> str:
    """`must be an integer >= 1`, from the field's declared type and bounds."""
    if err["type"] in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ")
    field = None
    if len(loc) == 2 and loc[0] in Settings.model_fields:
        section = Settings.model_fields[loc[0]].annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            field = section.model_fields.get(loc[1])
    return _expectation_of(field, err)


def _expectation_of(field: Any, err: Mapping[str, Any]) -> str:
    if field is None:
        return str(err["msg"]).lower()
    text = repr(field.annotation)
    if "Literal" in text:
        choices = re.findall(r"'([^']*)'", text)
        return "must be one of " + ", ".join(f'"{c}"' for c in choices)
    noun = (
        "a string or an array of strings"
        if "list" in text and "str |" in text
        else "an array of strings"
        if "list" in text
        else "a boolean (true or false)"
        if "bool" in text
        else "an integer"
        if "int" in text
        else "a number"
        if "float" in text
        else "a string"
    )
    bounds = []
    for meta in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sign} {getattr(meta, attr)}")
    return f"must be {noun}" + (" " + " and ".join(bounds) if bounds else "")


def _show(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "(secret)"
    try:
        shown = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        shown = repr(value)
    # a value's U+0085 or U+2028 would break the one line in two for str.splitlines()
    shown = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in shown)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _line_of(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of `key` inside `[section]` (tomllib keeps no positions)."""
    if not text or not loc:
        return None
    section, key = loc[0], (loc[1] if len(loc) > 1 else None)
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([\w.\-]+)\s*\]", stripped)
        if header:
            current = header.group(1)
            if key is None and current == section:
                return number
            continue
        if current == section and key and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
    return None


def mask_url(url: str) -> str:
    """Hide a password in a database URL."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1********@", url)
