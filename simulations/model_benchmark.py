"""Benchmark: DP-SGD on real-size models, per Opacus grad-sample mode, measured, never asserted.

For ResNet-18 (11 M parameters, GroupNorm, 28x28 single-channel films) and a
Transformer fine-tuned through LoRA adapters from a "pretrained" file (the
backbone frozen, only the adapters and the head trained), prints the time of one
plain SGD step and of one DP-SGD step in each grad-sample mode (``hooks``,
``functorch``, ``ghost``), their ratio, and the peak memory each adds, every
configuration in a fresh process so that peaks do not mix. On a machine with a
GPU the same table is printed for CUDA.

Run ``python -m fedcare.simulations.model_benchmark``; results are kept in
``simulations/BENCHMARKS.md`` with the command that produced them.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import resource
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

# Imported for its effect: fedcare's ghost norms for convolutions, as training uses them.
from fedcare.client import conv_ghost_norm  # noqa: F401
from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import TrainingSettings
from fedcare.shared.data import InputKind
from fedcare.shared.run_model import RunModel, build_run_model, run_criterion
from fedcare.shared.serialization import save_safetensors
from fedcare.shared.tasks import Task, TaskKind

MODES = ("hooks", "functorch", "ghost")
BATCH = 32
NOISE = 1.0
CLIP = 1.0
_MIB = 2**20


@dataclass(frozen=True)
class Case:
    """One model measured: its run settings and one example's input."""

    label: str
    settings: dict[str, FlatValue]
    input_shape: tuple[int, ...]
    input_kind: InputKind
    task: Task


def cases(weights_dir: Path) -> list[Case]:
    """ResNet-18 on films, and a LoRA-tuned Transformer on vitals from a saved "pretrained" file."""
    transformer: dict[str, FlatValue] = {"model": "transformer", "model-width": 4, "model-depth": 4}
    sequences = Case(
        "transformer (LoRA)", transformer, (24, 7), InputKind.SEQUENCES, Task(TaskKind.BINARY)
    )
    path = weights_dir / "transformer.safetensors"
    pretrained = _build(sequences, device="cpu", seed=7).module
    save_safetensors(path, {n: t.numpy() for n, t in pretrained.state_dict().items()}, {})
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    lora = {
        **transformer,
        "pretrained-weights": str(path),
        "pretrained-sha256": sha256,
        "fine-tune": "lora",
    }
    return [
        Case(
            "resnet18",
            {"model": "resnet18"},
            (1, 28, 28),
            InputKind.IMAGES,
            Task(TaskKind.MULTICLASS, num_classes=3),
        ),
        Case(sequences.label, lora, sequences.input_shape, sequences.input_kind, sequences.task),
    ]


def _build(case: Case, *, device: str, seed: int = 0) -> RunModel:
    settings = RunConfig.from_flat(case.settings).training
    run_model = build_run_model(
        settings,
        input_shape=case.input_shape,
        input_kind=case.input_kind,
        task=case.task,
        seed=seed,
        private=True,
        party="the benchmark",
    )
    run_model.module.to(device).train()
    return run_model


def _batches(case: Case, count: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(count):
        features = rng.random((BATCH, *case.input_shape), dtype=np.float32)
        if case.input_kind is InputKind.SEQUENCES:
            features[:, :, -1] = 1.0
        labels = rng.integers(0, max(case.task.num_classes, 2), BATCH)
        targets = torch.as_tensor(labels, dtype=case.task.label_dtype)
        batches.append((torch.from_numpy(features).to(device), targets.to(device)))
    return batches


@dataclass(frozen=True)
class Measurement:
    """Milliseconds of the fastest and the median timed step, and the peak MiB training added."""

    fastest_ms: float | None
    median_ms: float | None
    peak_mib: float | None
    trained: int = 0
    failure: str = ""


def _peak(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / _MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step_times_ms(  # noqa: PLR0913 - one training step's parts
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    warmup: int,
    device: str,
) -> list[float]:
    """Take one SGD step per batch; return the milliseconds of each step after ``warmup``."""
    timings = []
    for index, (features, targets) in enumerate(batches):
        start = time.perf_counter()
        optimizer.zero_grad()
        criterion(model(features), targets).backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            timings.append((time.perf_counter() - start) * 1e3)
    return timings


def measure(case: Case, mode: str | None, device: str, steps: int, warmup: int) -> Measurement:
    """Time ``steps`` SGD steps after ``warmup`` (DP-SGD in ``mode``, plain when ``None``)."""
    from opacus import PrivacyEngine

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    run_model = _build(case, device=device)
    model = run_model.module
    trained = [p for p in model.parameters() if p.requires_grad]
    criterion = run_criterion(TrainingSettings(), case.task)
    optimizer = torch.optim.SGD(trained, lr=0.01)
    batches = _batches(case, warmup + steps, device)
    if mode is not None:
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(
                *[torch.cat(t).cpu() for t in zip(*batches, strict=True)]
            ),
            batch_size=BATCH,
        )
        made = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            criterion=criterion,
            data_loader=loader,
            noise_multiplier=NOISE,
            max_grad_norm=CLIP,
            poisson_sampling=True,
            grad_sample_mode=mode,
        )
        model, optimizer = made[0], made[1]
        criterion = made[2] if mode == "ghost" else criterion
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() / _MIB if device == "cuda" else _peak(device)
    try:
        timings = _step_times_ms(model, optimizer, criterion, batches, warmup, device)
    except (RuntimeError, NotImplementedError, ValueError) as error:
        return Measurement(None, None, None, sum(p.numel() for p in trained), type(error).__name__)
    return Measurement(
        min(timings),
        float(np.median(timings)),
        _peak(device) - baseline,
        sum(p.numel() for p in trained),
    )


