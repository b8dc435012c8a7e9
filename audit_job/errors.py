"""Expected failures, each carrying the exit code the CLI returns for it.

    AuditJobError (1)             fatal: the command could not do its job
    ├── ConfigError (2)           bad configuration or usage
    ├── StoreError (1)            the database failed (original in __cause__)
    │   └── StoreUnavailable (1)  cannot connect at all
    ├── ApiError (1)              the Authing API cannot be used for this run
    │   ├── AuthRejected (1)      credentials rejected K times in a row
    │   └── TlsRejected (1)       certificate verification failed
    ├── RunConflict (1)           another run is live
    ├── NotFound (1)              a run id or similar does not exist
    ├── FencedOut (1)             this node lost leadership mid-run
    └── EvidenceMismatch (1)      a bundle or the hash chain does not verify

A pair that ends in error is data, not an exception: `run` exits 3 when any exist.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_ITEM_ERRORS = 3
EXIT_INTERRUPTED = 130


class AuditJobError(Exception):
    exit_code = EXIT_FATAL


class ConfigError(AuditJobError):
    exit_code = EXIT_USAGE


class StoreError(AuditJobError):
    pass


class StoreUnavailable(StoreError):
    pass


class ApiError(AuditJobError):
    pass


class AuthRejected(ApiError):
    pass


class TlsRejected(ApiError):
    pass


class RunConflict(AuditJobError):
    pass


class NotFound(AuditJobError):
    pass


class FencedOut(AuditJobError):
    pass


class EvidenceMismatch(AuditJobError):
    pass
