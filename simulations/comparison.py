"""Run one simulated federation with several aggregation methods and compare them.

``fedcare simulate --compare fedavg,fedyogi,fedprox`` runs the same federation
(same data, split, model, privacy budget and seed) once per method, each in its
own sub-folder of the run folder, then writes one side-by-side table:
``comparison.md`` and ``comparison.json``. A method is a name from
:data:`METHODS`, or several joined by ``+`` (``fedyogi+fedprox``).

Every method is a separate run: its virtual hospitals keep their own ledgers,
in its own folder, so each spends (at most) the run's epsilon. Real hospitals
would pay for every method they train; compare in simulation, then deploy one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedcare.server.run_directory import check_run_path, default_run_path
from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.server_optimizer import ServerOptimizerName
from fedcare.shared.errors import ConfigError

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"

DEFAULT_PROXIMAL_MU = 0.1
"""FedProx's mu when the configuration leaves ``proximal-mu`` at 0."""

_OPTIMIZERS = {
    name.value: name for name in ServerOptimizerName if name is not ServerOptimizerName.NONE
}
METHODS = ("fedavg", "fedprox", *_OPTIMIZERS)
"""Methods ``--compare`` accepts; join them with ``+`` to combine a server optimiser and FedProx."""

Simulator = Callable[[RunConfig], dict[str, Any]]


def parse_methods(text: str) -> list[str]:
    """Split ``--compare``'s comma-separated methods and check each.

    Raises
    ------
    ConfigError
        Naming ``compare`` and the methods it accepts.
    """
    methods = [part.strip() for part in text.split(",") if part.strip()]
    for method in methods:
        parts = method.split("+")
        optimizers = [part for part in parts if part in _OPTIMIZERS]
        if any(part not in METHODS for part in parts) or len(optimizers) > 1:
            raise ConfigError(
                "compare",
                f"unknown method '{method}'; choose from {', '.join(METHODS)}, or combine "
                "one server optimiser with fedprox as e.g. fedyogi+fedprox",
            )
    if len(methods) < 2 or len(set(methods)) != len(methods):
        raise ConfigError("compare", f"needs two or more distinct methods (got '{text}')")
    return methods


def method_config(config: RunConfig, method: str, out_dir: Path) -> RunConfig:
    """Return ``config`` set up for ``method``, writing its run into ``out_dir``."""
    parts = method.split("+")
    optimizer = next((part for part in parts if part in _OPTIMIZERS), "none")
    mu = config.training.proximal_mu or DEFAULT_PROXIMAL_MU
    overrides: dict[str, FlatValue] = {
        "server-optimizer": optimizer,
        "proximal-mu": mu if "fedprox" in parts else 0.0,
        "out-dir": str(out_dir),
    }
    return RunConfig.from_flat(config.to_flat() | overrides)


def compare(config: RunConfig, methods: Sequence[str], simulate: Simulator) -> dict[str, Any]:
    """Simulate ``config`` once per method and write the side-by-side table.

    Returns
    -------
    dict[str, Any]
        ``comparison.json``'s content: the command's settings and one row per method.
    """
    root = Path(config.output.out_dir or default_run_path())
    check_run_path(root)
    configs = {method: method_config(config, method, root / method) for method in methods}
    summaries = {method: simulate(method_config) for method, method_config in configs.items()}
    comparison = {
        "folder": str(root),
        "methods": list(methods),
        "config": config.to_flat(),
        "rows": comparison_rows(summaries),
        "baselines": next(iter(summaries.values()))["final"],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / COMPARISON_JSON).write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")
    (root / COMPARISON_MD).write_text(comparison_markdown(comparison), encoding="utf-8")
    return comparison


def comparison_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return one row per method: status, per-hospital and mean local metric, test metric, epsilon.

    The metric is accuracy where the task has it, else the task's headline
    metric (C-index, MAE, ...); ``mean`` is the unweighted mean over hospitals, so a small,
    skewed site counts as much as a large one.
    """
    rows = []
    for method, summary in summaries.items():
        per_hospital = summary.get("final_per_hospital", {})
        metric = _headline([*per_hospital.values(), *summary["final"].values()])
        scores = {name: metrics.get(metric) for name, metrics in sorted(per_hospital.items())}
        rows.append(
            {
                "method": method,
                "status": _status(summary),
                "metric": metric,
                "per_hospital": scores,
                "mean": _mean(scores.values()),
                "test": summary["final"].get("federated", {}).get(metric),
                "max_epsilon": max(summary["privacy"]["per_hospital"].values(), default=None),
            }
        )
    return rows


def comparison_markdown(comparison: Mapping[str, Any]) -> str:
    """Return the comparison as a Markdown table, with the non-federated baselines below it."""
    rows = comparison["rows"]
    hospitals = sorted({name for row in rows for name in row["per_hospital"]})
    metric = rows[0]["metric"] if rows else "metric"
    header = ["method", *hospitals, "mean", "test", "max epsilon", "status"]
    lines = [
        f"Per-hospital {metric} of each method's final global model (each hospital's own "
        "held-out split), their unweighted mean, the aggregator's held-out test set, and "
        "the most epsilon any hospital spent.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [row["per_hospital"].get(name) for name in hospitals]
        numbers = [*cells, row["mean"], row["test"], row["max_epsilon"]]
        lines.append("| " + " | ".join([row["method"], *map(_cell, numbers), row["status"]]) + " |")
    baselines = [
        f"- baseline {name}: test {metric} {_cell(metrics.get(metric))}"
        for name, metrics in comparison["baselines"].items()
        if name != "federated"
    ]
    if baselines:
        lines += ["", *baselines]
    return "\n".join(lines) + "\n"


def _status(summary: Mapping[str, Any]) -> str:
    """Return the run's status, or why a run that "completed" never updated the model."""
    rounds = summary.get("rounds", {})
    aggregated, planned = len(rounds.get("aggregated", [])), rounds.get("planned", 0)
    if summary["status"] == "completed" and planned and aggregated < planned:
        return f"{aggregated} of {planned} rounds aggregated"
    return str(summary["status"])


def _headline(scores: Sequence[Mapping[str, float]]) -> str:
    """Return accuracy where the task reports it, else the task's first metric.

    ``scores`` are the hospitals' metrics, then the run's (test set, baselines):
    hospitals that refused to evaluate (too few held-out rows) leave the latter.
    """
    names = [name for metrics in scores for name in metrics if name != "loss"]
    if "accuracy" in names:
        return "accuracy"
    return names[0] if names else "loss"


def _mean(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
