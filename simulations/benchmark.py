"""Benchmark: what privacy costs in time and memory, measured, never asserted.

Prints, side by side in one run:

* per model, the time of one DP-SGD step (Opacus) over one plain SGD step on the
  default scenario's largest hospital, with the ratio;
* the default federation's mean round time with SecAgg+ and without it (DP on in
  both), in Flower's simulation engine, with the ratio;
* per model family (a built-in dataset and a model that reads it), the time of one
  plain SGD step and of one DP-SGD step in each of Opacus' grad-sample modes
  (``hooks``, ``functorch``, ``ew``, ``ghost``) on the same batches of 32, the peak
  memory plain and private training add, each configuration in a fresh process so
  that peaks do not mix, and for each mode whether its clipped update matches
  per-example clipping and whether it survives an empty Poisson batch. A mode
  replaces ``hooks`` in the registry only if it passes both (an empty batch may
  break it only as it breaks plain SGD) and is at least 10% faster
  (:func:`recommended_mode`).

Run ``python -m simulations.benchmark`` (or ``make benchmark``), or only the family
section with ``python -m simulations.benchmark --families``; results are kept in
``simulations/BENCHMARKS.md`` with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
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

from fedcare.shared.config import DatasetName, DeviceName, ModelName, RunConfig
from fedcare.shared.data import InputKind, Standardizer
from fedcare.shared.device import resolve_device
from fedcare.shared.models import MODELS, build_model, model_task
from fedcare.shared.privacy import plan_dp_sgd
from fedcare.shared.tasks import Task

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
    from fedcare.client.training import train_plain, train_private
    from fedcare.simulations.federation import build_federation

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
            grad_sample_mode=MODELS[model_name].grad_sample_mode,
        ).steps

    return _time_per_step(plain, repeats), _time_per_step(private, repeats)


def round_seconds(secure_aggregation: bool, rounds: int) -> float:
    """Mean round time of the default simulated federation."""
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
    threads : int
        torch's intra-op threads on the CPU.
    """

    model: ModelName
    task: Task
    input_kind: InputKind
    features: np.ndarray
    targets: np.ndarray
    mode: str | None
    warmup: int
    device: str
    threads: int


@dataclass(frozen=True)
class Measurement:
    """What one configuration measured.

    Attributes
    ----------
    params : int
        Trainable parameters of the model.
    ms_per_step : float | None
        Milliseconds of the fastest timed optimiser step; ``None`` if training failed.
    peak_mib : float | None
        Peak memory training added (MiB) over what the process held with the model
        built and the data loaded: the process' peak RSS on the CPU
        (``getrusage``), the peak allocated memory on CUDA.
    failure : str | None
        Why the mode cannot train: the exception's type, or ``wrong-grads`` when
        its noiseless clipped update differs from per-example clipping.
    empty_batch : str | None
        ``"<type>: <message>"`` of the exception a step on an empty batch (Poisson
        sampling draws them) raises; ``None`` if it works or was not reached.
    detail : str
        The messages behind ``failure`` and ``empty_batch``.
    """

    params: int
    ms_per_step: float | None
    peak_mib: float | None
    failure: str | None = None
    empty_batch: str | None = None
    detail: str = ""

    @property
    def works(self) -> bool:
        """Whether it trained and its clipped gradients are right."""
        return self.failure is None and self.ms_per_step is not None


@dataclass(frozen=True)
class FamilyResult:
    """Plain SGD and every grad-sample mode measured on one (dataset, model) pair."""

    dataset: DatasetName
    model: ModelName
    family: str
    plain: Measurement
    modes: dict[str, Measurement]

    @property
    def best_mode(self) -> str | None:
        """The fastest mode whose clipped gradients are right, or ``None`` if none."""
        working = {mode: m.ms_per_step for mode, m in self.modes.items() if m.works}
        return min(working, key=working.__getitem__) if working else None

    def ratio_to_hooks(self, mode: str) -> float | None:
        """Return the ratio of ``mode``'s time per step to ``hooks``', or ``None``.

        ``None`` unless both work and an empty batch breaks ``mode`` no more than
        it breaks plain SGD (a model that cannot take an empty batch at all is
        not the mode's fault).
        """
        candidate, hooks = self.modes[mode], self.modes["hooks"]
        if not (candidate.works and hooks.works):
            return None
        if candidate.empty_batch not in (None, self.plain.empty_batch):
            return None
        return candidate.ms_per_step / hooks.ms_per_step


