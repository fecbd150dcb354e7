"""Benchmark: what privacy and scale cost in time and memory, measured, never asserted.

``make benchmark`` runs every section, each printing its tables:

* steps: per model, the time of one DP-SGD step (Opacus) over one plain SGD step
  on the default scenario's largest hospital, with the ratio; and the default
  federation's mean round time with SecAgg+ and without it (DP on in both), in
  Flower's simulation engine, with the ratio;
* scale: a simulated federation of 3, 10, 100 and 1,000 hospitals, each in a
  process of its own: start-up, time per round, peak memory of the whole process
  tree (:mod:`simulations.scale_benchmark`; ``--sizes 3,10`` limits it);
* families: DP-SGD's cost per model family and Opacus grad-sample mode
  (:mod:`simulations.dp_mode_benchmark`).

``--sections steps,scale`` picks sections (``--families`` alone is the families
section, as before); results are kept in ``simulations/BENCHMARKS.md`` with the
command that produced them.
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

from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import DeviceName, ModelName
from fedcare.shared.data import InputKind
from fedcare.shared.device import resolve_device
from fedcare.shared.models import MODELS, build_model, model_task
from fedcare.shared.privacy import DpSgdPlan, plan_dp_sgd
from fedcare.simulations.dp_mode_tables import print_family_section
from fedcare.simulations.scale_benchmark import CASES, parse_sizes, print_scale_section

EPOCHS_PER_TIMING = 20

SECTIONS = ("steps", "scale", "families")


def _time_per_step(train: Callable[[], int], repeats: int) -> float:
    """Median seconds per step over ``repeats`` runs, after one warm-up run."""
    train()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        steps = train()
        timings.append((time.perf_counter() - start) / steps)
    return statistics.median(timings)


def _timing_plan(config: RunConfig, n_samples: int) -> DpSgdPlan:
    # The default privacy settings, calibrated for one round of the timed epochs.
    return plan_dp_sgd(
        n_samples=n_samples,
        batch_size=config.training.batch_size,
        local_epochs=EPOCHS_PER_TIMING,
        rounds=1,
        target_epsilon=config.privacy.target_epsilon,
        delta=config.privacy.delta,
    )


def step_times(model_name: ModelName, repeats: int) -> tuple[float, float]:
    """Seconds per plain SGD step and per DP-SGD step on the largest default hospital."""
    from fedcare.client.training import train_plain, train_private
    from fedcare.simulations.federation import build_federation

    config = RunConfig.from_flat({"model": model_name.value, "device": "cpu"})
    federation = build_federation(config.data)
    data = max((h.site.train for h in federation.hospitals), key=len)
    task = model_task(model_name, federation.task)
    device = torch.device("cpu")
    training = config.training
    plan = _timing_plan(config, len(data))

    def model() -> torch.nn.Module:
        return build_model(
            model_name, input_shape=data.input_shape, input_kind=data.kind, task=task, seed=0
        )

    def plain() -> int:
        return train_plain(
            model(),
            data,
            task,
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
            task,
            plan=plan,
            max_grad_norm=config.privacy.max_grad_norm,
            learning_rate=training.learning_rate,
            epochs=EPOCHS_PER_TIMING,
            batch_size=training.batch_size,
            history=(),
            device=device,
            grad_sample_mode=MODELS[model_name].grad_sample_mode,
        ).steps

    return _time_per_step(plain, repeats), _time_per_step(private, repeats)


def round_seconds(secure_aggregation: bool, rounds: int) -> float:
    """Mean time of the default simulated federation's rounds after the first.

    The first round also starts the virtual hospitals' workers (the scale section
    reports it on its own).
    """
    from fedcare.server.report import METRICS_JSON
    from fedcare.simulations.simulate import simulate

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
    later = [r["seconds"] for r in record["rounds"] if r["round"] > 1 and r["seconds"] is not None]
    return float(statistics.mean(later))


def print_step_and_round_sections(console: Console, *, repeats: int, rounds: int) -> None:
    """Measure and print the default scenario's DP/plain step and SecAgg+ round times."""
    default_kind = InputKind.TABLE
    steps = Table(title=f"DP-SGD vs plain SGD, seconds per step (median of {repeats})")
    for column in ("model", "plain", "DP-SGD", "DP / plain"):
        steps.add_column(column, justify="right")
    for name, spec in MODELS.items():
        if default_kind not in spec.inputs:
            continue
        plain, private = step_times(name, repeats)
        steps.add_row(
            name.value,
            f"{plain * 1e3:.3f} ms",
            f"{private * 1e3:.3f} ms",
            f"{private / plain:.2f}x",
        )
    console.print(steps)

    with_secagg = round_seconds(True, rounds)
    without = round_seconds(False, rounds)
    table = Table(
        title=f"Round time after the first, default federation, simulation ({rounds} rounds each)"
    )
    for column in ("SecAgg+", "no SecAgg+", "SecAgg+ / none", "SecAgg+ adds"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{with_secagg:.2f} s",
        f"{without:.2f} s",
        f"{with_secagg / without:.2f}x",
        f"{with_secagg - without:+.2f} s",
    )
    console.print(table)


def _sections(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown section {unknown}; choose among {SECTIONS}")
    return chosen


def main() -> None:
    """Run the benchmarks and print one table each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", type=_sections, default=list(SECTIONS), help="comma-separated sections"
    )
    parser.add_argument(
        "--families", action="store_true", help="run only the per-model-family section"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per step measurement")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds per round-time run")
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(CASES),
        help="hospital counts of the scale section, e.g. 3,10,100 (default: 3,10,100,1000)",
    )
    parser.add_argument("--markdown", action="store_true", help="scale table in Markdown")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per family config")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per family config")
    parser.add_argument(
        "--device",
        choices=[d.value for d in DeviceName],
        default=DeviceName.AUTO.value,
        help="where the family section trains (auto: CUDA when present)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per family config (one: steps stay comparable on a shared machine)",
    )
    args = parser.parse_args()
    sections = ["families"] if args.families else args.sections
    # Wide enough for the family and scale tables even when the output is not a terminal.
    console = Console(width=max(Console().width, 160))
    if "steps" in sections:
        print_step_and_round_sections(console, repeats=args.repeats, rounds=args.rounds)
    if "scale" in sections:
        print_scale_section(console, args.sizes, markdown=args.markdown)
    if "families" in sections:
        print_family_section(
            console,
            warmup=args.warmup,
            steps=args.steps,
            device=resolve_device(DeviceName(args.device)),
            threads=args.threads,
        )


if __name__ == "__main__":
    main()
