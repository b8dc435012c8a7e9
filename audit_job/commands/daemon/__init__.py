"""`audit-job daemon`, one job per module:

- slots.py: pure slot rules (triggers, slots between two times, the rows a gap needs)
- leadership.py: leader or not, and what changed, on an injected monotonic clock
- scheduler.py: the APScheduler job, its events as slot notices
- rows.py: the rows of slots that run no audit, written under the fence
- runs.py: the leader's work at a slot (resume first, the slot's run, prune)
- service.py: the Daemon, wiring those to the lease, /healthz and /metrics
"""

from audit_job.commands.daemon.service import Daemon

__all__ = ["Daemon"]