def recommended_mode(
    results: list[FamilyResult], model: ModelName, modes: frozenset[str] = PLAIN_STEP_MODES
) -> str:
    """Return the grad-sample mode for ``model``'s registry entry.

    ``hooks``, unless a mode among ``modes`` works on every measured pair of
    ``model`` (right clipped gradients, empty batches no worse than plain SGD) and
    is at least :data:`MIN_SPEEDUP` faster than ``hooks`` on each; then the one
    with the best worst-case ratio.
    """
    pairs = [result for result in results if result.model is model]
    worst: dict[str, float] = {}
    for mode in modes - {"hooks"}:
        ratios = [result.ratio_to_hooks(mode) for result in pairs]
        if pairs and None not in ratios and max(ratios) <= 1 - MIN_SPEEDUP:
            worst[mode] = max(ratios)
    return min(worst, key=worst.__getitem__) if worst else "hooks"


def _peak_rss_mib() -> float:
    """Return this process' peak resident set size so far, in MiB."""
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
        # make_private derives the sampling rate from a loader; the steps draw the
        # job's fixed batches instead, so every configuration sees the same examples.
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


def _time_and_peak(job: FamilyJob, device: torch.device) -> tuple[float, float]:
    """Return the fastest timed step's ms and the peak MiB training added.

    The fastest step, not the median, as :mod:`timeit` advises: on a shared machine
    slower steps measure other processes more than this one.
    """
    model = _fresh_model(job, device)
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
    return min(timings) * 1e3, peak - baseline


def _flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])


