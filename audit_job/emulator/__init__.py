"""Authing stand-in for tests and the demo (spec: /work/shared/authing-api.md).

    async with Emulator(EmulatorOptions(fault_5xx=0.1)) as emu:
        ... requests to emu.url ...
        emu.configure(rate=50)          # mid-run changes, also POST /__config
        emu.stats()                     # also GET /__stats

`truth(app_id, user_id, seed)` computes the expected answer without a server.
"""

from audit_job.emulator.options import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_USERPOOL_ID,
    ERROR_STYLES,
    FAULT_KINDS,
    EmulatorOptions,
)
from audit_job.emulator.server import TOKEN_PATH, Emulator, serve
from audit_job.emulator.stats import PAIR_SEPARATOR
from audit_job.emulator.truth import Verdict, hashed_active, load_truth_file, truth, verdict

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_ACCESS_KEY_SECRET",
    "DEFAULT_USERPOOL_ID",
    "ERROR_STYLES",
    "FAULT_KINDS",
    "PAIR_SEPARATOR",
    "TOKEN_PATH",
    "Emulator",
    "EmulatorOptions",
    "Verdict",
    "hashed_active",
    "load_truth_file",
    "serve",
    "truth",
    "verdict",
]
