"""The run report: ``summary.json``, ``metrics.json``, ``metrics.csv`` and the plot.

``summary.json`` is the contract other tools read: ``final`` (federated, and in a
simulation pooled and local-only, each a map of metric name to value),
``privacy`` (epsilon spent per hospital, delta, what is guaranteed), the resolved
``config``, and every warning and error of the run.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from fedcare.server.model_card import (
    MODEL_CARD_JSON,
    MODEL_CARD_MD,
    TestScores,
    build_model_card,
    model_card_markdown,
)
from fedcare.server.plot import plot_run
from fedcare.server.reference import DataReference
from fedcare.server.run_directory import RunDirectory
from fedcare.server.run_record import RoundRecord, RunRecord
from fedcare.shared.audit import format_head
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.keys import PERSONALISED_PREFIX, ReplyKey
from fedcare.shared.metrics import metric_names
from fedcare.shared.privacy import ACCOUNTANT, NOISE_TO_SIGNAL_WARNING, noise_to_signal
from fedcare.shared.spreadsheet import neutralise_cell

SUMMARY = "summary.json"
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"
CONFIG_JSON = "config.json"
PLOT = "report.png"
AUDIT_FILE = "audit.jsonl"

FEDERATED = "federated"
TEST_SCOPE = "test"
FEDERATED_SCOPE = "federated"

DP_GUARANTEE = (
    "sample-level (epsilon, delta)-differential privacy for each hospital's patients: "
    "per_hospital is what this run released (model updates and evaluation statistics "
    "composed; per_hospital_training and per_hospital_evaluation each alone), "
    "per_hospital_dataset what the hospital's ledger composes over every run on that "
    "dataset (DP-SGD and Gaussian evaluation releases, Opacus RDP accountant)"
)
SECAGG_GUARANTEE = (
    "the aggregator sees only the sum of at least min-participants hospitals' updates, "
    "never one hospital's update; it does see each hospital's training row count and its "
    "DP evaluation metrics"
)


def final_metrics(record: RunRecord) -> tuple[dict[str, float], str]:
    """Return the latest global-model metrics and where they come from.

    Prefers the held-out test set; falls back to the hospitals' row-weighted
    local evaluation when the aggregator has no test set.
    """
    for source, scope in ((TEST_SCOPE, "test_metrics"), (FEDERATED_SCOPE, "federated_metrics")):
        for round_record in reversed(record.rounds):
            metrics = getattr(round_record, scope)
            if metrics:
                return dict(metrics), source
    return {}, "none"


def build_summary(
    *,
    config: RunConfig,
    record: RunRecord,
    reference: DataReference,
    status: str,
    audit_head: tuple[int, str],
    model: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble ``summary.json``."""
    federated, source = final_metrics(record)
    noise = noise_by_hospital(record)
    aggregated = [r.round for r in record.rounds if r.aggregated]
    failures = [f"round {r.round}: {line}" for r in record.rounds for line in r.failures]
    return {
        "status": status,
        "task": {
            "kind": reference.task.kind.value,
            "positive_label": reference.task.positive_label,
        },
        "final": {FEDERATED: federated, **reference.baselines},
        "final_source": source,
        "final_per_hospital": hospital_finals(record),
        "personalised_per_hospital": hospital_finals(record, personalised=True),
        "rounds": {"planned": config.federation.rounds, "aggregated": aggregated},
        "privacy": {
            "differential_privacy": config.privacy.enabled,
            "per_hospital": record.latest_epsilons(),
            "per_hospital_training": record.latest_epsilons(ReplyKey.TRAINING_EPSILON),
            "per_hospital_evaluation": record.latest_epsilons(ReplyKey.EVALUATION_EPSILON),
            "per_hospital_dataset": record.latest_epsilons(ReplyKey.DATASET_EPSILON),
            "noise_multiplier_per_hospital": record.latest_epsilons(ReplyKey.NOISE_MULTIPLIER),
            "noise_to_signal_per_hospital": noise,
            "target_epsilon": config.privacy.target_epsilon,
            "evaluation_share": config.privacy.evaluation_share,
            "evaluation_rounds": sorted(config.evaluation_round_numbers()),
            "delta": config.privacy.delta,
            "accountant": ACCOUNTANT,
            "guarantee": DP_GUARANTEE if config.privacy.enabled else "none: DP was turned off",
        },
        "secure_aggregation": {
            "enabled": config.secure_aggregation.enabled,
            "protocol": "SecAgg+ (Flower)" if config.secure_aggregation.enabled else "none",
            "guarantee": SECAGG_GUARANTEE if config.secure_aggregation.enabled else "none",
        },
        "model": dict(model or {}),
        "audit": {"log": AUDIT_FILE, "head": format_head(audit_head)},
        "warnings": [*config.weakened_protections(), *failures, *_noise_warnings(noise)],
        "errors": list(record.errors),
        "config": config.to_flat(),
    }


