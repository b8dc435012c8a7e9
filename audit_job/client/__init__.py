"""The Authing client: check one pair against check-session-status (spec 6, 7).

- `check.py`: AuthingClient, the request path (a pair's check, its retries, one attempt).
- `exchange.py`: one HTTP exchange of an attempt (post, classify, count).
- `headers.py`: the headers of a check made with a bearer token (token mode).
- `pacing.py`: the in-flight gate and the rate limiter an attempt passes, told its answer.
- `rejection.py`: the words of a run-level failure (credentials, TLS).
- `result.py`: a pair's CheckResult from its last answer.
- `session.py`: the aiohttp session and ssl_setting, what it verifies certificates with.
- `stats.py`: ClientStats, the counters metrics and the run summary read.
"""

from audit_job.client.check import AuthingClient
from audit_job.client.session import ssl_setting
from audit_job.client.stats import ClientStats

__all__ = ["AuthingClient", "ClientStats", "ssl_setting"]
