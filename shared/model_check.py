"""Check a model for DP-SGD with Opacus' ``ModuleValidator``, and fix it when asked.

A layer that mixes the examples of a batch (BatchNorm) makes one patient's
gradient depend on the others', which per-example clipping cannot bound; torch's
fused recurrent and attention layers have no per-example gradients. Every such
layer is named, with its fix. (A layer without a per-example rule of Opacus' own
is no problem: Opacus computes its gradients with functorch.) When the run sets
``fix-model``, Opacus' ``ModuleValidator.fix`` replaces what it can (BatchNorm -> GroupNorm, torch's
GRU/LSTM/attention -> Opacus' DP layers) and every replacement is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from opacus.validators import ModuleValidator
from torch import nn

from fedcare.shared.errors import ConfigError

_WHY = {
    "BatchNorm": "normalises each example with its batch's statistics, so one patient's "
    "gradient depends on the others' and per-example clipping cannot bound it",
    "InstanceNorm": "keeps running statistics of every example it sees",
    "GRU": "is torch's fused GRU, which has no per-example gradients",
    "LSTM": "is torch's fused LSTM, which has no per-example gradients",
    "MultiheadAttention": "is torch's fused attention, which has no per-example gradients",
}


@dataclass(frozen=True)
class LayerProblem:
    """A layer DP-SGD cannot train as it is.

    Attributes
    ----------
    name : str
        The layer's dotted name in the model.
    layer : str
        Its type.
    reason : str
        Why DP-SGD cannot train it.
    fix : str
        What to do about it.
    """

    name: str
    layer: str
    reason: str
    fix: str

    def sentence(self) -> str:
        """Return the problem as one sentence."""
        return f"layer '{self.name}' ({self.layer}) {self.reason}: {self.fix}"


def _reason(module: nn.Module) -> str:
    kind = type(module).__name__
    for key, why in _WHY.items():
        if key in kind:
            return why
    return "cannot be trained by Opacus as it is"


def dp_problems(model: nn.Module) -> list[LayerProblem]:
    """Every layer of ``model`` that DP-SGD cannot train, frozen ones included.

    A frozen BatchNorm still normalises with its batch's statistics in training,
    so every layer is validated, not only trainable ones.
    """
    problems = []
    for name, module in model.named_modules():
        validator = ModuleValidator.VALIDATORS.get(type(module))
        if validator is not None and validator(module):
            fixable = type(module) in ModuleValidator.FIXERS
            fix = (
                f"replace it ({_replacement(module)}), or set fix-model = true and fedcare "
                "replaces it for you"
                if fixable
                else "replace it in the model's code with a layer Opacus supports"
            )
            problems.append(LayerProblem(name, type(module).__name__, _reason(module), fix))
    return problems


def _replacement(module: nn.Module) -> str:
    kind = type(module).__name__
    if "BatchNorm" in kind:
        return "GroupNorm"
    if "InstanceNorm" in kind:
        return "track_running_stats=False"
    return f"opacus.layers.DP{kind}"


def refuse_problems(problems: list[LayerProblem], *, model: str) -> None:
    """Raise if there is any problem.

    Raises
    ------
    ConfigError
        Naming every problem layer and its fix.
    """
    if problems:
        raise ConfigError(
            "model",
            f"model '{model}' cannot be trained with DP-SGD as it is: "
            + "; ".join(problem.sentence() for problem in problems),
        )


def fix_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Replace every layer Opacus can fix; return the fixed model and what changed.

    Returns
    -------
    tuple[nn.Module, list[str]]
        The fixed model (a copy) and one line per replaced layer, e.g.
        ``features.1: BatchNorm2d(64) -> GroupNorm(32, 64)``.
    """
    before = dict(model.named_modules())
    fixed = ModuleValidator.fix(model)
    changes = [
        f"{name}: {_describe(before[name])} -> {_describe(module)}"
        for name, module in fixed.named_modules()
        if name in before and type(module) is not type(before[name])
    ]
    return fixed, changes


def _describe(module: nn.Module) -> str:
    if isinstance(module, nn.GroupNorm):
        return f"GroupNorm({module.num_groups} groups, {module.num_channels} channels)"
    width = getattr(module, "num_features", None)
    return f"{type(module).__name__}({width})" if width is not None else type(module).__name__