def hospital_finals(
    record: RunRecord, *, personalised: bool = False
) -> dict[str, dict[str, float]]:
    """Each hospital's last local metrics: of the global model, or of its personalised one.

    A hospital that personalised (``personalise-layers``) reports both in its
    last evaluation; the personalised ones (``personalised-auroc``, ...) are
    returned here under the plain metric names. Hospitals that did not
    personalise (or refused) are absent from the personalised map.
    """
    finals = {}
    for name, metrics in record.latest_evaluations().items():
        chosen = {
            key.removeprefix(PERSONALISED_PREFIX) if personalised else key: value
            for key, value in metrics.items()
            if key.startswith(PERSONALISED_PREFIX) == personalised
        }
        if chosen:
            finals[name] = chosen
    return finals


def noise_by_hospital(record: RunRecord) -> dict[str, float]:
    """Each hospital's DP-SGD noise-to-signal, from what it reported when it last trained.

    Computed from its noise multiplier, sampling rate and training rows (all
    already in its reply): :func:`shared.privacy.noise_to_signal`.
    """
    ratios = {}
    for round_record in record.rounds:
        for name, hospital in round_record.hospitals.items():
            noise = hospital.train.get(ReplyKey.NOISE_MULTIPLIER)
            rate = hospital.train.get(ReplyKey.SAMPLE_RATE)
            if noise is not None and rate is not None and hospital.num_train_examples:
                ratios[name] = noise_to_signal(noise, rate, hospital.num_train_examples)
    return ratios


def _noise_warnings(ratios: Mapping[str, float]) -> list[str]:
    return [
        f"{name}: DP-SGD noise-to-signal {ratio:.3f} is above {NOISE_TO_SIGNAL_WARNING:g}: "
        "its noise may swamp what it learns; a larger batch-size, fewer rounds or local "
        "epochs, or a larger epsilon lower it"
        for name, ratio in sorted(ratios.items())
        if ratio > NOISE_TO_SIGNAL_WARNING
    ]


def metrics_rows(record: RunRecord, metric_columns: list[str]) -> list[dict[str, Any]]:
    """Flatten the record into one row per (round, scope): test, federated, each hospital."""
    rows: list[dict[str, Any]] = []
    for round_record in record.rounds:
        rows.extend(_round_rows(round_record, metric_columns))
    return rows


def _round_rows(record: RoundRecord, metric_columns: list[str]) -> list[dict[str, Any]]:
    def row(scope: str, metrics: Mapping[str, float], **extra: Any) -> dict[str, Any]:
        return {
            "round": record.round,
            "scope": scope,
            **{name: metrics.get(name) for name in metric_columns},
            **extra,
        }

    rows = []
    if record.test_metrics:
        rows.append(row(TEST_SCOPE, record.test_metrics))
    if record.federated_metrics:
        rows.append(row(FEDERATED_SCOPE, record.federated_metrics))
    for name, hospital in sorted(record.hospitals.items()):
        rows.append(
            row(
                name,
                hospital.evaluation,
                num_train_examples=hospital.num_train_examples,
                num_eval_examples=hospital.num_eval_examples,
                train_loss=hospital.train.get(ReplyKey.TRAIN_LOSS),
                epsilon=hospital.privacy.get(ReplyKey.EPSILON),
                training_epsilon=hospital.privacy.get(ReplyKey.TRAINING_EPSILON),
                evaluation_epsilon=hospital.privacy.get(ReplyKey.EVALUATION_EPSILON),
                dataset_epsilon=hospital.privacy.get(ReplyKey.DATASET_EPSILON),
            )
        )
    return rows


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({key: neutralise_cell(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def write_report(
    run_dir: RunDirectory,
    *,
    config: RunConfig,
    record: RunRecord,
    reference: DataReference,
    status: str,
    audit_head: tuple[int, str],
    test: TestScores | None = None,
    model: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write every report file into ``run_dir`` and return the summary.

    ``audit_head`` (the aggregator's audit log head) goes into the summary so a
    later ``audit verify --head`` detects entries removed from the log's end.
    ``test`` (a simulation's held-out test set, scored by the final model) gives
    the model card its confidence intervals and calibration.
    """
    metric_columns = [str(name) for name in metric_names(reference.task)]
    columns = [
        "round",
        "scope",
        *metric_columns,
        "num_train_examples",
        "num_eval_examples",
        "train_loss",
        "epsilon",
        "training_epsilon",
        "evaluation_epsilon",
        "dataset_epsilon",
    ]
    summary = build_summary(
        config=config,
        record=record,
        reference=reference,
        status=status,
        audit_head=audit_head,
        model=model,
    )
    run_dir.write_json(METRICS_JSON, record.to_dict())
    run_dir.write_text(METRICS_CSV, _csv(metrics_rows(record, metric_columns), columns))
    plot_run(
        run_dir.path / PLOT,
        record=record,
        headline=metric_columns[0],
        baselines=reference.baselines,
        target_epsilon=config.privacy.target_epsilon if config.privacy.enabled else None,
    )
    run_dir.write_json(SUMMARY, summary)
    card = build_model_card(
        config=config, record=record, reference=reference, summary=summary, test=test
    )
    run_dir.write_json(MODEL_CARD_JSON, card)
    run_dir.write_text(MODEL_CARD_MD, model_card_markdown(card))
    return summary
