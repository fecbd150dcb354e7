"""Benchmark: what privacy costs in time and memory, measured, never asserted.

Prints, side by side in one run:

* per model, the time of one DP-SGD step (Opacus) over one plain SGD step on the
  default scenario's largest hospital, with the ratio;
* the default federation's mean round time with SecAgg+ and without it (DP on in
  both), in Flower's simulation engine, with the ratio;
* per model family (a built-in dataset and a model that reads it), the time of one
  plain SGD step and of one DP-SGD step in each of Opacus' grad-sample modes
  (``hooks``, ``functorch``, ``ew``, ``ghost``), each mode checked against per-example
  clipped gradients, and the peak memory of plain and private training, each
  configuration in a fresh process so that peaks do not mix.

Run ``python -m simulations.benchmark`` (or ``make benchmark``), or only the family
section with ``python -m simulations.benchmark --families``; results are kept in
``simulations/BENCHMARKS.md`` with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from shared.config import DatasetName, DeviceName, ModelName, RunConfig
from shared.data import InputKind, Standardizer
from shared.device import resolve_device
from shared.models import MODELS, build_model, model_task
from shared.privacy import plan_dp_sgd
from shared.tasks import Task

EPOCHS_PER_TIMING = 20

FAMILY_PAIRS: tuple[tuple[DatasetName, ModelName], ...] = (
    (DatasetName.BREAST_CANCER, ModelName.LOGREG),
    (DatasetName.BREAST_CANCER, ModelName.MLP),
    (DatasetName.DIABETES, ModelName.MLP),
    (DatasetName.LUNG_SURVIVAL, ModelName.LOGREG),
    (DatasetName.SYNTHETIC_IMAGES, ModelName.CNN),
    (DatasetName.SYNTHETIC_IMAGES, ModelName.RESNET),
    (DatasetName.SYNTHETIC_IMAGES, ModelName.AUTOENCODER),
    (DatasetName.SYNTHETIC_VITALS, ModelName.GRU),
    (DatasetName.SYNTHETIC_VITALS, ModelName.LSTM),
    (DatasetName.SYNTHETIC_VITALS, ModelName.TRANSFORMER),
)
"""(dataset, model) pairs of the family section, one per family the registry serves."""

GRAD_SAMPLE_MODES = ("hooks", "functorch", "ew", "ghost")
"""Opacus' per-sample-gradient engines compared; ``ghost`` trains through the
criterion ``make_private`` returns, the others through plain ``optimizer.step()``."""

PLAIN_STEP_MODES = frozenset({"hooks", "functorch", "ew"})
"""Modes fedcare's training loop (``client/training.py``) can use unchanged."""

FAMILY_BATCH_SIZE = 32
FAMILY_LEARNING_RATE = 0.05
FAMILY_NOISE_MULTIPLIER = 1.0
FAMILY_MAX_GRAD_NORM = 1.0
CHECK_TOLERANCE = 1e-3
"""Largest relative error of a mode's clipped update against per-example clipping."""

MIN_SPEEDUP = 0.10
"""How much faster than ``hooks`` a mode must be before it is recommended."""

_MIB = 2**20


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
    from client.training import train_plain, train_private
    from simulations.federation import build_federation

    config = RunConfig.from_flat({"model": model_name.value, "device": "cpu"})
    federation = build_federation(config.data)
    data = max((h.site.train for h in federation.hospitals), key=len)
    task = model_task(model_name, federation.task)
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
        ).steps

    return _time_per_step(plain, repeats), _time_per_step(private, repeats)


def round_seconds(secure_aggregation: bool, rounds: int) -> float:
    """Mean round time of the default simulated federation."""
    from server.report import METRICS_JSON
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


@dataclass(frozen=True)
class FamilyJob:
    """One configuration of the family section, measured in a process of its own.

    Attributes
    ----------
    model : ModelName
        Registry name.
    task : Task
        The task the model learns (reconstruction for an autoencoder).
    input_kind : InputKind
        What one input is.
    features, targets : np.ndarray
        ``(batches, batch_size, ...)``: the warm-up batches, then the timed ones;
        the same for every configuration of a pair.
    mode : str | None
        Opacus grad-sample mode, or ``None`` for plain SGD.
    warmup : int
        Untimed steps first (the leading batches).
    device : str
        ``cpu`` or ``cuda``.
    """

    model: ModelName
    task: Task
    input_kind: InputKind
    features: np.ndarray
    targets: np.ndarray
    mode: str | None
    warmup: int
    device: str


