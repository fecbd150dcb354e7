"""Measure DP-SGD settings on a built-in scenario: which batch, learning rate and epochs learn.

Runs FedAvg in-process, as the simulation does but without Flower (SecAgg+ only
hides the sum, which it reproduces exactly up to its quantisation): each
round, every hospital runs fedcare's own DP-SGD (:func:`client.training.train_private`)
from the global model, with its noise calibrated for the whole run at the
run's epsilon, and the aggregator adds the row-weighted mean of the deltas.
Prints, per variant, the test metrics after the last round, the smallest
per-class recall (0 means a class was never predicted: the collapse to the
majority class) and each hospital's noise multiplier and noise-to-signal.

Example (one ``--variant`` per setting compared)::

    python -m fedcare.simulations.dp_defaults --scenario imaging --variant batch-size=128
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fedcare.client.training import train_private
from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.data import Examples
from fedcare.shared.evaluation import evaluate_model
from fedcare.shared.privacy import DpSgdPlan, noise_to_signal, plan_dp_sgd
from fedcare.shared.run_model import build_run_model, run_criterion, run_task
from fedcare.shared.serialization import get_weights, set_weights
from fedcare.shared.tasks import PerExampleLoss, Task
from fedcare.simulations.federation import SimulatedFederation, SimulatedHospital, build_federation
from fedcare.simulations.scenarios import scenario_overrides


def _parse_variant(text: str) -> dict[str, FlatValue]:
    pairs = (item.partition("=") for item in text.split(",") if item)
    parsed: dict[str, FlatValue] = {}
    for key, _, raw in pairs:
        try:
            parsed[key] = int(raw)
        except ValueError:
            try:
                parsed[key] = float(raw)
            except ValueError:
                parsed[key] = {"true": True, "false": False}.get(raw, raw)
    return parsed


def _test_set(config: RunConfig) -> Examples:
    test = build_federation(config.data).test
    if test is None:
        raise SystemExit(f"{config.data.dataset} has no held-out test set to score variants on")
    return test


def smallest_recall(model: torch.nn.Module, config: RunConfig) -> float:
    """Return the lowest per-class recall on the test set (classification tasks)."""
    test = _test_set(config)
    with torch.no_grad():
        outputs = model.eval()(torch.from_numpy(test.features))
    if outputs.shape[-1] == 1:
        predicted = (outputs.squeeze(-1) > 0).long().numpy()
    else:
        predicted = outputs.argmax(dim=-1).numpy()
    labels = test.labels.astype(int)
    return min(float((predicted[labels == c] == c).mean()) for c in np.unique(labels))


def _plan_per_hospital(config: RunConfig, federation: SimulatedFederation) -> list[DpSgdPlan]:
    # Each hospital's noise is calibrated for the whole run at the run's epsilon.
    training = config.training
    return [
        plan_dp_sgd(
            n_samples=len(h.site.train),
            batch_size=training.batch_size,
            local_epochs=training.local_epochs,
            rounds=config.federation.rounds,
            target_epsilon=config.privacy.target_epsilon,
            delta=config.privacy.delta,
        )
        for h in federation.hospitals
    ]


def _dp_fedavg_round(
    model: torch.nn.Module,
    fresh: Callable[[], torch.nn.Module],
    sites: list[tuple[SimulatedHospital, DpSgdPlan]],
    config: RunConfig,
    task: Task,
    criterion: PerExampleLoss,
) -> None:
    """Train every hospital privately from ``model`` and add the row-weighted mean delta."""
    training = config.training
    global_weights = get_weights(model)
    total = [np.zeros_like(w) for w in global_weights]
    rows = 0
    for hospital, plan in sites:
        local = fresh()
        set_weights(local, global_weights, what="global model")
        train_private(
            local,
            hospital.site.train,
            task,
            plan=plan,
            max_grad_norm=config.privacy.max_grad_norm,
            learning_rate=training.learning_rate,
            epochs=training.local_epochs,
            batch_size=training.batch_size,
            history=(),
            device=torch.device("cpu"),
            criterion=criterion,
        )
        n = len(hospital.site.train)
        for index, (new, old) in enumerate(zip(get_weights(local), global_weights, strict=True)):
            total[index] += (new - old) * n
        rows += n
    set_weights(
        model,
        [w + t / rows for w, t in zip(global_weights, total, strict=True)],
        what="aggregate",
    )


def run_variant(config: RunConfig) -> tuple[dict[str, float], float, list[tuple[float, float]]]:
    """Train ``config``'s federation with DP FedAvg; return metrics, min recall, noise per site."""
    federation = build_federation(config.data)
    test = _test_set(config)
    task = run_task(config.training, federation.task)

    def fresh() -> torch.nn.Module:
        return build_run_model(
            config.training,
            input_shape=test.input_shape,
            input_kind=test.kind,
            task=task,
            seed=config.data.seed,
            private=True,
            party="the study",
        ).module

    model = fresh()
    sites = list(zip(federation.hospitals, _plan_per_hospital(config, federation), strict=True))
    criterion = run_criterion(config.training, task)
    for _ in range(config.federation.rounds):
        _dp_fedavg_round(model, fresh, sites, config, task, criterion)
    metrics = evaluate_model(model, test, task, torch.device("cpu")).metrics
    noise = [
        (
            plan.noise_multiplier,
            noise_to_signal(plan.noise_multiplier, plan.sample_rate, len(h.site.train)),
        )
        for h, plan in sites
    ]
    return metrics, smallest_recall(model, config), noise


def main() -> None:
    """Run every variant of the scenario and print one row each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="imaging")
    parser.add_argument("--variant", action="append", default=[], help="key=value,key=value")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=1, help="repeat each variant over seeds")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    console = Console(width=160)
    table = Table(title=f"DP FedAvg on '{args.scenario}', {args.rounds} rounds, epsilon 3")
    for column in (
        "variant",
        "seed",
        "metrics",
        "min class recall",
        "noise multiplier / noise-to-signal",
    ):
        table.add_column(column)
    for variant in args.variant or [""]:
        for seed in range(args.seeds):
            overrides = {
                **scenario_overrides(args.scenario),
                "num-server-rounds": args.rounds,
                "device": "cpu",
                "seed": 42 + seed,
                **_parse_variant(variant),
            }
            config = RunConfig.from_flat(overrides)
            torch.manual_seed(seed)
            metrics, recall, noise = run_variant(config)
            row = (
                variant or "(scenario)",
                str(42 + seed),
                ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()),
                f"{recall:.2f}",
                ", ".join(f"{m:.2f}/{r:.3f}" for m, r in noise),
            )
            table.add_row(*row)
            console.print(" | ".join(row), markup=False)
    console.print(table)


if __name__ == "__main__":
    main()
