"""The Authing client: check one pair against check-session-status (spec 6, 7).

- `check.py`: AuthingClient, the request path (a pair's check, its retries, one attempt).
"""

from audit_job.client.check import AuthingClient, ClientStats, ssl_setting

__all__ = ["AuthingClient", "ClientStats", "ssl_setting"]