def _context() -> multiprocessing.context.BaseContext:
    # A forkserver that never trained: each child's peak RSS starts at its own size
    # (simulations/BENCHMARKS.md explains why not spawn).
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["torch", "opacus", "fedcare.client.conv_ghost_norm", "fedcare.shared.run_model"]
    )
    return context


def measure_in_fresh_process(
    case: Case, mode: str | None, device: str, steps: int, warmup: int
) -> Measurement:
    """Run :func:`measure` in a process of its own."""
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=_context()) as pool:
            return pool.submit(measure, case, mode, device, steps, warmup).result()
    except BrokenProcessPool:
        return Measurement(None, None, None, failure="process-died")


def _cell(measurement: Measurement, plain: Measurement) -> list[str]:
    if measurement.fastest_ms is None:
        return [measurement.failure, "-", "-"]
    ratio = f"{measurement.fastest_ms / plain.fastest_ms:.2f}x" if plain.fastest_ms else "-"
    return [
        f"{measurement.fastest_ms:.0f} / {measurement.median_ms:.0f}",
        ratio,
        f"{measurement.peak_mib:.0f}" if measurement.peak_mib is not None else "-",
    ]


def print_section(
    console: Console,
    *,
    device: str,
    steps: int,
    warmup: int,
    modes_run: tuple[str, ...] = MODES,
    only: str = "",
) -> None:
    """Measure every case (or those whose label starts with ``only``) on ``device``."""
    with tempfile.TemporaryDirectory() as tmp:
        measured = []
        for case in cases(Path(tmp)):
            if not case.label.startswith(only):
                continue
            plain = measure_in_fresh_process(case, None, device, steps, warmup)
            modes = {
                mode: measure_in_fresh_process(case, mode, device, steps, warmup)
                for mode in modes_run
            }
            measured.append((case, plain, modes))
    table = Table(
        title=f"DP-SGD vs plain SGD on {device}: ms per step (fastest / median of {steps} "
        f"after {warmup} warm-up), batch {BATCH}, one thread; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    for column in ("model", "trained params", "run", "ms", "DP / plain", "peak MiB"):
        table.add_column(column, justify="left" if column in ("model", "run") else "right")
    for case, plain, modes in measured:
        table.add_row(
            case.label,
            f"{plain.trained:,}",
            "plain SGD",
            *_cell(plain, plain)[:1],
            "1.00x",
            *_cell(plain, plain)[2:],
        )
        for mode, measurement in modes.items():
            table.add_row("", "", f"DP {mode}", *_cell(measurement, plain))
    console.print(table)


def main() -> None:
    """Print the CPU section, and the GPU section when CUDA is present."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="grad-sample modes"
    )
    parser.add_argument("--only", default="", help="only the cases whose name starts so")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 120))
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    for device in devices:
        print_section(
            console,
            device=device,
            steps=args.steps,
            warmup=args.warmup,
            modes_run=tuple(args.modes),
            only=args.only,
        )
    if not torch.cuda.is_available():
        console.print("No GPU here: the CUDA section runs where torch sees one.")


if __name__ == "__main__":
    main()
