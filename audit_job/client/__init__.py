"""The Authing client: check one pair against check-session-status (spec 6, 7).

- `check.py`: AuthingClient, the request path (a pair's check, its retries, one attempt).
- `stats.py`: ClientStats, the counters metrics and the run summary read.
"""

from audit_job.client.check import AuthingClient, ssl_setting
from audit_job.client.stats import ClientStats

__all__ = ["AuthingClient", "ClientStats", "ssl_setting"]
