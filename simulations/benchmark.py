"""Benchmark: what privacy costs in time, measured, never asserted.

Prints, side by side in one run:

* per model, the time of one DP-SGD step (Opacus) over one plain SGD step on the
  default scenario's largest hospital, with the ratio;
* the default federation's mean round time with SecAgg+ and without it (DP on in
  both), in Flower's simulation engine, with the ratio.

Run ``python -m simulations.benchmark`` (or ``make benchmark``); results are kept
in ``simulations/BENCHMARKS.md`` with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from client.training import train_plain, train_private
from server.report import METRICS_JSON
from shared.config import ModelName, RunConfig
from shared.models import build_model
from shared.privacy import plan_dp_sgd
from simulations.federation import build_federation

EPOCHS_PER_TIMING = 20


def _time_per_step(train: Callable[[], int], repeats: int) -> float:
    """Median seconds per step over ``repeats`` runs, after one warm-up run."""
    train()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        steps = train()
        timings.append((time.perf_counter() - start) / steps)
    return statistics.median(timings)


def step_times(model_name: ModelName, repeats: int) -> tuple[float, float]:
    """Seconds per plain SGD step and per DP-SGD step on the largest default hospital."""
    config = RunConfig.from_flat({"model": model_name.value, "device": "cpu"})
    federation = build_federation(config.data)
    data = max((h.site.train for h in federation.hospitals), key=len)
    device = torch.device("cpu")
    training = config.training
    plan = plan_dp_sgd(
        n_samples=len(data),
        batch_size=training.batch_size,
        local_epochs=EPOCHS_PER_TIMING,
        rounds=1,
        target_epsilon=config.privacy.target_epsilon,
        delta=config.privacy.delta,
    )

    def model() -> torch.nn.Module:
        return build_model(model_name, n_features=data.features.shape[1], output_dim=1, seed=0)

    def plain() -> int:
        return train_plain(
            model(),
            data,
            federation.task,
            learning_rate=training.learning_rate,
            epochs=EPOCHS_PER_TIMING,
            batch_size=training.batch_size,
            seed=0,
            device=device,
        ).steps

    def private() -> int:
        return train_private(
            model(),
            data,
            federation.task,
            plan=plan,
            max_grad_norm=config.privacy.max_grad_norm,
            learning_rate=training.learning_rate,
            epochs=EPOCHS_PER_TIMING,
            batch_size=training.batch_size,
            history=(),
            device=device,
        ).steps

    return _time_per_step(plain, repeats), _time_per_step(private, repeats)


def round_seconds(secure_aggregation: bool, rounds: int) -> float:
    """Mean round time of the default simulated federation."""
    from simulations.simulate import simulate

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        config = RunConfig.from_flat(
            {
                "num-server-rounds": rounds,
                "secure-aggregation": secure_aggregation,
                "device": "cpu",
                "out-dir": str(out),
            }
        )
        simulate(config)
        record = json.loads((out / METRICS_JSON).read_text(encoding="utf-8"))
    return statistics.mean(r["seconds"] for r in record["rounds"] if r["seconds"] is not None)


def main() -> None:
    """Run both benchmarks and print one table each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per step measurement")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds per round-time run")
    args = parser.parse_args()
    console = Console()

    steps = Table(title=f"DP-SGD vs plain SGD, seconds per step (median of {args.repeats})")
    for column in ("model", "plain", "DP-SGD", "DP / plain"):
        steps.add_column(column, justify="right")
    for name in ModelName:
        plain, private = step_times(name, args.repeats)
        steps.add_row(
            name.value,
            f"{plain * 1e3:.3f} ms",
            f"{private * 1e3:.3f} ms",
            f"{private / plain:.2f}x",
        )
    console.print(steps)

    with_secagg = round_seconds(True, args.rounds)
    without = round_seconds(False, args.rounds)
    rounds = Table(title=f"Round time, default federation, simulation ({args.rounds} rounds each)")
    for column in ("SecAgg+", "no SecAgg+", "SecAgg+ / none", "SecAgg+ adds"):
        rounds.add_column(column, justify="right")
    rounds.add_row(
        f"{with_secagg:.2f} s",
        f"{without:.2f} s",
        f"{with_secagg / without:.2f}x",
        f"{with_secagg - without:+.2f} s",
    )
    console.print(rounds)


if __name__ == "__main__":
    main()
