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

from audit_job.config.settings import Settings


def describe(origin: str, text: str, err: Mapping[str, Any]) -> str:
    loc = [str(part) for part in err["loc"]]
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
    if field is None:
        return str(err["msg"]).lower()
    text = repr(field.annotation)
    if "Literal" in text:
        choices = re.findall(r"'([^']*)'", text)
        return "must be one of " + ", ".join(f'"{c}"' for c in choices)
    noun = (
        "a boolean (true or false)"
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