def _reference_update(
    model: nn.Module, task: Task, features: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Compute DP-SGD's noiseless update at learning rate 1, one example at a time.

    Each example's gradient is clipped as Opacus clips (flat, by
    ``min(1, C / (norm + 1e-6))``); their sum is divided by the batch size.
    """
    loss_fn = task.loss_fn()
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.zeros_like(_flat_parameters(model))
    for row in range(len(features)):
        model.zero_grad()
        loss_fn(model(features[row : row + 1]), targets[row : row + 1]).backward()
        grad = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
        )
        total += (FAMILY_MAX_GRAD_NORM / (grad.norm() + 1e-6)).clamp(max=1.0) * grad
    return -total / len(features)


def _wrong_grads(job: FamilyJob, device: torch.device) -> str | None:
    """Why the mode's noiseless update is not per-example clipping's, or ``None`` if it is."""
    features, targets = _tensors(job, device)
    reference = _reference_update(_fresh_model(job, device), job.task, features[0], targets[0])
    model = _fresh_model(job, device)
    before = _flat_parameters(model)
    model, step = _trainer(model, job, noise_multiplier=0.0, learning_rate=1.0)
    step(features[0], targets[0])
    error = float((_flat_parameters(model) - before - reference).norm() / reference.norm())
    if error <= CHECK_TOLERANCE:
        return None
    return f"relative error {error:.2g} against per-example clipping"


def _empty_batch_failure(job: FamilyJob, device: torch.device) -> Exception | None:
    """Return the exception a step on an empty batch raises, or ``None`` if it works."""
    features, targets = _tensors(job, device)
    _, step = _trainer(
        _fresh_model(job, device), job, noise_multiplier=1.0, learning_rate=FAMILY_LEARNING_RATE
    )
    try:
        step(features[0][:0], targets[0][:0])
    except Exception as exc:  # any exception disqualifies; it is reported, not raised
        return exc
    return None


def measure(job: FamilyJob) -> Measurement:
    """Time ``job``'s steps and their peak memory, then check gradients and empty batches.

    Meant to run in a fresh process (:func:`measure_in_fresh_process`): the CPU's
    peak RSS is a process-wide high-water mark.
    """
    # Opacus' notices (secure RNG off, full backward hooks) would flood the output.
    warnings.simplefilter("ignore")
    torch.set_num_threads(job.threads)
    torch.manual_seed(0)
    device = torch.device(job.device)
    params = sum(p.numel() for p in _fresh_model(job, device).parameters() if p.requires_grad)
    try:
        ms_per_step, peak = _time_and_peak(job, device)
    except Exception as exc:  # a mode that cannot train is reported, not raised
        failure = type(exc).__name__
        return Measurement(params, None, None, failure, detail=f"{failure}: {exc}")
    try:
        # On the CPU whatever the device: TF32 convolutions on a GPU would blur the check.
        wrong = _wrong_grads(job, torch.device("cpu")) if job.mode is not None else None
    except Exception as exc:  # reported as a wrong mode, not raised
        wrong = f"the check raised {type(exc).__name__}: {exc}"
    empty = _empty_batch_failure(job, device)
    empty_batch = f"{type(empty).__name__}: {empty}" if empty else None
    details = (
        f"wrong-grads: {wrong}" if wrong else "",
        f"empty batch: {empty_batch}" if empty_batch else "",
    )
    return Measurement(
        params,
        ms_per_step,
        peak,
        failure="wrong-grads" if wrong else None,
        empty_batch=empty_batch,
        detail="; ".join(text for text in details if text),
    )


def _fresh_process_context() -> multiprocessing.context.BaseContext:
    """Return a forkserver that has imported torch and Opacus but never trained, else spawn.

    Not plain spawn where forkserver exists: a spawned child's ``ru_maxrss``
    starts at the *parent's* peak (Linux hands the pre-exec high-water mark on
    through exec), which hides any smaller peak of the child; a child forked from
    a server that never trained starts at its own size. The server also spares
    each child importing torch again.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "opacus", "fedcare.shared.models", "rich.table"])
    return context


def measure_in_fresh_process(job: FamilyJob) -> Measurement:
    """Run :func:`measure` in a new process of its own, so that peaks do not mix."""
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=_fresh_process_context()) as pool:
            return pool.submit(measure, job).result()
    except BrokenProcessPool as exc:
        return Measurement(0, None, None, "process-died", detail=f"process-died: {exc}")


def _family_jobs(
    dataset: DatasetName,
    model: ModelName,
    *,
    warmup: int,
    steps: int,
    device: torch.device,
    threads: int,
) -> tuple[str, list[FamilyJob]]:
    """Return the family's label and its jobs, plain first, all on the same batches."""
    from fedcare.simulations.datasets import load_builtin

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
        FamilyJob(model, task, data.kind, features, targets, mode, warmup, device.type, threads)
        for mode in (None, *GRAD_SAMPLE_MODES)
    ]
    return f"{data.kind} {task.kind}", jobs


def family_results(
    *, warmup: int, steps: int, device: torch.device, threads: int, console: Console
) -> list[FamilyResult]:
    """Measure every pair of :data:`FAMILY_PAIRS`, each configuration in a fresh process."""
    results = []
    for dataset, model in FAMILY_PAIRS:
        family, jobs = _family_jobs(
            dataset, model, warmup=warmup, steps=steps, device=device, threads=threads
        )
        measured = []
        for job in jobs:
            with console.status(f"{dataset} / {model}: {job.mode or 'plain SGD'}"):
                measured.append(measure_in_fresh_process(job))
        plain, *private = measured
        modes = dict(zip(GRAD_SAMPLE_MODES, private, strict=True))
        results.append(FamilyResult(dataset, model, family, plain, modes))
    return results


def _ms(measurement: Measurement) -> str:
    text = f"{measurement.ms_per_step:.2f}" if measurement.ms_per_step is not None else "-"
    return f"{text} (e)" if measurement.empty_batch else text