@dataclass(frozen=True)
class Measurement:
    """What one configuration measured.

    Attributes
    ----------
    params : int
        Trainable parameters of the model.
    ms_per_step : float | None
        Median milliseconds per optimiser step; ``None`` if it failed.
    peak_mib : float | None
        Peak memory added by training (MiB): the process' peak RSS on the CPU, the
        peak allocated GPU memory on CUDA, over what the model and data held before
        the first step.
    failure : str | None
        Why the mode cannot be used: the exception's type (``detail`` has its
        message), ``wrong-grads`` when its clipped update differs from per-example
        clipping, or ``empty-batch:<type>`` when an empty Poisson batch breaks it.
    detail : str
        The failure's message, shortened; empty when it works.
    """

    params: int
    ms_per_step: float | None
    peak_mib: float | None
    failure: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class FamilyResult:
    """Plain SGD and every grad-sample mode measured on one (dataset, model) pair."""

    dataset: DatasetName
    model: ModelName
    family: str
    plain: Measurement
    modes: dict[str, Measurement]

    def working(self, modes: frozenset[str] = frozenset(GRAD_SAMPLE_MODES)) -> dict[str, float]:
        """Milliseconds per step of the modes among ``modes`` that work."""
        return {
            mode: m.ms_per_step
            for mode, m in self.modes.items()
            if mode in modes and m.failure is None and m.ms_per_step is not None
        }

    @property
    def best_mode(self) -> str | None:
        """The fastest working mode, or ``None`` if none works."""
        working = self.working()
        return min(working, key=working.__getitem__) if working else None

    @property
    def recommended_mode(self) -> str:
        """The registry's mode: ``hooks``, unless a mode that works with fedcare's
        unchanged training loop (plain ``optimizer.step()``) is at least
        :data:`MIN_SPEEDUP` faster and passes the gradient and empty-batch checks.
        """
        working = self.working(PLAIN_STEP_MODES)
        if "hooks" not in working:
            return min(working, key=working.__getitem__) if working else "hooks"
        fastest = min(working, key=working.__getitem__)
        return fastest if working[fastest] <= (1 - MIN_SPEEDUP) * working["hooks"] else "hooks"


def _peak_rss_mib() -> float:
    """This process' peak resident set size so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / _MIB if sys.platform == "darwin" else peak / 1024


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(
    model: nn.Module, job: FamilyJob, *, noise_multiplier: float, learning_rate: float
) -> tuple[nn.Module, Callable[[torch.Tensor, torch.Tensor], None]]:
    """Wrap ``model`` for ``job.mode`` (or leave it plain); return it and one SGD step."""
    from opacus import PrivacyEngine

    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    criterion = job.task.loss_fn()
    if job.mode is not None:
        # make_private needs a loader to derive the sampling rate; steps below draw
        # their own fixed batches, so every configuration sees the same examples.
        flat_x = torch.from_numpy(job.features.reshape(-1, *job.features.shape[2:]))
        flat_y = torch.as_tensor(job.targets.reshape(-1, *job.targets.shape[2:]))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(flat_x, flat_y), batch_size=FAMILY_BATCH_SIZE
        )
        made = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            criterion=criterion,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=FAMILY_MAX_GRAD_NORM,
            poisson_sampling=True,
            grad_sample_mode=job.mode,
        )
        if job.mode == "ghost":
            # Ghost clipping runs its two backward passes inside the loss it returns.
            model, optimizer, criterion, _ = made
        else:
            model, optimizer, _ = made

    def step(features: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss = criterion(model(features), targets)
        loss.backward()
        optimizer.step()

    return model, step


def _fresh_model(job: FamilyJob, device: torch.device) -> nn.Module:
    model = build_model(
        job.model,
        input_shape=tuple(job.features.shape[2:]),
        input_kind=job.input_kind,
        task=job.task,
        seed=0,
    )
    return model.to(device).train()


def _tensors(job: FamilyJob, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.from_numpy(job.features).to(device)
    targets = torch.as_tensor(job.targets, dtype=job.task.label_dtype).to(device)
    return features, targets


def _time_and_peak(job: FamilyJob, device: torch.device) -> tuple[int, float, float]:
    """Trainable parameters, median ms per timed step, and peak MiB added by training."""
    model = _fresh_model(job, device)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    features, targets = _tensors(job, device)
    _, step = _trainer(
        model,
        job,
        noise_multiplier=FAMILY_NOISE_MULTIPLIER,
        learning_rate=FAMILY_LEARNING_RATE,
    )
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device) / _MIB
    else:
        baseline = _peak_rss_mib()
    timings = []
    for batch in range(len(features)):
        start = time.perf_counter()
        step(features[batch], targets[batch])
        _synchronize(device)
        if batch >= job.warmup:
            timings.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / _MIB
    else:
        peak = _peak_rss_mib()
    return params, statistics.median(timings) * 1e3, peak - baseline


def _flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])


def _reference_update(
    model: nn.Module, task: Task, features: torch.Tensor, targets: torch.Tensor, batch: int
) -> torch.Tensor:
    """DP-SGD's noiseless step of learning rate 1, one example at a time, as Opacus clips."""
    loss_fn = task.loss_fn()
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.zeros_like(_flat_parameters(model))
    for row in range(len(features)):
        model.zero_grad()
        loss_fn(model(features[row : row + 1]), targets[row : row + 1]).backward()
        grad = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
        )
        factor = (FAMILY_MAX_GRAD_NORM / (grad.norm() + 1e-6)).clamp(max=1.0)
        total += factor * grad
    return -total / batch


