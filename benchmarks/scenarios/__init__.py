"""The scenarios of benchmarks/run.py, one module each. A module here defines
`SCENARIO = Scenario(...)` (harness/scenario.py) and is found by `discover()`: a new scenario
is a new file, with no other edit."""

from __future__ import annotations

import importlib
import pkgutil

from harness.scenario import Scenario


def discover() -> list[Scenario]:
    found: list[Scenario] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        scenario = getattr(module, "SCENARIO", None)
        if not isinstance(scenario, Scenario):
            raise SystemExit(f"benchmarks/scenarios/{info.name}.py: no SCENARIO = Scenario(...)")
        found.append(scenario)
    names = [s.name for s in found]
    if len(set(names)) != len(names):
        raise SystemExit(f"benchmarks/scenarios: two scenarios share a name in {names}")
    return sorted(found, key=lambda s: (s.order, s.name))
