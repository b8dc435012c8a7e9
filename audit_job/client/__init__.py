"""The Authing client: check one pair against check-session-status (spec 6, 7).

- `check.py`: AuthingClient, the request path (a pair's check, its retries, one attempt).
- `headers.py`: the headers of a check made with a bearer token (token mode).
- `rejection.py`: the words of a run-level failure (credentials, TLS).
- `result.py`: a pair's CheckResult from its last answer.
- `session.py`: the aiohttp session and ssl_setting, what it verifies certificates with.
- `stats.py`: ClientStats, the counters metrics and the run summary read.
"""

from audit_job.client.check import AuthingClient
from audit_job.client.session import ssl_setting
from audit_job.client.stats import ClientStats

__all__ = ["AuthingClient", "ClientStats", "ssl_setting"]
