"""What DP evaluation costs in metric noise: a finished simulation's release, drawn many times.

Given a simulated run's folder, this rebuilds its hospitals (the same split),
scores its final model on each hospital's held-out rows, and draws the
evaluation release each hospital would send (:mod:`shared.private_metrics`,
with the noise the run's plan calibrated) many times, each with fresh noise. It
prints, per metric, the exact value, the binned value without noise, and the
mean, standard deviation and 5th-95th percentiles of what is released: pooled
over the hospitals (the federation's metrics) and for each hospital alone.

Usage: ``python -m fedcare.simulations.evaluation_noise RUN_DIR [--draws 2000]``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

from fedcare.client.budget import privacy_plan
from fedcare.client.hospital import fresh_model
from fedcare.client.site import Site
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.evaluation import score_model
from fedcare.shared.metrics import compute_metrics
from fedcare.shared.models import model_task
from fedcare.shared.private_metrics import (
    metrics_from_sums,
    noisy_sums,
    row_statistics,
    statistics_design,
)
from fedcare.shared.serialization import ModelLayout, set_weights
from fedcare.shared.tasks import Task
from fedcare.simulations.federation import build_federation

DEVICE = torch.device("cpu")


@dataclass(frozen=True)
class HospitalRelease:
    """What one hospital's evaluation release is drawn from.

    Attributes
    ----------
    name : str
        The hospital.
    rows : np.ndarray
        Its held-out rows' statistics (:func:`shared.private_metrics.row_statistics`).
    exact : dict[str, float]
        The metrics of its held-out rows without noise or binning (never released).
    noise_multiplier : float
        The evaluation noise its plan calibrated for the run.
    """

    name: str
    rows: np.ndarray
    exact: dict[str, float]
    noise_multiplier: float


def hospital_releases(run_dir: Path) -> tuple[Task, list[HospitalRelease], dict[str, float]]:
    """Rebuild the run's hospitals and score its final model on their held-out rows.

    Returns
    -------
    tuple[Task, list[HospitalRelease], dict[str, float]]
        The task, each hospital's release material, and the exact metrics of all
        their held-out rows together.
    """
    config = RunConfig.from_flat(json.loads((run_dir / "config.json").read_text("utf-8")))
    federation = build_federation(config.data)
    task = model_task(config.training.model, federation.task)
    saved = load_file(str(run_dir / "model.safetensors"))
    releases, truths, scores = [], [], []
    for hospital in federation.hospitals:
        site = Site(hospital.name, task, hospital.site, run_dir, hospital.name)
        model = fresh_model(config, site)
        weights = [saved[name] for name in ModelLayout.of(model).names]
        set_weights(model, weights, what=f"{run_dir}: final model")
        scored = score_model(model, site.data.evaluation, task, DEVICE, known=site.data.train)
        truths.append(scored.truth)
        scores.append(scored.scores)
        releases.append(
            HospitalRelease(
                name=hospital.name,
                rows=row_statistics(task, scored.truth, scored.scores),
                exact=compute_metrics(task, scored.truth, scored.scores),
                noise_multiplier=privacy_plan(config, site).evaluation_noise_multiplier,
            )
        )
    pooled = compute_metrics(task, np.concatenate(truths), np.concatenate(scores))
    return task, releases, pooled


def release_spread(
    task: Task, hospitals: list[HospitalRelease], draws: int, rng: np.random.Generator
) -> dict[str, dict[str, list[float]]]:
    """Per scope (pooled, each hospital) and metric: binned value, then mean, sd, 5% and 95%."""
    design = statistics_design(task)
    released: dict[str, list[dict[str, float]]] = {"pooled": []}
    released |= {hospital.name: [] for hospital in hospitals}
    for _ in range(draws):
        sums = {h.name: noisy_sums(h.rows, design, h.noise_multiplier, rng) for h in hospitals}
        released["pooled"].append(metrics_from_sums(task, np.sum(list(sums.values()), axis=0)))
        for name, value in sums.items():
            released[name].append(metrics_from_sums(task, value))
    pooled = np.concatenate([hospital.rows for hospital in hospitals]).sum(axis=0)
    binned = {"pooled": metrics_from_sums(task, pooled)}
    binned |= {h.name: metrics_from_sums(task, h.rows.sum(axis=0)) for h in hospitals}
    return {
        scope: {
            metric: [binned[scope][metric], *_spread([v[metric] for v in values])]
            for metric in binned[scope]
        }
        for scope, values in released.items()
    }


def _spread(values: list[float]) -> list[float]:
    finite = np.array([v for v in values if np.isfinite(v)])
    if not len(finite):
        return [float("nan")] * 4
    low, high = np.percentile(finite, [5, 95])
    return [float(finite.mean()), float(finite.std()), float(low), float(high)]


def main() -> None:
    """Print the spread of the metrics a finished simulated run's hospitals would release."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    task, hospitals, pooled = hospital_releases(arguments.run_dir)
    spread = release_spread(task, hospitals, arguments.draws, np.random.default_rng(arguments.seed))
    exact = {"pooled": pooled} | {hospital.name: hospital.exact for hospital in hospitals}
    print(f"{'scope':12} {'metric':12} {'exact':>6} {'binned':>6} {'mean':>6} {'sd':>6} 5%-95%")
    for scope, metrics in spread.items():
        for metric, (binned, mean, sd, low, high) in metrics.items():
            truth = exact.get(scope, {}).get(metric, float("nan"))
            print(
                f"{scope:12} {metric:12} {truth:6.3f} {binned:6.3f} {mean:6.3f} {sd:6.3f} "
                f"{low:.3f}-{high:.3f}"
            )


if __name__ == "__main__":
    main()
