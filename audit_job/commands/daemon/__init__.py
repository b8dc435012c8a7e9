"""`audit-job daemon`, one job per module:

- slots.py: pure slot rules (triggers, slots between two times, the rows a gap needs)
- leadership.py: leader or not, and what changed, on an injected monotonic clock
- lease.py: the take-or-renew loop feeding it, and the release at a clean stop
- scheduler.py: the APScheduler job, its events as slot notices
- rows.py: the rows of slots that run no audit, written under the fence
- runs.py: the leader's work at a slot (resume first, the slot's run, prune)
- endpoint.py: what /healthz and /metrics answer
- service.py: the Daemon, wiring those together (start, takeover, fire, stop, SIGHUP)
"""

from audit_job.commands.daemon.service import Daemon

__all__ = ["Daemon"]
