"""Start from pretrained weights, and train only a head or LoRA adapters.

The run names a safetensors file by path and SHA-256; every party (each hospital,
the aggregator) reads its *own* copy at that path and refuses it if the hash
differs. Nothing is downloaded, and safetensors holds tensors only (no pickled
code). With ``fine-tune = "head"`` or ``"lora"`` the backbone is frozen: only
the head, or the LoRA adapters (Hugging Face ``peft``) and the head, require
gradients, and so only they are DP-trained, clipped, noised, secure-aggregated
and sent (:func:`shared.serialization.shared_state` leaves frozen tensors out).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedcare.shared.config.training import FineTuning
from fedcare.shared.errors import ConfigError
from fedcare.shared.serialization import load_safetensors

_CHUNK = 1 << 20
_ADAPTED = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""Layer types that receive LoRA adapters (all but the head)."""


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_pretrained(model: nn.Module, path: Path, sha256: str, *, party: str) -> list[str]:
    """Check the local copy of the pretrained file, then load its matching tensors.

    A tensor is loaded where its name and shape match one of the model's (a head
    of another width keeps its fresh values).

    Returns
    -------
    list[str]
        The names loaded.

    Raises
    ------
    ConfigError
        If the file is missing, has another SHA-256 than the run's, matches no
        tensor of the model, or holds non-finite values. The message never
        quotes the local file's hash or values.
    """
    if not path.is_file():
        raise ConfigError(
            "pretrained-weights",
            f"{party} has no file at {path}; copy the federation's pretrained weights there "
            "(fedcare never downloads weights)",
        )
    if file_sha256(path) != sha256:
        raise ConfigError(
            "pretrained-sha256",
            f"{party} refuses its copy of {path}: its SHA-256 is not the run's "
            f"({sha256[:12]}...); get the federation's file again and compare with sha256sum",
        )
    stored = load_safetensors(path)
    state = model.state_dict()
    matching = {
        name: array
        for name, array in stored.items()
        if name in state and tuple(array.shape) == tuple(state[name].shape)
    }
    if not matching:
        raise ConfigError(
            "pretrained-weights",
            f"{path}: no tensor matches the model's by name and shape; is it a file of this model?",
        )
    if not all(np.all(np.isfinite(array)) for array in matching.values()):
        raise ConfigError("pretrained-weights", f"{path}: holds NaN or infinite values")
    model.load_state_dict({n: torch.from_numpy(a) for n, a in matching.items()}, strict=False)
    return sorted(matching)


def head_name(model: nn.Module) -> str:
    """Return the name of the model's head: its last linear layer.

    Raises
    ------
    ConfigError
        If the model has no linear layer.
    """
    linear: list[str] = [
        name for name, module in model.named_modules() if isinstance(module, nn.Linear)
    ]
    if not linear:
        raise ConfigError("fine-tune", "the model has no linear layer to serve as its head")
    return linear[-1]


def apply_fine_tuning(
    model: nn.Module, mode: FineTuning, *, rank: int, pretrained: list[str]
) -> nn.Module:
    """Freeze the backbone and leave only the head (and LoRA adapters) trainable.

    Parameters
    ----------
    model : nn.Module
        The model, with its pretrained tensors loaded.
    mode : FineTuning
        What trains.
    rank : int
        Rank of the LoRA adapters.
    pretrained : list[str]
        The tensors the pretrained file provided: every frozen parameter must be
        one of them (a frozen, freshly initialised layer would be useless).

    Returns
    -------
    nn.Module
        The model (with adapters injected for LoRA).

    Raises
    ------
    ConfigError
        If a frozen parameter was not in the pretrained file.
    """
    if mode is FineTuning.ALL:
        return model
    head = head_name(model)
    backbone = [name for name, _ in model.named_parameters() if not name.startswith(f"{head}.")]
    missing = sorted(set(backbone) - set(pretrained))
    if missing:
        raise ConfigError(
            "pretrained-weights",
            f"the pretrained file lacks {len(missing)} backbone tensors that fine-tune = "
            f"'{mode}' would freeze, e.g. {', '.join(missing[:3])}; use a file of this model",
        )
    if mode is FineTuning.LORA:
        model = _inject_lora(model, head, rank)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith(f"{head}.") or "lora_" in name
    return model


def _inject_lora(model: nn.Module, head: str, rank: int) -> nn.Module:
    # Imported here: only LoRA runs pay for peft (and transformers).
    from opacus.layers import DPMultiheadAttention
    from peft import LoraConfig, inject_adapter_in_model

    # Opacus' DP attention writes its own state_dict from its projections' plain
    # names, which an adapter-wrapped projection no longer has: its projections
    # stay frozen, and the adapters go to every other layer.
    attention = [
        f"{name}."
        for name, module in model.named_modules()
        if isinstance(module, DPMultiheadAttention)
    ]
    targets = [
        name
        for name, module in model.named_modules()
        if type(module) in _ADAPTED and name != head and not name.startswith(tuple(attention))
    ]
    if not targets:
        raise ConfigError("fine-tune", "the model has no linear or convolution layer to adapt")
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets)
    return inject_adapter_in_model(config, model)
