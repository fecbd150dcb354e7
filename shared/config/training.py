"""Training settings: what each hospital trains, on which device, and how, per round."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

from fedcare.shared.config.flat import require, setting


class ModelName(StrEnum):
    """Models in the registry (:mod:`shared.models`)."""

    LOGREG = "logreg"
    MLP = "mlp"
    CNN = "cnn"
    RESNET = "resnet"
    GRU = "gru"
    LSTM = "lstm"
    TRANSFORMER = "transformer"
    AUTOENCODER = "autoencoder"
    NCF = "ncf"
    RESNET18 = "resnet18"


class FineTuning(StrEnum):
    """Which parameters of a (pretrained) model a run trains, and so sends."""

    ALL = "all"
    HEAD = "head"
    """Only the last linear layer; the backbone stays as the pretrained file has it."""
    LORA = "lora"
    """Low-rank adapters (LoRA, through ``peft``) on the backbone's linear and
    convolution layers, and the head."""


class PersonaliseLayers(StrEnum):
    """Which parameters each hospital fine-tunes locally after the run (personalisation)."""

    NONE = "none"
    ALL = "all"
    HEAD = "head"
    """The last linear layer, as FedPer keeps the head local."""
    BIAS = "bias"
    """The last linear layer's bias only: re-calibrates the output to the site's case mix."""


class GradSampleMode(StrEnum):
    """Opacus' per-sample-gradient engine; ``auto`` takes the model's measured choice."""

    AUTO = "auto"
    HOOKS = "hooks"
    FUNCTORCH = "functorch"
    GHOST = "ghost"


class DeviceName(StrEnum):
    """Where a hospital trains: ``auto`` takes the GPU when one is present."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


_PLUGIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class TrainingSettings:
    """What each hospital trains and how, per round.

    Attributes
    ----------
    model : str
        A built-in model (:class:`ModelName`), or the name a model plugin
        registered under the ``fedcare.models`` entry point group.
    model_version : str
        For a plugin model, the version of the package that provides it; every
        party refuses to build the model from any other version. Empty for a
        built-in model.
    model_width, model_depth : int
        Width multiplier and depth of fedcare's own families (1 and 1: the
        smallest); unused by ``resnet18`` and plugins.
    fix_model : bool
        Replace layers DP-SGD cannot train (BatchNorm -> GroupNorm, by Opacus'
        ``ModuleValidator.fix``) instead of refusing the model; the report lists
        what changed.
    pretrained_weights, pretrained_sha256 : str
        A safetensors file every party loads from its own disk (same path) and
        its SHA-256; a party whose copy has another hash refuses. Empty for none.
    fine_tune : FineTuning
        Which parameters train (and are sent): all, the head only, or LoRA
        adapters and the head; the rest stays as the pretrained file has it.
    lora_rank : int
        Rank of the LoRA adapters.
    grad_sample_mode : GradSampleMode
        Opacus' per-sample-gradient engine; ``auto`` takes the model's measured one.
    class_weights : str
        Comma-separated loss weight of each class (binary: negative, positive),
        public and fixed by the run (never fitted on a site's data); empty: 1 each.
    local_epochs : int
        Passes over the hospital's training split per round.
    batch_size : int
        Expected batch size; with DP-SGD, batches are Poisson-sampled at rate
        ``1 / ceil(n / batch_size)``. A hospital refuses a run whose batch size is
        below its own ``min-batch-size``.
    learning_rate : float
        SGD step size.
    proximal_mu : float
        FedProx's coefficient mu: each hospital's local objective gains
        ``mu / 2 * ||w - w_global||^2``, keeping a skewed site's training near
        the global model; 0 is plain FedAvg training. Added after DP-SGD's
        clipping and noise, so it costs no privacy. The default (0.1) beat FedAvg
        in most comparisons on the built-in data (README).
    personalise_layers : PersonaliseLayers
        After the last round each hospital fine-tunes these parameters of the
        final global model on its training split (DP-SGD) and releases how that
        personalised model scores as one more planned evaluation release; the
        model stays at the hospital. ``none`` (default) skips it. Needs
        ``evaluation-rounds`` >= 1.
    device : DeviceName
        ``auto`` uses CUDA when present, else the CPU.
    initial_model : str
        Aggregator-side safetensors file whose tensors initialise the model where
        names and shapes match (an autoencoder's encoder for the imaging CNN);
        empty for a fresh model.
    """

    model: str = setting("model", ModelName.LOGREG.value)
    model_version: str = setting("model-version", "")
    model_width: int = setting("model-width", 1)
    model_depth: int = setting("model-depth", 1)
    fix_model: bool = setting("fix-model", False)
    pretrained_weights: str = setting("pretrained-weights", "")
    pretrained_sha256: str = setting("pretrained-sha256", "")
    fine_tune: FineTuning = setting("fine-tune", FineTuning.ALL)
    lora_rank: int = setting("lora-rank", 8)
    grad_sample_mode: GradSampleMode = setting("grad-sample-mode", GradSampleMode.AUTO)
    class_weights: str = setting("class-weights", "")
    local_epochs: int = setting("local-epochs", 2)
    batch_size: int = setting("batch-size", 32)
    learning_rate: float = setting("learning-rate", 0.5)
    # 0.1 by evidence: it beat FedAvg in most built-in comparisons (README, "Skewed hospitals").
    proximal_mu: float = setting("proximal-mu", 0.1)
    personalise_layers: PersonaliseLayers = setting("personalise-layers", PersonaliseLayers.NONE)
    device: DeviceName = setting("device", DeviceName.AUTO)
    initial_model: str = setting("initial-model", "")

    @property
    def builtin_model(self) -> ModelName | None:
        """The built-in model trained, or ``None`` for a plugin model."""
        return ModelName(self.model) if self.model in _BUILTIN_MODELS else None

    @property
    def loss_class_weights(self) -> tuple[float, ...]:
        """:attr:`class_weights` as numbers (empty: unweighted)."""
        return tuple(float(part) for part in self.class_weights.split(",") if part.strip())

    def __post_init__(self) -> None:
        self._check_model()
        self._check_pretrained()
        require(self.local_epochs >= 1, "local-epochs", f"must be >= 1 (got {self.local_epochs})")
        require(self.batch_size >= 1, "batch-size", f"must be >= 1 (got {self.batch_size})")
        require(
            self.learning_rate > 0,
            "learning-rate",
            f"must be > 0 (got {self.learning_rate})",
        )
        require(
            self.proximal_mu >= 0 and math.isfinite(self.proximal_mu),
            "proximal-mu",
            f"must be a finite number >= 0 (got {self.proximal_mu}); 0 turns FedProx off",
        )
        require(
            self.proximal_mu * self.learning_rate < 1,
            "proximal-mu",
            f"times learning-rate must be < 1 (got {self.proximal_mu} x {self.learning_rate}); "
            "a larger pull overshoots the global model and training diverges. Lower "
            "proximal-mu (0 turns FedProx off) or learning-rate",
        )
        require(self.lora_rank >= 1, "lora-rank", f"must be >= 1 (got {self.lora_rank})")
        try:
            weights = self.loss_class_weights
        except ValueError:
            weights = (-1.0,)
        require(
            all(weight > 0 and math.isfinite(weight) for weight in weights),
            "class-weights",
            f"must be comma-separated positive numbers, one per class (got {self.class_weights!r})",
        )

    def _check_model(self) -> None:
        builtin = ", ".join(_BUILTIN_MODELS)
        if self.builtin_model is None:
            require(
                bool(_PLUGIN_NAME.fullmatch(self.model)) and bool(self.model_version),
                "model",
                f"'{self.model}' is no built-in model ({builtin}); to train an installed "
                "model plugin, give its entry point name and its package version in "
                "model-version",
            )
        for key, value in (("model-width", self.model_width), ("model-depth", self.model_depth)):
            require(1 <= value <= 64, key, f"must lie in 1..64 (got {value})")

    def _check_pretrained(self) -> None:
        if self.pretrained_weights:
            require(
                bool(re.fullmatch(r"[0-9a-f]{64}", self.pretrained_sha256)),
                "pretrained-sha256",
                "must be the 64 hex digits of the pretrained file's SHA-256 "
                "(sha256sum FILE), so every party checks its own copy",
            )
        require(
            self.fine_tune is FineTuning.ALL or bool(self.pretrained_weights),
            "fine-tune",
            f"'{self.fine_tune}' keeps the backbone frozen, which needs pretrained-weights",
        )


_BUILTIN_MODELS = tuple(name.value for name in ModelName)
