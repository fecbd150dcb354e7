"""GPU check: every model takes one DP-SGD step on CUDA and on the CPU; print the differences.

Each model (every built-in family, ResNet-18, the example plugin, a LoRA-tuned
Transformer) is built twice from the same seed, and fedcare's own DP-SGD
(:func:`client.training.train_private`, the model's grad-sample mode) takes one
step on the same 32 examples on each device, with the noise multiplier at 0 and
every example in the batch (sampling rate 1), so both steps must agree up to
floating-point noise. TF32 is turned off so CUDA computes in full float32.

Run ``python -m fedcare.simulations.gpu_check`` on a machine with a GPU (about
2 minutes, most of it importing and building ResNet-18); it exits non-zero if a
model differs by more than :data:`TOLERANCE` (relative) or fails on CUDA.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from fedcare.client.training import train_private
from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import ModelName
from fedcare.shared.data import Examples, InputKind
from fedcare.shared.models import MODELS
from fedcare.shared.privacy import DpSgdPlan
from fedcare.shared.run_model import build_run_model, run_task
from fedcare.shared.serialization import get_weights, save_safetensors
from fedcare.shared.tasks import Task, TaskKind

ROWS = 32
TOLERANCE = 1e-3
_SHAPES = {
    InputKind.TABLE: (12,),
    InputKind.IMAGES: (1, 28, 28),
    InputKind.SEQUENCES: (24, 7),
    InputKind.INTERACTIONS: (40, 6),
}


def _examples(kind: InputKind, task: Task) -> Examples:
    rng = np.random.default_rng(0)
    shape = _SHAPES[kind]
    if kind is InputKind.INTERACTIONS:
        features = np.stack([rng.integers(0, shape[0], ROWS), rng.integers(0, shape[1], ROWS)], 1)
        return Examples(
            features, rng.integers(0, 2, ROWS).astype(np.float32), ("t",) * shape[1], kind, shape[0]
        )
    pixels = rng.random((ROWS, *shape), dtype=np.float32)
    if kind is InputKind.SEQUENCES:
        pixels[:, :, -1] = 1.0
    labels = rng.integers(0, 2, ROWS)
    names = tuple(f"f{i}" for i in range(shape[-1] if kind is not InputKind.IMAGES else shape[0]))
    return Examples(pixels, labels.astype(np.float32), names, kind)


def _settings(weights_dir: Path) -> dict[str, dict[str, FlatValue]]:
    runs: dict[str, dict[str, FlatValue]] = {name.value: {"model": name.value} for name in MODELS}
    runs["residual-mlp (plugin)"] = {"model": "residual-mlp", "model-version": "0.1.0"}
    transformer: dict[str, FlatValue] = {"model": "transformer", "model-width": 2, "model-depth": 2}
    path = weights_dir / "transformer.safetensors"
    base = _build(transformer, InputKind.SEQUENCES, seed=7)[0]
    save_safetensors(path, {n: t.numpy() for n, t in base.state_dict().items()}, {})
    runs["transformer (LoRA)"] = {
        **transformer,
        "pretrained-weights": str(path),
        "pretrained-sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "fine-tune": "lora",
    }
    return runs


def _kind(settings: dict[str, FlatValue]) -> InputKind:
    name = str(settings["model"])
    if name in MODELS:
        return min(MODELS[ModelName(name)].inputs)
    return InputKind.TABLE


def _build(
    settings: dict[str, FlatValue], kind: InputKind, *, seed: int = 0
) -> tuple[torch.nn.Module, Task, str]:
    training = RunConfig.from_flat(settings).training
    task = run_task(training, Task(TaskKind.BINARY))
    run_model = build_run_model(
        training,
        input_shape=_examples(kind, task).input_shape,
        input_kind=kind,
        task=task,
        seed=seed,
        private=True,
        party="the GPU check",
    )
    return run_model.module, task, run_model.grad_sample_mode


def one_step(settings: dict[str, FlatValue], device: torch.device) -> np.ndarray:
    """Return the update (flat) of one noiseless DP-SGD step on ``device``."""
    kind = _kind(settings)
    model, task, mode = _build(settings, kind)
    before: np.ndarray = np.concatenate([a.ravel() for a in get_weights(model)])
    plan = DpSgdPlan(0.0, 1.0, 1, 1, 1.0, 1e-5)
    torch.manual_seed(0)
    train_private(
        model,
        _examples(kind, task),
        task,
        plan=plan,
        max_grad_norm=1.0,
        learning_rate=0.5,
        epochs=1,
        batch_size=ROWS,
        history=(),
        device=device,
        grad_sample_mode=mode,
        augment=False,
    )
    after: np.ndarray = np.concatenate([a.ravel() for a in get_weights(model.cpu())])
    update: np.ndarray = after - before
    return update


def main() -> int:
    """Compare every model's step on CUDA with the CPU's; return 1 if any differs or fails.

    With ``--cpu-only`` (no GPU needed) the CPU is compared with itself: a dry
    run of the script.
    """
    other = torch.device("cpu" if "--cpu-only" in sys.argv else "cuda")
    if other.type == "cuda" and not torch.cuda.is_available():
        print("no GPU here: run this where torch sees one (or pass --cpu-only for a dry run)")
        return 0
    warnings.simplefilter("ignore")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    where = torch.cuda.get_device_name() if other.type == "cuda" else "cpu only"
    print(f"torch {torch.__version__}, {where}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for label, settings in _settings(Path(tmp)).items():
            start = time.perf_counter()
            try:
                cpu = one_step(settings, torch.device("cpu"))
                gpu = one_step(settings, other)
            except Exception as exc:  # noqa: BLE001 - reported per model, then the exit code
                print(f"{label:24s} FAILED {type(exc).__name__}: {exc}")
                failed = True
                continue
            error = float(np.abs(cpu - gpu).max() / (np.abs(cpu).max() + 1e-12))
            verdict = "ok" if error <= TOLERANCE else "DIFFERS"
            failed |= error > TOLERANCE
            print(
                f"{label:24s} max |update difference| / max |update| = {error:.2e}  {verdict}  "
                f"({time.perf_counter() - start:.1f} s)"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
