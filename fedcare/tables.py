"""The run summary as terminal tables."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from fedcare.console import console
from fedcare.server.report import METRICS_JSON, SUMMARY
from fedcare.shared.config.run_config import RunConfig

_ROW_LABELS = {
    "pooled": "pooled (central, no DP)",
    "local_only": "local-only (same DP)",
    "federated": "federated (this run)",
}


HOSPITAL_COLUMNS = 6
"""Up to this many hospitals, the epsilon table has a column each; above, their spread."""


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def rounds_table(metrics: Mapping[str, Any], metric_names: list[str]) -> Table:
    """Global-model metrics per round (round 0 is the initial model)."""
    rounds = metrics["rounds"]
    source = (
        "held-out test set" if any(r["test_metrics"] for r in rounds) else "hospitals' evaluation"
    )
    table = Table(title=f"Global model per round ({source})")
    table.add_column("round", justify="right")
    for name in metric_names:
        table.add_column(name, justify="right")
    for r in rounds:
        scores = r["test_metrics"] or r["federated_metrics"]
        table.add_row(str(r["round"]), *(_fmt(scores.get(n)) for n in metric_names))
    return table


def epsilon_table(metrics: Mapping[str, Any], summary: Mapping[str, Any]) -> Table:
    """Epsilon each hospital has spent after each round, and its noise multiplier.

    Past :data:`HOSPITAL_COLUMNS` hospitals, only the spread (how many, least, median,
    most) of each row.
    """
    privacy = summary["privacy"]
    rounds = [r for r in metrics["rounds"] if r["hospitals"]]
    hospitals = sorted({name for r in rounds for name in r["hospitals"]})
    table = Table(
        title=f"Epsilon spent (target {privacy['target_epsilon']:g}, delta {privacy['delta']:g})"
    )
    table.add_column("round", justify="right")
    listed = len(hospitals) <= HOSPITAL_COLUMNS
    for name in hospitals if listed else ("hospitals", "least", "median", "most"):
        table.add_column(name, justify="right")
    for r in rounds:
        spent = [_privacy(r["hospitals"].get(name, {})).get("epsilon") for name in hospitals]
        cells = [_fmt(e) for e in spent] if listed else _spread([e for e in spent if e is not None])
        table.add_row(str(r["round"]), *cells)
    # The noise each hospital calibrated for the run, and the noise-to-signal it implies.
    for label, key in (
        ("noise multiplier", "noise_multiplier_per_hospital"),
        ("noise-to-signal", "noise_to_signal_per_hospital"),
    ):
        if key not in privacy:
            continue
        values = [privacy[key].get(name) for name in hospitals]
        cells = (
            [_fmt(v) for v in values] if listed else _spread([v for v in values if v is not None])
        )
        table.add_row(label, *cells)
    return table


def _spread(values: list[float]) -> list[str]:
    if not values:
        return ["0", "-", "-", "-"]
    return [str(len(values)), _fmt(min(values)), _fmt(statistics.median(values)), _fmt(max(values))]


def privacy_table(summary: Mapping[str, Any]) -> Table:
    """Tabulate per hospital the epsilon spent on training, on evaluation, in all, per dataset."""
    privacy = summary["privacy"]
    table = Table(title=f"Privacy spent per hospital (delta {privacy['delta']:g})")
    columns = (
        ("training", "per_hospital_training"),
        ("evaluation", "per_hospital_evaluation"),
        ("this run", "per_hospital"),
        ("dataset, all runs", "per_hospital_dataset"),
    )
    table.add_column("hospital", no_wrap=True)
    for title, _ in columns:
        table.add_column(title, justify="right")
    for name in sorted(privacy["per_hospital"]):
        table.add_row(name, *(_fmt(privacy.get(key, {}).get(name)) for _, key in columns))
    return table


def _privacy(hospital: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return a hospital's privacy scalars in a round (older records kept them with training's)."""
    return hospital.get("privacy") or hospital.get("train", {})


def comparison_table(summary: Mapping[str, Any], metric_names: list[str]) -> Table:
    """Tabulate the final pooled, local-only and federated metrics side by side."""
    table = Table(title=f"Final comparison ({summary['final_source']} metrics)")
    table.add_column("model", no_wrap=True)
    for name in metric_names:
        table.add_column(name[:5], justify="right")
    for key in ("pooled", "local_only", "federated"):
        row = summary["final"].get(key)
        if row is not None:
            table.add_row(_ROW_LABELS[key], *(_fmt(row.get(n)) for n in metric_names))
    return table


def print_summary(summary: Mapping[str, Any], run_dir: Path) -> None:
    """Print a finished run's tables and warnings."""
    metric_names = list(summary["final"]["federated"]) or list(summary["final"].get("pooled", {}))
    metrics = json.loads((run_dir / METRICS_JSON).read_text(encoding="utf-8"))
    console.print(rounds_table(metrics, metric_names))
    if summary["privacy"]["differential_privacy"]:
        console.print(epsilon_table(metrics, summary))
        console.print(privacy_table(summary))
    console.print(comparison_table(summary, metric_names))
    if summary.get("personalised_per_hospital"):
        console.print(personalised_table(summary, metric_names))
    for warning in summary["warnings"]:
        # Escaped: a hospital's error message is quoted in them, and must not be markup.
        console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)
    for error in summary["errors"]:
        console.print(f"[bold red]error:[/] {escape(error)}", highlight=False)
    console.print(f"run {summary['status']}; report, plot and model in [bold]{run_dir}[/]")


def print_summary_if_written(config: RunConfig) -> bool:
    """Print the run's tables if its report was written (not by a run that failed midway).

    Returns
    -------
    bool
        Whether there was a report to print.
    """
    run_dir = Path(config.output.out_dir)
    if not (run_dir / SUMMARY).is_file():
        return False
    print_summary(json.loads((run_dir / SUMMARY).read_text(encoding="utf-8")), run_dir)
    return True


def personalised_table(summary: Mapping[str, Any], metric_names: list[str]) -> Table:
    """Tabulate each hospital's final global-model metrics above its personalised model's."""
    layers = summary["config"].get("personalise-layers", "")
    table = Table(title=f"Per hospital: global model, then its personalised one ({layers})")
    table.add_column("hospital", no_wrap=True)
    table.add_column("model", no_wrap=True)
    for name in metric_names:
        table.add_column(name[:5], justify="right")
    personalised = summary["personalised_per_hospital"]
    for name, scores in sorted(summary["final_per_hospital"].items()):
        table.add_row(name, "global", *(_fmt(scores.get(n)) for n in metric_names))
        own = personalised.get(name)
        cells = [_fmt(own.get(n)) for n in metric_names] if own else ["-"] * len(metric_names)
        table.add_row("", "personalised" if own else "not personalised", *cells)
    return table
