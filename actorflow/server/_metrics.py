"""The /metrics endpoint's body: runtime and journal figures in Prometheus' text format."""

from __future__ import annotations

from actorflow._metrics import Metrics, batch_histogram, counter, gauge, labelled
from actorflow.runtime import Runtime


def budget_lines(metrics: Metrics) -> list[str]:
    """Budget spending and refusals, by actor type (never by invocation)."""
    spent = "Budget spending settled live (cost_XXX: millionths of currency XXX)."
    return [
        *labelled("actorflow_budget_spent_total", spent, metrics.budget_spent, "dimension"),
        *labelled(
            "actorflow_budget_refusals_total",
            "Step reservations refused with BudgetExceeded.",
            metrics.budget_refusals,
            "dimension",
        ),
    ]


def render_metrics(runtime: Runtime, requests: int) -> str:
    """Every metric, as Prometheus text."""
    metrics = runtime.metrics
    states = list(runtime.hosted().values())
    lines = [
        *counter("actorflow_turns_total", "Turns finished (live and replayed).", metrics.turns),
        *counter("actorflow_steps_total", "Step outcomes journaled.", metrics.steps),
        *counter("actorflow_journal_appends_total", "Journal appends by actors.", metrics.appends),
        *counter("actorflow_activations_total", "Actor activations.", metrics.activations),
        *counter("actorflow_recovered_total", "Actors recovered at start.", metrics.recovered),
        *counter("actorflow_http_requests_total", "HTTP requests served.", requests),
        *gauge("actorflow_actors_active", "Actors in memory.", len(states)),
        *gauge("actorflow_actors_stuck", "Actors stuck.", states.count("stuck")),
        *gauge(
            "actorflow_actors_held",
            "Pinned actors holding a turn for the code version that started it.",
            states.count("held"),
        ),
        *gauge(
            "actorflow_actors_corrupt",
            "Actors quarantined because their journal is damaged.",
            states.count("corrupt"),
        ),
        *metrics.turn_seconds.render("actorflow_turn_duration_seconds", "Wall time of live turns."),
        *budget_lines(metrics),
    ]
    lines += [
        "# HELP actorflow_code_version_info The code version new turns of each type record.",
        "# TYPE actorflow_code_version_info gauge",
        *(
            f'actorflow_code_version_info{{type="{_label(name)}",version="{_label(version)}"}} 1'
            for name, version in sorted(runtime.versions.items())
        ),
    ]
    worker = runtime.worker
    if worker is not None:
        lines += [
            "# HELP actorflow_worker_leases Actors this worker holds the lease of.",
            "# TYPE actorflow_worker_leases gauge",
            f'actorflow_worker_leases{{worker="{_label(worker.id)}"}} {len(worker.held)}',
            "# HELP actorflow_worker_capacity Actors this worker hosts at once, at most.",
            "# TYPE actorflow_worker_capacity gauge",
            f'actorflow_worker_capacity{{worker="{_label(worker.id)}"}} {worker.capacity}',
        ]
        lines += counter(
            "actorflow_worker_takeovers_total",
            "Expired leases of other workers offered to this one.",
            worker.takeovers,
        )
        lines += counter(
            "actorflow_worker_leases_lost_total",
            "Actors dropped because their lease was taken from this worker.",
            worker.lost,
        )
    stats = getattr(runtime.store, "stats", None)
    if stats is not None:
        lines += counter("actorflow_journal_commits_total", "Group commits.", stats.commits)
        lines += counter("actorflow_journal_records_total", "Records committed.", stats.records)
        lines += batch_histogram(stats.batch_sizes.items()).render(
            "actorflow_journal_commit_batch_records", "Records per group commit."
        )
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """``value`` as a Prometheus label value (backslash, quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