def _check(job: FamilyJob, device: torch.device) -> tuple[str, str] | None:
    """Compare the mode's noiseless update with per-example clipping, then take a step
    on an empty batch (Poisson sampling draws them); return (failure, detail) or None.
    """
    features, targets = _tensors(job, device)
    first_x, first_y = features[0], targets[0]
    reference = _reference_update(
        _fresh_model(job, device), job.task, first_x, first_y, FAMILY_BATCH_SIZE
    )
    model = _fresh_model(job, device)
    before = _flat_parameters(model)
    model, step = _trainer(model, job, noise_multiplier=0.0, learning_rate=1.0)
    step(first_x, first_y)
    error = float((_flat_parameters(model) - before - reference).norm() / reference.norm())
    if not error <= CHECK_TOLERANCE:
        return "wrong-grads", f"relative error {error:.2g} against per-example clipping"
    try:
        step(first_x[:0], first_y[:0])
    except Exception as exc:  # noqa: BLE001 - any failure disqualifies the mode
        return f"empty-batch:{type(exc).__name__}", str(exc)
    if not torch.isfinite(_flat_parameters(model)).all():
        return "empty-batch:non-finite", "an empty batch left non-finite weights"
    return None


def measure(job: FamilyJob) -> Measurement:
    """Time ``job``'s steps and its peak memory, then check a private mode's gradients.

    Meant to run in a fresh process (:func:`measure_in_fresh_process`): the CPU's
    peak RSS is a process-wide high-water mark.
    """
    # Opacus' notices (secure RNG off, full backward hooks) would flood the output.
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    device = torch.device(job.device)
    try:
        params, ms_per_step, peak = _time_and_peak(job, device)
    except Exception as exc:  # noqa: BLE001 - a mode that fails is reported, not raised
        params = sum(p.numel() for p in _fresh_model(job, device).parameters())
        return Measurement(params, None, None, type(exc).__name__, str(exc))
    if job.mode is None:
        return Measurement(params, ms_per_step, peak)
    try:
        failed = _check(job, device)
    except Exception as exc:  # noqa: BLE001
        failed = (f"check:{type(exc).__name__}", str(exc))
    if failed is None:
        return Measurement(params, ms_per_step, peak)
    return Measurement(params, ms_per_step, peak, *failed)


def measure_in_fresh_process(job: FamilyJob) -> Measurement:
    """Run :func:`measure` in a newly spawned Python process, so peaks do not mix."""
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(measure, job).result()
    except BrokenProcessPool as exc:
        return Measurement(0, None, None, "process-died", str(exc))


def _family_jobs(
    dataset: DatasetName, model: ModelName, *, warmup: int, steps: int, device: torch.device
) -> tuple[str, list[FamilyJob]]:
    """The family's label and one job per configuration (plain first), on shared batches."""
    from simulations.datasets import load_builtin

    builtin = load_builtin(dataset)
    data = Standardizer.fit(builtin.data).transform(builtin.data)
    task = model_task(model, builtin.task)
    rng = np.random.default_rng(0)
    rows = np.stack(
        [rng.choice(len(data), FAMILY_BATCH_SIZE, replace=False) for _ in range(warmup + steps)]
    )
    features = data.features[rows]
    targets = task.targets(data.features, data.labels)[rows]
    jobs = [
        FamilyJob(model, task, data.kind, features, targets, mode, warmup, device.type)
        for mode in (None, *GRAD_SAMPLE_MODES)
    ]
    return f"{data.kind} {task.kind}", jobs


