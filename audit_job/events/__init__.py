"""Delivering the event feed: envelopes, Standard Webhooks signatures, the webhook and
JSON-lines sinks, and the deliverer that drains each sink from its cursor.

Nothing heavy is imported here: `import audit_job.events.envelope` must stay cheap.
"""
