"""Benchmark: DP-SGD's cost per model family and Opacus grad-sample mode, measured.

Per model family (a built-in dataset and a model that reads it): the time of one
plain SGD step and of one DP-SGD step in each of Opacus' grad-sample modes
(``hooks``, ``functorch``, ``ew``, ``ghost``) on the same batches of 32, the peak
memory plain and private training add, each configuration in a fresh process so
that peaks do not mix, and for each mode whether its clipped update matches
per-example clipping and whether it survives an empty Poisson batch. A mode
replaces ``hooks`` in the registry only if it passes both (an empty batch may
break it only as it breaks plain SGD) and is at least 10% faster
(:func:`recommended_mode`). :mod:`simulations.dp_mode_tables` prints the results;
``python -m fedcare.simulations.benchmark --families`` runs this section alone.
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from torch import nn

from fedcare.shared.config.data import DatasetName
from fedcare.shared.config.training import ModelName
from fedcare.shared.data import InputKind, Standardizer
from fedcare.shared.models import build_model, model_task
from fedcare.shared.tasks import Task
from fedcare.simulations.dp_mode_results import (
    GRAD_SAMPLE_MODES,
    FamilyResult,
    Measurement,
)

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

FAMILY_BATCH_SIZE = 32
FAMILY_LEARNING_RATE = 0.05
FAMILY_NOISE_MULTIPLIER = 1.0
FAMILY_MAX_GRAD_NORM = 1.0
CHECK_TOLERANCE = 1e-3
"""Largest relative error of a mode's clipped update against per-example clipping."""


_MIB = 2**20


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