def _mib(measurement: Measurement | None) -> str:
    if measurement is None or measurement.peak_mib is None:
        return "-"
    return f"{measurement.peak_mib:.1f}"


def family_table(results: list[FamilyResult], *, title: str) -> Table:
    """One row per (dataset, model): plain SGD, the fastest DP-SGD mode, and their peaks."""
    table = Table(title=title)
    columns = ("family", "model", "params", "plain ms", "best DP mode", "DP ms", "DP / plain")
    for column in (*columns, "peak plain MiB", "peak DP MiB", "registry"):
        table.add_column(column, justify="left" if column in columns[:2] else "right")
    for result in results:
        best = result.best_mode
        private = result.modes[best] if best else None
        plain = result.plain
        ratio = (
            f"{private.ms_per_step / plain.ms_per_step:.2f}x"
            if private and plain.ms_per_step
            else "-"
        )
        table.add_row(
            result.family,
            str(result.model),
            f"{plain.params:,}",
            _ms(plain),
            best or "none",
            _ms(private) if private else "-",
            ratio,
            _mib(plain),
            _mib(private),
            recommended_mode(results, result.model),
        )
    return table


def modes_table(results: list[FamilyResult], *, title: str) -> Table:
    """One row per (dataset, model): every grad-sample mode's ms per step and peak MiB."""
    table = Table(title=title)
    table.add_column("dataset")
    table.add_column("model")
    for mode in GRAD_SAMPLE_MODES:
        table.add_column(mode, justify="right")
    for result in results:
        cells = []
        for mode in GRAD_SAMPLE_MODES:
            measurement = result.modes[mode]
            if measurement.ms_per_step is None:
                cells.append(str(measurement.failure))
            elif measurement.failure:
                cells.append(f"{measurement.ms_per_step:.2f}, {measurement.failure}")
            else:
                cells.append(f"{_ms(measurement)}, {_mib(measurement)} MiB")
        table.add_row(str(result.dataset), str(result.model), *cells)
    return table


def print_family_section(
    console: Console, *, warmup: int, steps: int, device: torch.device, threads: int
) -> None:
    """Measure and print the family section, why each mode failed, and the registry's modes."""
    load_before = os.getloadavg()[0]
    results = family_results(
        warmup=warmup, steps=steps, device=device, threads=threads, console=console
    )
    setting = (
        f"fastest of {steps} steps after {warmup} warm-up, batch {FAMILY_BATCH_SIZE}, "
        f"{device.type}, {threads} thread{'s' if threads > 1 else ''}, load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    console.print(family_table(results, title=f"DP-SGD vs plain SGD per family ({setting})"))
    console.print(modes_table(results, title=f"Opacus grad-sample modes, ms per step ({setting})"))
    console.print(
        "(e): a step on an empty batch raises; wrong-grads: the noiseless clipped update "
        f"differs from per-example clipping by more than {CHECK_TOLERANCE:g} (relative).",
        markup=False,
    )
    for result in results:
        for mode, measurement in {"plain": result.plain, **result.modes}.items():
            if measurement.detail:
                console.print(
                    f"{result.dataset} / {result.model} {mode}: {measurement.detail[:200]}",
                    markup=False,
                )
    for model in dict.fromkeys(result.model for result in results):
        console.print(
            f'ModelName.{model.name}: "{recommended_mode(results, model)}"  '
            f'(registry now "{MODELS[model].grad_sample_mode}")',
            markup=False,
        )


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
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per family config (one: steps stay comparable on a shared machine)",
    )
    args = parser.parse_args()
    # Wide enough for the family tables even when the output is not a terminal.
    console = Console(width=max(Console().width, 140))
    if not args.families:
        print_step_and_round_sections(console, repeats=args.repeats, rounds=args.rounds)
    print_family_section(
        console,
        warmup=args.warmup,
        steps=args.steps,
        device=resolve_device(DeviceName(args.device)),
        threads=args.threads,
    )


if __name__ == "__main__":
    main()
