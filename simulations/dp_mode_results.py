"""What the DP-SGD family section measured, and which grad-sample mode it recommends."""

from __future__ import annotations

from dataclasses import dataclass

from fedcare.shared.config.data import DatasetName
from fedcare.shared.config.training import ModelName

GRAD_SAMPLE_MODES = ("hooks", "functorch", "ew", "ghost")
"""Opacus' per-sample-gradient engines compared; ``ghost`` trains through the
criterion ``make_private`` returns, the others through plain ``optimizer.step()``."""

PLAIN_STEP_MODES = frozenset({"hooks", "functorch", "ew"})
"""Modes fedcare's training loop (``client/training.py``) can use unchanged."""

MIN_SPEEDUP = 0.10
"""How much faster than ``hooks`` a mode must be before it is recommended."""


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
        working = {
            mode: m.ms_per_step
            for mode, m in self.modes.items()
            if m.works and m.ms_per_step is not None
        }
        return min(working, key=working.__getitem__) if working else None

    def ratio_to_hooks(self, mode: str) -> float | None:
        """Return the ratio of ``mode``'s time per step to ``hooks``', or ``None``.

        ``None`` unless both work and an empty batch breaks ``mode`` no more than
        it breaks plain SGD (a model that cannot take an empty batch at all is
        not the mode's fault).
        """
        candidate, hooks = self.modes[mode], self.modes["hooks"]
        if candidate.ms_per_step is None or hooks.ms_per_step is None:
            return None
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
        known = [ratio for ratio in ratios if ratio is not None]
        if pairs and len(known) == len(ratios) and max(known) <= 1 - MIN_SPEEDUP:
            worst[mode] = max(known)
    return min(worst, key=worst.__getitem__) if worst else "hooks"
