"""The Authing client: check one pair against check-session-status (spec 6, 7).

- `check.py`: AuthingClient, the request path (a pair's check, its retries, one attempt).
- `headers.py`: the headers of a check made with a bearer token (token mode).
- `rejection.py`: the words of a run-level failure (credentials, TLS).
- `result.py`: a pair's CheckResult from its last answer.
- `stats.py`: ClientStats, the counters metrics and the run summary read.
- `tls.py`: ssl_setting, what the connector verifies certificates with.
"""

from audit_job.client.check import AuthingClient
from audit_job.client.stats import ClientStats
from audit_job.client.tls import ssl_setting

__all__ = ["AuthingClient", "ClientStats", "ssl_setting"]
