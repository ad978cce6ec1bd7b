"""Every metric the engine records: its kind, labels and meaning.

Names are the base names sinks receive; the ``prometheus`` sink exports them
with the ``infsched_`` prefix.  docs/operations.md lists the same metrics
(a test keeps the two in step), and the Prometheus sink uses the meanings as
HELP text.
"""

from __future__ import annotations

from typing import Literal

import attrs

Kind = Literal["counter", "gauge", "histogram"]

#: Prefix of every exported metric name.
PREFIX = "infsched_"

_JOB = ("repository", "executor")
_REPO = ("repository",)


@attrs.frozen
class MetricInfo:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str


CATALOG: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo(
            "jobs_scheduled_total",
            "counter",
            _REPO,
            "Entities moved into the job store by fetch cycles (counted once committed).",
        ),
        MetricInfo(
            "entities_misrouted_total",
            "counter",
            _REPO,
            "Entities a fetch found outside the day of the table they were written into "
            "(or due before the retention horizon); scheduled all the same, and listed by "
            "`infsched partitions check`.",
        ),
        MetricInfo("jobs_executed_total", "counter", _JOB, "Runs that succeeded."),
        MetricInfo(
            "jobs_failed_total",
            "counter",
            _JOB,
            "Runs that failed (raised, or overran the executor's timeout), retried or not.",
        ),
        MetricInfo("jobs_retried_total", "counter", _JOB, "Failed runs scheduled to run again."),
        MetricInfo(
            "jobs_misfired_total",
            "counter",
            _JOB,
            "First runs claimed later than misfire_threshold after their due time.",
        ),
        MetricInfo(
            "schedule_occurrences_materialized_total",
            "counter",
            ("schedule",),
            "Occurrences of a schedule made jobs (by the node holding the schedules lease).",
        ),
        MetricInfo(
            "schedule_occurrences_misfired_total",
            "counter",
            ("schedule",),
            "Occurrences of a schedule not run because they were missed (no node ran "
            "in time) and its catch-up policy does not run them.",
        ),
        MetricInfo(
            "schedule_occurrences_skipped_total",
            "counter",
            ("schedule",),
            "Occurrences of a schedule not run because its previous run was still in "
            "flight (overlap skip, or a second one behind a queued run).",
        ),
        MetricInfo(
            "jobs_throttled_total",
            "counter",
            _JOB,
            "Runs the called system throttled (ThrottledError): the job waits again with no "
            "attempt counted, and its limit target is held across the cluster.",
        ),
        MetricInfo(
            "jobs_slot_missed_total",
            "counter",
            (),
            "Rate-limited jobs given back unstarted because this node's threads could not "
            "start them within 50 ms of their start slot; they take a new slot.",
        ),
        MetricInfo(
            "jobs_dead_lettered_total",
            "counter",
            _JOB,
            "Jobs given up on (out of attempts, or a permanent error); kept as dead letters.",
        ),
        MetricInfo(
            "jobs_recovered_total",
            "counter",
            (),
            "Claimed jobs whose node stopped renewing their lease, returned to waiting.",
        ),
        MetricInfo(
            "jobs_outcome_lost_total",
            "counter",
            (),
            "Outcomes not recorded because the job's lease expired first; the job runs again.",
        ),
        MetricInfo(
            "jobs_not_started_lease_unsure_total",
            "counter",
            (),
            "Claimed jobs given back unstarted because this node stood still so long that "
            "their leases may have run out (a long pause, a frozen VM); they run once elsewhere.",
        ),
        MetricInfo(
            "db_conflicts_total",
            "counter",
            ("component", "kind"),
            "Transactions the database rolled back to break a conflict, tried again by a "
            "node's thread (component): kind deadlock, serialization failure, lock timeout, "
            "or certification conflict (Galera: another member's write came first).",
        ),
        MetricInfo(
            "leases_taken_total",
            "counter",
            ("lease",),
            "Leases (a repository's fetching or maintenance) this node took, at its start or "
            "over from a node that stopped renewing them.",
        ),
        MetricInfo(
            "metrics_sink_errors_total",
            "counter",
            ("sink",),
            "Measurements a failing metrics sink could not take (counted on the healthy sinks).",
        ),
        MetricInfo(
            "process_cpu_seconds_total",
            "counter",
            (),
            "CPU time (user and system) this scheduler process has used.",
        ),
        MetricInfo(
            "jobs_backlog",
            "gauge",
            _REPO,
            "Jobs due now and not started (waiting, run time passed), across the cluster.",
        ),
        MetricInfo(
            "jobs_in_flight",
            "gauge",
            _REPO,
            "Jobs claimed by this node (queued in its pool or running).",
        ),
        MetricInfo(
            "dead_letters",
            "gauge",
            _REPO,
            "Dead letters in the job table, across the cluster; `infsched jobs retry` "
            "or `jobs cancel` clears them.",
        ),
        MetricInfo(
            "node_heartbeat_age_seconds",
            "gauge",
            ("node",),
            "Seconds since each node's last heartbeat, by the database's clock, as every node "
            "sees it (0 for a node that stopped cleanly).",
        ),
        MetricInfo(
            "limit_rate",
            "gauge",
            ("target",),
            "Starts per second a flow limit allows its target across the cluster, as in force "
            "now (0: the target has no rate limit, or its limit was removed).",
        ),
        MetricInfo(
            "limit_max_concurrent",
            "gauge",
            ("target",),
            "Jobs in flight a flow limit allows its target across the cluster, at most "
            "(0: no cap, or its limit was removed).",
        ),
        MetricInfo(
            "jobs_held_back",
            "gauge",
            ("target",),
            "Jobs due now and waiting in lanes under a limited target, across the cluster: "
            "what its limit (or a throttled gateway's hold) keeps waiting, with any backlog.",
        ),
        MetricInfo(
            "clock_offset_seconds",
            "gauge",
            (),
            "The database's clock minus this node's, as last measured; the node's times are "
            "corrected by it.",
        ),
        MetricInfo(
            "process_resident_memory_bytes",
            "gauge",
            (),
            "Resident memory of this scheduler process.",
        ),
        MetricInfo(
            "lag_seconds",
            "histogram",
            _JOB,
            "Start time minus due time of each run (retries included).",
        ),
        MetricInfo(
            "fetch_cycle_seconds",
            "histogram",
            _REPO,
            "Duration of one fetch cycle of a repository.",
        ),
        MetricInfo(
            "fetch_cycle_entities",
            "histogram",
            _REPO,
            "Entities one fetch cycle moved into the job store.",
        ),
        MetricInfo(
            "repository_query_seconds",
            "histogram",
            _REPO,
            "Duration of one query for unscheduled entities in a repository.",
        ),
    )
}
