"""Prometheus metrics of one daemon process, in their own registry (no global state).

Counters are cumulative over the process's life: a run's figures are read live from its
`RunHandle` while it goes and folded into the totals when it ends, so a scrape in the
middle of a run sees them move and a counter never goes back. Freshness (the age of the
oldest `session_state.checked_at` per app), the open violations and each sink's pending
events and health are read from the database at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class DaemonMetrics(Collector):
    """Everything /metrics shows; the daemon updates the plain attributes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "audit_job_request_latency_seconds",
            "Latency of check-session-status attempts.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.checks: dict[str, int] = {"active": 0, "inactive": 0, "error": 0}
        self.responses: dict[int, int] = {}
        self.retries = 0
        self.throttled = 0
        self.runs: dict[str, int] = {}
        self.missed_slots = 0
        self.skipped_slots = 0
        self.remediations: dict[str, int] = {}  # kicked users by outcome: applied, failed
        self.leader = False
        self.epoch = 0
        self.last_success_at: float | None = None
        self.last_duration_seconds: float | None = None
        self.freshness: dict[str, float] = {}
        self.open_violations: dict[tuple[str, str], int] = {}  # (app_id, severity) -> count
        self.events_pending: dict[str, int] = {}  # sink -> events after its cursor
        self.sinks_failing: dict[str, bool] = {}  # sink -> stopped by a permanent refusal
        self.handle: Any = None  # the live run's RunHandle, if any
        self.registry.register(self)

    # -- updates from the daemon ---------------------------------------------------------

    def run_started(self, handle: Any) -> None:
        handle.stats.observe_latency = self.latency.observe
        self.handle = handle

    def run_ended(self, status: str | None, duration_seconds: float | None) -> None:
        live = self._live()
        for key in ("active", "inactive", "error"):
            self.checks[key] += live["checks"][key]
        for code, n in live["responses"].items():
            self.responses[code] = self.responses.get(code, 0) + n
        self.retries += live["retries"]
        self.throttled += live["throttled"]
        self.handle = None
        if status is not None:
            self.runs[status] = self.runs.get(status, 0) + 1
        if duration_seconds is not None:
            self.last_duration_seconds = duration_seconds
        if status in ("succeeded", "completed_with_errors"):
            self.last_success_at = time.time()

    def _live(self) -> dict[str, Any]:
        handle = self.handle
        if handle is None:
            return {
                "checks": dict.fromkeys(("active", "inactive", "error"), 0),
                "responses": {},
                "retries": 0,
                "throttled": 0,
            }
        progress, stats = handle.progress, handle.stats
        return {
            "checks": {
                "active": progress.active,
                "inactive": progress.inactive,
                "error": progress.errors,
            },
            "responses": dict(stats.responses),
            "retries": stats.retries,
            "throttled": stats.throttled,
        }

    # -- the scrape ------------------------------------------------------------------------

    def collect(self) -> Iterable[Any]:
        live = self._live()
        yield _counter(
            "audit_job_checks",
            "Pairs checked, by outcome.",
            "outcome",
            {k: v + live["checks"][k] for k, v in self.checks.items()},
        )
        responses = dict(self.responses)
        for code, n in live["responses"].items():
            responses[code] = responses.get(code, 0) + n
        yield _counter(
            "audit_job_http_responses",
            "HTTP answers from the Authing API, by status.",
            "status",
            {str(k): v for k, v in sorted(responses.items())},
        )
        yield _plain_counter(
            "audit_job_retries", "Attempts after a pair's first.", self.retries + live["retries"]
        )
        yield _plain_counter(
            "audit_job_throttled", "Attempts answered 429.", self.throttled + live["throttled"]
        )
        yield _counter("audit_job_runs", "Runs ended, by final status.", "status", self.runs)
        yield _plain_counter(
            "audit_job_missed_slots", "Schedule slots recorded as missed.", self.missed_slots
        )
        yield _plain_counter(
            "audit_job_skipped_slots",
            "Schedule slots recorded as skipped_overlap.",
            self.skipped_slots,
        )
        yield _counter(
            "audit_job_remediations",
            "Users kicked by [remediation] auto, by outcome (applied, failed).",
            "outcome",
            {"applied": 0, "failed": 0, **self.remediations},
        )
        handle = self.handle
        yield _gauge(
            "audit_job_limiter_rate",
            "Request rate the live run's adaptive limiter allows (0 with no run).",
            handle.limiter.current_rate if handle is not None else 0.0,
        )
        gate = handle.gate if handle is not None else None
        yield _gauge(
            "audit_job_requests_in_flight",
            "Requests of the live run in flight now (0 with no run).",
            gate.in_flight if gate is not None else 0,
        )
        yield _gauge(
            "audit_job_concurrency_limit",
            "The live run's in-flight limit ([audit] concurrency, or the adaptive one; 0 with "
            "no run).",
            gate.limit if gate is not None else 0,
        )
        yield _gauge(
            "audit_job_concurrency_peak",
            "The most requests the live run had in flight at once (0 with no run).",
            gate.peak if gate is not None else 0,
        )
        yield _gauge(
            "audit_job_pending_pairs",
            "Pairs of the live run not answered yet (0 with no run).",
            max(0, handle.progress.total - handle.progress.done) if handle is not None else 0,
        )
        yield _gauge("audit_job_run_in_progress", "1 while a run goes.", handle is not None)
        if self.last_duration_seconds is not None:
            yield _gauge(
                "audit_job_last_run_duration_seconds",
                "Wall time of the last run this node ended.",
                self.last_duration_seconds,
            )
        if self.last_success_at is not None:
            yield _gauge(
                "audit_job_last_success_timestamp_seconds",
                "Unix time the last succeeded (or completed_with_errors) run ended.",
                self.last_success_at,
            )
        yield _gauge("audit_job_leader", "1 when this node leads.", self.leader)
        yield _gauge("audit_job_leader_epoch", "Leadership epoch this node holds.", self.epoch)
        freshness = GaugeMetricFamily(
            "audit_job_state_oldest_age_seconds",
            "Age of the oldest session_state.checked_at, per app.",
            labels=["app_id"],
        )
        for app_id, age in sorted(self.freshness.items()):
            freshness.add_metric([app_id], age)
        yield freshness
        yield _labelled(
            "audit_job_open_violations",
            "Open violations, per app and severity.",
            ["app_id", "severity"],
            {key: float(n) for key, n in sorted(self.open_violations.items())},
        )
        yield _labelled(
            "audit_job_events_pending",
            "Events a sink has yet to deliver (after its cursor, of its types).",
            ["sink"],
            {(name,): float(n) for name, n in sorted(self.events_pending.items())},
        )
        yield _labelled(
            "audit_job_sink_failing",
            "1 while a sink is stopped by a permanent refusal (until `events retry`).",
            ["sink"],
            {(name,): float(bad) for name, bad in sorted(self.sinks_failing.items())},
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _counter(name: str, doc: str, label: str, values: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _plain_counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled(
    name: str, doc: str, labels: list[str], values: Mapping[tuple[str, ...], float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))
