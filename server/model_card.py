"""The model card of a run: ``model_card.json`` and ``model_card.md``, built from the run record.

The card follows the items of the TRIPOD+AI statement (Collins et al., BMJ
2024) that a federation can fill in from what its aggregator knows, and names
them in :data:`TRIPOD_AI_ITEMS`. It is built from the run's record and
settings only: the aggregator holds no patient data, so in a deployment its
metrics are the hospitals' own evaluations, and confidence intervals come from
``fedcare evaluate`` at each hospital. In a simulation the aggregator holds a
held-out test set, and the card gives 95% bootstrap intervals and the
calibration on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.server.reference import DataReference
from fedcare.server.run_record import RunRecord
from fedcare.shared.calibration import calibration
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.contract import DataContract
from fedcare.shared.tasks import Task, TaskKind
from fedcare.shared.validation_metrics import metric_intervals

MODEL_CARD_JSON = "model_card.json"
MODEL_CARD_MD = "model_card.md"
CARD_RESAMPLES = 200
"""Bootstrap resamples of the card's test-set intervals: enough for a simulation's card, cheap
enough for every simulation (``fedcare evaluate`` at a hospital takes 1000 by default)."""

TRIPOD_AI_ITEMS = {
    "title": "Title: the model, its outcome and the federation",
    "intended_use": "Objectives; Target population and intended users; Model output",
    "data": "Data sources; Setting (the hospitals and their row counts); Sample size; "
    "Outcome; Predictors",
    "missing_data": "Missing data",
    "training": "Analytical methods; Training versus evaluation",
    "privacy": "Data sharing: what left each hospital, and under which guarantee",
    "performance": "Model performance, with confidence intervals",
    "calibration": "Model performance: calibration",
    "fairness": "Fairness and health inequalities: subgroup metrics, measured at each hospital "
    "with `fedcare evaluate --subgroup`",
    "limits": "Limitations; Usability of the model in context",
}
"""The TRIPOD+AI items the card answers, by card section."""

TEST_SET_SOURCE = "held-out test set (simulation)"
INTERVAL_TASKS = frozenset({TaskKind.BINARY, TaskKind.MULTICLASS, TaskKind.REGRESSION})


@dataclass(frozen=True)
class TestScores:
    """The final model's scores on the aggregator's held-out test set (simulation only)."""

    labels: np.ndarray
    scores: np.ndarray


def build_model_card(
    *,
    config: RunConfig,
    record: RunRecord,
    reference: DataReference,
    summary: dict[str, Any],
    test: TestScores | None = None,
) -> dict[str, Any]:
    """Assemble the model card (see the module docstring)."""
    contract = (
        DataContract.parse(config.data.contract, source="the run's contract")
        if config.data.contract
        else None
    )
    task = reference.task
    return {
        "tripod_ai": TRIPOD_AI_ITEMS,
        "title": _title(config, contract, task.kind),
        "intended_use": _intended_use(contract, task.kind, task.positive_label),
        "data": _data(config, record, reference, contract),
        "training": _training(config, summary),
        "privacy": {
            "differential_privacy": summary["privacy"],
            "secure_aggregation": summary["secure_aggregation"],
        },
        "performance": _performance(summary, task, test),
        "calibration": _calibration(summary, reference, test),
        "limits": _limits(config, summary, contract),
        "warnings": list(summary.get("warnings", [])),
    }


def _title(config: RunConfig, contract: DataContract | None, kind: TaskKind) -> str:
    what = contract.name if contract else f"{config.data.dataset} (simulated federation)"
    return f"{config.training.model} model for {what}: {kind} prediction"


def _intended_use(contract: DataContract | None, kind: TaskKind, positive: str) -> str:
    if contract is not None and kind in (TaskKind.BINARY, TaskKind.MULTICLASS):
        outcome = f"'{contract.label or 'class'}' ({', '.join(contract.classes)})"
    elif contract is not None and kind is TaskKind.REGRESSION:
        outcome = f"the value of '{contract.label}'"
    else:
        outcome = f"the {kind} outcome of the simulated data ({positive})"
    return (
        f"Decision support that predicts {outcome} for patients like those of the hospitals "
        "that trained it, from the inputs the data contract lists. Not for use at a hospital "
        "before it has validated the model on its own patients (`fedcare evaluate`), and never "
        "as the sole basis of a clinical decision."
    )


def _data(
    config: RunConfig, record: RunRecord, reference: DataReference, contract: DataContract | None
) -> dict[str, Any]:
    hospitals: dict[str, dict[str, int | None]] = {}
    for round_record in record.rounds:
        for name, hospital in round_record.hospitals.items():
            if hospital.num_train_examples is not None:
                hospitals[name] = {
                    "training_rows": hospital.num_train_examples,
                    "evaluation_rows": hospital.num_eval_examples,
                }
    data: dict[str, Any] = {
        "hospitals": hospitals,
        "input": reference.input_kind.value,
        "features": list(reference.feature_names),
    }
    if contract is None:
        data |= {"source": f"built-in dataset '{config.data.dataset}', split by the simulation"}
        data |= {"missing_data": "none in the built-in data"}
        return data
    data |= {
        "source": "each hospital's own file, checked against the data contract",
        "contract": {
            "name": contract.name,
            "format": contract.format.value,
            "label": contract.label or "(class folders or label arrays)",
            "classes": list(contract.classes),
            "positive_class": contract.positive_class,
            "id_columns_never_features": list(contract.id_columns),
            "fingerprint": contract.fingerprint(),
        },
        "missing_data": f"contract policy '{contract.missing}'",
    }
    return data


def _training(config: RunConfig, summary: dict[str, Any]) -> dict[str, Any]:
    training = config.training
    return {
        "model": training.model,
        "rounds_planned": config.federation.rounds,
        "rounds_aggregated": summary["rounds"]["aggregated"],
        "aggregation": config.federation.aggregation.value,
        "server_optimizer": config.server_optimizer.optimizer.value,
        "proximal_mu": training.proximal_mu,
        # Each hospital's personalised model stays with it; this card describes the global one.
        "personalised_at_hospitals": training.personalise_layers.value,
        "local_epochs": training.local_epochs,
        "batch_size": training.batch_size,
        "learning_rate": training.learning_rate,
        "dp_sgd_max_grad_norm": config.privacy.max_grad_norm,
        "standardisation": "each hospital standardises inputs with its own training statistics",
        "status": summary["status"],
    }


def _performance(summary: dict[str, Any], task: Task, test: TestScores | None) -> dict[str, Any]:
    performance: dict[str, Any] = {
        "final": summary["final"],
        "source": summary["final_source"],
    }
    if test is not None and task.kind in INTERVAL_TASKS:
        intervals = metric_intervals(task, test.labels, test.scores, resamples=CARD_RESAMPLES)
        performance["intervals_95"] = {
            "source": TEST_SET_SOURCE,
            "resamples": CARD_RESAMPLES,
            "threshold": 0.5 if task.kind is TaskKind.BINARY else None,
            "metrics": {name: interval.to_dict() for name, interval in intervals.items()},
        }
    else:
        performance["intervals_95"] = (
            "the aggregator holds no patients: run `fedcare evaluate` at each hospital for "
            "metrics with 95% bootstrap intervals on its own patients"
        )
    return performance


def _calibration(
    summary: dict[str, Any], reference: DataReference, test: TestScores | None
) -> dict[str, Any]:
    brier = summary["final"].get("federated", {}).get("brier")
    found: dict[str, Any] = {"brier": brier}
    curve = calibration(reference.task, test.labels, test.scores) if test is not None else None
    if curve is not None:
        found |= {"source": TEST_SET_SOURCE, "ece": curve.ece, "curve": curve.__dict__}
    else:
        found["curve"] = "run `fedcare evaluate` at a hospital for its calibration curve and ECE"
    return found


def _limits(config: RunConfig, summary: dict[str, Any], contract: DataContract | None) -> list[str]:
    limits = [
        "Trained with DP-SGD: the noise that protects patients costs accuracy, most for "
        "small hospitals and rare classes.",
        "Each hospital standardised its inputs with its own statistics; a new site must score "
        "with its own statistics (`--reference`), and sites with very different case mixes "
        "shift the inputs the model sees.",
        "Performance at a new hospital is unknown until it is validated there "
        "(`fedcare evaluate`), including calibration and the operating threshold.",
        "Subgroup performance (fairness) was not measured centrally: no patient leaves a "
        "hospital; use `fedcare evaluate --subgroup` locally.",
    ]
    if contract is None:
        limits.append(
            "Trained in a simulation on a built-in dataset split among virtual hospitals; not "
            "evidence about real hospitals."
        )
    if not config.privacy.enabled or not config.secure_aggregation.enabled:
        limits.append("A protection was turned off for this run (see privacy).")
    return limits


def model_card_markdown(card: dict[str, Any]) -> str:
    """Render the card as Markdown, one section per TRIPOD+AI item group."""
    lines = [f"# Model card: {card['title']}", ""]
    lines += ["Structured after TRIPOD+AI (Collins et al., BMJ 2024); items answered:", ""]
    lines += [f"- **{section}**: {items}" for section, items in card["tripod_ai"].items()]
    lines += ["", "## Intended use", "", card["intended_use"], "", "## Data", ""]
    data = card["data"]
    lines += [f"- Source: {data['source']}", f"- Input: {data['input']}"]
    lines += [f"- Features ({len(data['features'])}): {', '.join(data['features'])}"]
    lines += [f"- Missing data: {data['missing_data']}"]
    if "contract" in data:
        contract = data["contract"]
        lines += [
            f"- Contract: {contract['name']} ({contract['format']}), label {contract['label']}, "
            f"classes {', '.join(contract['classes'])}, fingerprint {contract['fingerprint'][:16]}"
        ]
    lines += ["", "| hospital | training rows | evaluation rows |", "|---|---:|---:|"]
    lines += [
        f"| {markdown_text(name)} | {rows['training_rows']} | {rows['evaluation_rows']} |"
        for name, rows in sorted(data["hospitals"].items())
    ]
    lines += ["", "## Training", ""]
    lines += [f"- {key.replace('_', ' ')}: {value}" for key, value in card["training"].items()]
    lines += _privacy_lines(card["privacy"])
    lines += _performance_lines(card["performance"])
    lines += _calibration_lines(card["calibration"])
    lines += ["", "## Known limits", ""] + [f"- {limit}" for limit in card["limits"]]
    # A warning may quote a hospital's own words (its refusal): text, never markup.
    lines += [f"- Warning from the run: {markdown_text(warning)}" for warning in card["warnings"]]
    return "\n".join(lines) + "\n"


def markdown_text(text: str) -> str:
    """Return ``text`` as literal Markdown text: no markup, HTML, link or new block in it.

    Hospitals' names and refusals reach the card from outside the aggregator; a
    hostile hospital must not put an image that calls home, a link, a heading or a
    table row into a document people read and trust.
    """
    # One line: no new block or table row. What follows a fixed prefix can't start a
    # block, so only the inline markup characters (and a table's bar) are escaped.
    flat = " ".join(text.split())
    return re.sub(r"([\\`*_{}\[\]()<>!|~&])", r"\\\1", flat)


def _privacy_lines(privacy: dict[str, Any]) -> list[str]:
    dp, secagg = privacy["differential_privacy"], privacy["secure_aggregation"]
    lines = ["", "## Privacy", ""]
    lines += [f"- Differential privacy: {dp['guarantee']}"]
    lines += [f"- Delta: {dp['delta']}; accountant: {dp['accountant']}"]
    lines += [
        f"- Epsilon spent in this run, {name}: {eps:.3f}"
        for name, eps in sorted(dp["per_hospital"].items())
    ]
    lines += [f"- Secure aggregation: {secagg['protocol']}: {secagg['guarantee']}"]
    return lines


def _performance_lines(performance: dict[str, Any]) -> list[str]:
    lines = ["", "## Performance", "", f"Final metrics ({performance['source']}):", ""]
    for model, metrics in performance["final"].items():
        shown = ", ".join(f"{name} {_format(value)}" for name, value in metrics.items())
        lines.append(f"- {model}: {shown}")
    intervals = performance["intervals_95"]
    lines.append("")
    if isinstance(intervals, str):
        return [*lines, f"95% intervals: {intervals}."]
    lines += [f"95% bootstrap intervals on the {intervals['source']}:", ""]
    lines += ["| metric | value | 95% interval |", "|---|---:|---:|"]
    for name, interval in intervals["metrics"].items():
        lines.append(
            f"| {name} | {_format(interval['value'])} | "
            f"{_format(interval['low'])} to {_format(interval['high'])} |"
        )
    return lines


def _calibration_lines(found: dict[str, Any]) -> list[str]:
    lines = ["", "## Calibration", "", f"- Brier score: {_format(found['brier'])}"]
    if "ece" in found:
        lines.append(f"- Expected calibration error ({found['source']}): {found['ece']:.3f}")
    else:
        lines.append(f"- Calibration curve: {found['curve']}")
    return lines


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if np.isfinite(value) else "n/a"
    return "n/a" if value is None else str(value)