def family_results(
    *, warmup: int, steps: int, device: torch.device, console: Console
) -> list[FamilyResult]:
    """Measure every pair of :data:`FAMILY_PAIRS`, each configuration in a fresh process."""
    results = []
    for dataset, model in FAMILY_PAIRS:
        family, jobs = _family_jobs(dataset, model, warmup=warmup, steps=steps, device=device)
        measured = []
        for job in jobs:
            with console.status(f"{dataset} / {model}: {job.mode or 'plain SGD'}"):
                measured.append(measure_in_fresh_process(job))
        plain, *private = measured
        modes = dict(zip(GRAD_SAMPLE_MODES, private, strict=True))
        results.append(FamilyResult(dataset, model, family, plain, modes))
    return results


def _mode_cell(measurement: Measurement) -> str:
    if measurement.failure is None:
        return f"{measurement.ms_per_step:.2f}"
    if measurement.ms_per_step is None:
        return measurement.failure
    return f"({measurement.ms_per_step:.2f}) {measurement.failure}"


def family_table(results: list[FamilyResult], *, steps: int, warmup: int, device: str) -> Table:
    """One row per (dataset, model): plain and DP-SGD time per step, every mode, peaks."""
    table = Table(
        title=(
            f"DP-SGD vs plain SGD per model family, ms per step (median of {steps} after "
            f"{warmup} warm-up, batch {FAMILY_BATCH_SIZE}, {device}, "
            f"{torch.get_num_threads()} threads); peak MiB added by training"
        )
    )
    columns = ("family", "dataset", "model", "params", "plain", "best DP mode", "DP", "DP / plain")
    for column in (*columns, *GRAD_SAMPLE_MODES, "peak plain", "peak DP", "registry"):
        table.add_column(column, justify="left" if column in columns[:3] else "right")
    for result in results:
        best = result.best_mode
        plain = result.plain
        best_measure = result.modes[best] if best else None
        table.add_row(
            result.family,
            str(result.dataset),
            str(result.model),
            f"{plain.params:,}",
            f"{plain.ms_per_step:.2f}" if plain.ms_per_step is not None else str(plain.failure),
            best or "none",
            f"{best_measure.ms_per_step:.2f}" if best_measure else "-",
            (
                f"{best_measure.ms_per_step / plain.ms_per_step:.2f}x"
                if best_measure and plain.ms_per_step
                else "-"
            ),
            *(_mode_cell(result.modes[mode]) for mode in GRAD_SAMPLE_MODES),
            f"{plain.peak_mib:.1f}" if plain.peak_mib is not None else "-",
            f"{best_measure.peak_mib:.1f}" if best_measure else "-",
            result.recommended_mode,
        )
    return table


def print_family_section(
    console: Console, *, warmup: int, steps: int, device: torch.device
) -> None:
    """Measure and print the family section, with why each failing mode failed."""
    results = family_results(warmup=warmup, steps=steps, device=device, console=console)
    console.print(family_table(results, steps=steps, warmup=warmup, device=device.type))
    for result in results:
        for mode, measurement in result.modes.items():
            if measurement.failure is not None:
                console.print(
                    f"{result.model} {mode}: {measurement.failure}: {measurement.detail[:160]}",
                    markup=False,
                )
    for result in results:
        spec_mode = MODELS[result.model].grad_sample_mode
        console.print(
            f'ModelName.{result.model.name}: "{result.recommended_mode}" '
            f'(registry has "{spec_mode}")',
            markup=False,
        )


def print_step_and_round_sections(console: Console, *, repeats: int, rounds: int) -> None:
    """The default scenario's DP/plain step times and SecAgg+ round times."""
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
    table = Table(title=f"Round time, default federation, simulation ({rounds} rounds each)")
    for column in ("SecAgg+", "no SecAgg+", "SecAgg+ / none", "SecAgg+ adds"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{with_secagg:.2f} s",
        f"{without:.2f} s",
        f"{with_secagg / without:.2f}x",
        f"{with_secagg - without:+.2f} s",
    )
    console.print(table)


def main() -> None:
    """Run the benchmarks and print one table each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per step measurement")
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds per round-time run")
    parser.add_argument(
        "--families", action="store_true", help="run only the per-model-family section"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per family config")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per family config")
    parser.add_argument(
        "--device",
        choices=[d.value for d in DeviceName],
        default=DeviceName.AUTO.value,
        help="where the family section trains (auto: CUDA when present)",
    )
    args = parser.parse_args()
    console = Console()
    if not args.families:
        print_step_and_round_sections(console, repeats=args.repeats, rounds=args.rounds)
    print_family_section(
        console,
        warmup=args.warmup,
        steps=args.steps,
        device=resolve_device(DeviceName(args.device)),
    )


if __name__ == "__main__":
    main()
