"""Run configuration, parsed once at the edge into frozen, validated dataclasses.

Flower hands every app a flat mapping of kebab-case keys (``[tool.flwr.app.config]``
in ``pyproject.toml``, overridden by ``flwr run -c`` or ``fedcare simulate`` options).
:func:`RunConfig.from_flat` turns that mapping into typed sections and rejects any
unknown key or out-of-range value with one sentence naming the key and what it
accepts. Everything below the edge receives these objects, never raw dicts.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, TypeVar

from fedcare.shared.errors import ConfigError

FlatValue = bool | int | float | str
"""A value of Flower's run config (its ``UserConfigValue``)."""

_Section = TypeVar("_Section")


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


class GradSampleMode(StrEnum):
    """Opacus' per-sample-gradient engine; ``auto`` takes the model's measured choice."""

    AUTO = "auto"
    HOOKS = "hooks"
    FUNCTORCH = "functorch"
    GHOST = "ghost"


class DatasetName(StrEnum):
    """Datasets shipped inside installed packages, used by simulated hospitals."""

    BREAST_CANCER = "breast-cancer"
    DIABETES = "diabetes"
    LUNG_SURVIVAL = "lung-survival"
    SYNTHETIC_IMAGES = "synthetic-images"
    SYNTHETIC_VITALS = "synthetic-vitals"
    SYNTHETIC_RECORDS = "synthetic-records"
    TREATMENTS = "treatments"


class PartitionName(StrEnum):
    """How a simulation splits a dataset among virtual hospitals."""

    IID = "iid"
    DIRICHLET = "dirichlet"
    QUANTITY = "quantity"
    NATURAL = "natural"


class AggregationName(StrEnum):
    """How the aggregator combines updates: FedAvg, or one of Flower's robust rules."""

    FEDAVG = "fedavg"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed-mean"
    KRUM = "krum"


class ServerOptimizerName(StrEnum):
    """How the aggregator applies each round's mean update.

    ``none`` adds it as is (FedAvg); the others treat it as a pseudo-gradient for
    an adaptive server optimiser (Reddi et al., 2021, "Adaptive Federated
    Optimization").
    """

    NONE = "none"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"
    FEDADAGRAD = "fedadagrad"


class FailedRoundPolicy(StrEnum):
    """What the run does after a round that could not update the model."""

    CONTINUE = "continue"
    STOP = "stop"


class DeviceName(StrEnum):
    """Where a hospital trains: ``auto`` takes the GPU when one is present."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


def _setting(key: str, default: FlatValue) -> Any:
    """Declare a dataclass field bound to run-config key ``key``."""
    return field(default=default, metadata={"key": key})


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(key, message)


@dataclass(frozen=True)
class FederationSettings:
    """How long the federation runs and how long it waits.

    Attributes
    ----------
    rounds : int
        Number of federated rounds (``num-server-rounds``).
    round_timeout : float
        Seconds the aggregator waits for each round's replies (and for each
        SecAgg+ stage) before going on with whoever answered.
    min_hospitals : int
        Fewest hospitals a round may go on with once the deadline has passed
        (hospitals drop out; a round with fewer fails and is reported).
    hospital_names : str
        ``node-id=name`` pairs, comma-separated, so the report can name a hospital
        that dropped out before it ever replied (``fedcare run`` fills it in from
        the registrations ``fedcare aggregator register`` recorded).
    aggregation : AggregationName
        FedAvg, or a robust rule (median, trimmed mean, Krum) that needs every
        update in the clear, so secure aggregation off.
    max_update_norm : float
        Largest L2 norm a hospital's update may have; without secure aggregation
        every reply is checked against it (and its shapes, values and row count)
        before aggregation, and an offending one is rejected and reported.
    trim_fraction : float
        Share of updates the trimmed mean cuts from each end.
    krum_byzantine : int
        Hospitals Krum assumes may be hostile (it needs 2f + 3 updates).
    on_failed_round : FailedRoundPolicy
        After a round that could not update the model (too few hospitals by the
        deadline, SecAgg+ below its threshold, every update rejected): go on to
        the next round, or stop cleanly, resumable from the last complete round.
    """

    rounds: int = _setting("num-server-rounds", 5)
    round_timeout: float = _setting("round-timeout", 300.0)
    min_hospitals: int = _setting("min-hospitals", 2)
    hospital_names: str = _setting("hospital-names", "")
    aggregation: AggregationName = _setting("aggregation", AggregationName.FEDAVG)
    max_update_norm: float = _setting("max-update-norm", 10.0)
    trim_fraction: float = _setting("trim-fraction", 0.2)
    krum_byzantine: int = _setting("krum-byzantine", 1)
    on_failed_round: FailedRoundPolicy = _setting("on-failed-round", FailedRoundPolicy.CONTINUE)

    def names_by_node(self) -> dict[int, str]:
        """:attr:`hospital_names` as a mapping from node id to name."""
        pairs = (pair.partition("=") for pair in self.hospital_names.split(",") if pair)
        return {int(node): name for node, _, name in pairs}

    def __post_init__(self) -> None:
        _require(self.rounds >= 1, "num-server-rounds", f"must be >= 1 (got {self.rounds})")
        _require(
            self.round_timeout > 0,
            "round-timeout",
            f"must be > 0 seconds (got {self.round_timeout})",
        )
        _require(
            self.min_hospitals >= 1, "min-hospitals", f"must be >= 1 (got {self.min_hospitals})"
        )
        _require(
            self.max_update_norm > 0,
            "max-update-norm",
            f"must be > 0 (got {self.max_update_norm})",
        )
        _require(
            0 < self.trim_fraction < 0.5,
            "trim-fraction",
            f"must lie in (0, 0.5) (got {self.trim_fraction})",
        )
        _require(
            self.krum_byzantine >= 0, "krum-byzantine", f"must be >= 0 (got {self.krum_byzantine})"
        )
        pairs = [pair.partition("=") for pair in self.hospital_names.split(",") if pair]
        _require(
            all(node.isdigit() and sep and name for node, sep, name in pairs),
            "hospital-names",
            "must be comma-separated node-id=name pairs",
        )


@dataclass(frozen=True)
class ServerOptimizerSettings:
    """The server optimiser that turns each round's mean update into the next global model.

    It sees only the aggregate (under SecAgg+, only the sum ever reaches the
    aggregator), so it works with secure aggregation and, being post-processing
    of DP-SGD's releases, costs no privacy.

    Attributes
    ----------
    optimizer : ServerOptimizerName
        ``none`` adds the mean update (FedAvg); ``fedadam``, ``fedyogi`` and
        ``fedadagrad`` keep per-parameter moments across rounds.
    learning_rate : float
        Server step size (eta); ``none`` ignores it.
    beta1 : float
        Decay of the first moment (momentum), in [0, 1).
    beta2 : float
        Decay of the second moment, in [0, 1) (FedAdam and FedYogi).
    tau : float
        Adaptivity floor added to the root of the second moment; larger is
        closer to plain server SGD.
    """

    optimizer: ServerOptimizerName = _setting("server-optimizer", ServerOptimizerName.NONE)
    learning_rate: float = _setting("server-learning-rate", 0.1)
    beta1: float = _setting("server-beta1", 0.9)
    beta2: float = _setting("server-beta2", 0.99)
    tau: float = _setting("server-tau", 1e-3)

    def __post_init__(self) -> None:
        _require(
            self.learning_rate > 0 and math.isfinite(self.learning_rate),
            "server-learning-rate",
            f"must be a finite number > 0 (got {self.learning_rate})",
        )
        for key, beta in (("server-beta1", self.beta1), ("server-beta2", self.beta2)):
            _require(0 <= beta < 1, key, f"must lie in [0, 1) (got {beta})")
        _require(
            self.tau > 0 and math.isfinite(self.tau),
            "server-tau",
            f"must be a finite number > 0 (got {self.tau}); it keeps the step finite "
            "where an update's second moment is zero",
        )


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
    device : DeviceName
        ``auto`` uses CUDA when present, else the CPU.
    initial_model : str
        Aggregator-side safetensors file whose tensors initialise the model where
        names and shapes match (an autoencoder's encoder for the imaging CNN);
        empty for a fresh model.
    """

    model: str = _setting("model", ModelName.LOGREG.value)
    model_version: str = _setting("model-version", "")
    model_width: int = _setting("model-width", 1)
    model_depth: int = _setting("model-depth", 1)
    fix_model: bool = _setting("fix-model", False)
    pretrained_weights: str = _setting("pretrained-weights", "")
    pretrained_sha256: str = _setting("pretrained-sha256", "")
    fine_tune: FineTuning = _setting("fine-tune", FineTuning.ALL)
    lora_rank: int = _setting("lora-rank", 8)
    grad_sample_mode: GradSampleMode = _setting("grad-sample-mode", GradSampleMode.AUTO)
    class_weights: str = _setting("class-weights", "")
    local_epochs: int = _setting("local-epochs", 2)
    batch_size: int = _setting("batch-size", 32)
    learning_rate: float = _setting("learning-rate", 0.5)
    # 0.1 by evidence: it beat FedAvg in most built-in comparisons (README, "Skewed hospitals").
    proximal_mu: float = _setting("proximal-mu", 0.1)
    device: DeviceName = _setting("device", DeviceName.AUTO)
    initial_model: str = _setting("initial-model", "")

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
        _require(self.local_epochs >= 1, "local-epochs", f"must be >= 1 (got {self.local_epochs})")
        _require(self.batch_size >= 1, "batch-size", f"must be >= 1 (got {self.batch_size})")
        _require(
            self.learning_rate > 0,
            "learning-rate",
            f"must be > 0 (got {self.learning_rate})",
        )
        _require(
            self.proximal_mu >= 0 and math.isfinite(self.proximal_mu),
            "proximal-mu",
            f"must be a finite number >= 0 (got {self.proximal_mu}); 0 turns FedProx off",
        )
        _require(
            self.proximal_mu * self.learning_rate < 1,
            "proximal-mu",
            f"times learning-rate must be < 1 (got {self.proximal_mu} x {self.learning_rate}); "
            "a larger pull overshoots the global model and training diverges. Lower "
            "proximal-mu (0 turns FedProx off) or learning-rate",
        )
        _require(self.lora_rank >= 1, "lora-rank", f"must be >= 1 (got {self.lora_rank})")
        try:
            weights = self.loss_class_weights
        except ValueError:
            weights = (-1.0,)
        _require(
            all(weight > 0 and math.isfinite(weight) for weight in weights),
            "class-weights",
            f"must be comma-separated positive numbers, one per class (got {self.class_weights!r})",
        )

    def _check_model(self) -> None:
        builtin = ", ".join(_BUILTIN_MODELS)
        if self.builtin_model is None:
            _require(
                bool(_PLUGIN_NAME.fullmatch(self.model)) and bool(self.model_version),
                "model",
                f"'{self.model}' is no built-in model ({builtin}); to train an installed "
                "model plugin, give its entry point name and its package version in "
                "model-version",
            )
        for key, value in (("model-width", self.model_width), ("model-depth", self.model_depth)):
            _require(1 <= value <= 64, key, f"must lie in 1..64 (got {value})")

    def _check_pretrained(self) -> None:
        if self.pretrained_weights:
            _require(
                bool(re.fullmatch(r"[0-9a-f]{64}", self.pretrained_sha256)),
                "pretrained-sha256",
                "must be the 64 hex digits of the pretrained file's SHA-256 "
                "(sha256sum FILE), so every party checks its own copy",
            )
        _require(
            self.fine_tune is FineTuning.ALL or bool(self.pretrained_weights),
            "fine-tune",
            f"'{self.fine_tune}' keeps the backbone frozen, which needs pretrained-weights",
        )


_BUILTIN_MODELS = tuple(name.value for name in ModelName)


@dataclass(frozen=True)
class PrivacySettings:
    """Sample-level differential privacy at every hospital (DP-SGD).

    Attributes
    ----------
    enabled : bool
        DP-SGD on. Turning it off needs an explicit flag and is reported loudly.
    target_epsilon : float
        Epsilon each hospital may spend over the whole run.
    delta : float
        The delta of the (epsilon, delta) guarantee; keep it well below 1/n.
    max_grad_norm : float
        Per-sample gradient clipping bound C.
    ledger_run : str
        The run hospitals book this run's privacy spending under; empty means
        Flower's run id. A resumed run sets it to the original run's, so its
        rounds draw on the same per-run budget.
    evaluation_share : float
        The share of ``target_epsilon`` set aside for the hospitals' evaluations:
        their Gaussian noise is calibrated so that the run's evaluation releases
        alone spend ``evaluation_share x target_epsilon`` (0.99 of the default 3);
        DP-SGD's noise is then calibrated so that training and evaluation composed
        (RDP) stay within ``target_epsilon``. Composition in RDP costs training
        less than that share: about 2.77 of 3 is left for it alone.
    evaluation_rounds : int
        In how many rounds hospitals evaluate the global model on their own
        held-out rows (spread evenly, ending with the last round); 0 asks for no
        hospital evaluation at all.
    """

    enabled: bool = _setting("differential-privacy", True)
    target_epsilon: float = _setting("epsilon", 3.0)
    delta: float = _setting("delta", 1e-5)
    max_grad_norm: float = _setting("max-grad-norm", 1.0)
    ledger_run: str = _setting("ledger-run", "")
    evaluation_share: float = _setting("evaluation-share", 0.33)
    evaluation_rounds: int = _setting("evaluation-rounds", 1)

    def __post_init__(self) -> None:
        _require(
            self.target_epsilon > 0 and math.isfinite(self.target_epsilon),
            "epsilon",
            f"must be a finite number > 0 (got {self.target_epsilon})",
        )
        _require(0 < self.delta < 1, "delta", f"must lie in (0, 1) (got {self.delta})")
        _require(
            self.max_grad_norm > 0,
            "max-grad-norm",
            f"must be > 0 (got {self.max_grad_norm})",
        )
        _require(
            self.evaluation_rounds >= 0,
            "evaluation-rounds",
            f"must be >= 0 (got {self.evaluation_rounds})",
        )
        _require(
            0 < self.evaluation_share < 1,
            "evaluation-share",
            f"must lie in (0, 1) so that training keeps a budget (got {self.evaluation_share}); "
            "set evaluation-rounds = 0 for no hospital evaluation",
        )

    @property
    def evaluation_epsilon(self) -> float:
        """Epsilon the run's evaluation releases may spend by themselves."""
        return self.evaluation_share * self.target_epsilon


@dataclass(frozen=True)
class SecureAggregationSettings:
    """Flower's SecAgg+ protocol: the aggregator sees only the sum of updates.

    Attributes
    ----------
    enabled : bool
        SecAgg+ on. Turning it off needs an explicit flag and is reported loudly.
    num_shares : float
        Size of each hospital's SecAgg+ neighbourhood, itself included: the
        hospitals it masks its update with and splits its keys among. A whole
        number >= 3 is a count (every hospital when the round has fewer); a
        fraction in (0, 1] is that share of the round's hospitals. The default,
        21, keeps federations of up to 21 hospitals all-to-all; in a larger one
        the aggregator learns a hospital's update only by colluding with
        ``reconstruction_threshold`` of its neighbourhood (14 of the 21), and the
        work per hospital stays constant instead of growing with the federation
        (:meth:`share_fraction`).
    reconstruction_threshold : float
        Fraction of those shares needed to unmask; ``1 - threshold`` of a
        hospital's neighbours may drop out and the round still completes. It
        must be more than half: hospitals refuse a threshold of half the shares
        or less (two disjoint groups could then each rebuild a secret), and
        Flower rounds it, so the default 0.67 is the smallest round number that
        stays above half for every federation size.
    clipping_range : float
        Largest absolute value any update entry may take. Hospitals send model
        *deltas* and refuse to send one outside this range rather than let the
        protocol clip it silently.
    max_weight : float
        Largest sample count the protocol expects from one hospital; set it near
        the biggest site's training rows (precision and overflow depend on it).
    """

    enabled: bool = _setting("secure-aggregation", True)
    num_shares: float = _setting("secagg-num-shares", 21.0)
    reconstruction_threshold: float = _setting("secagg-reconstruction-threshold", 0.67)
    clipping_range: float = _setting("secagg-clipping-range", 4.0)
    max_weight: float = _setting("secagg-max-weight", 1000.0)

    def __post_init__(self) -> None:
        _require(
            0 < self.num_shares <= 1
            or (self.num_shares >= 3 and float(self.num_shares).is_integer()),
            "secagg-num-shares",
            "must be a whole number of hospitals >= 3 or a fraction in (0, 1] "
            f"(got {self.num_shares:g})",
        )
        _require(
            0.5 < self.reconstruction_threshold <= 1,
            "secagg-reconstruction-threshold",
            "must be a fraction in (0.5, 1]: hospitals refuse a threshold of half the shares "
            f"or less (got {self.reconstruction_threshold})",
        )
        _require(
            self.clipping_range > 0,
            "secagg-clipping-range",
            f"must be > 0 (got {self.clipping_range})",
        )
        _require(
            self.max_weight > 0,
            "secagg-max-weight",
            f"must be > 0 (got {self.max_weight})",
        )

    def share_fraction(self, hospitals: int) -> float:
        """Return the neighbourhood as Flower's share of the round's hospitals.

        Flower reads a float as a fraction of the hospitals sampled in the
        round, so a count becomes ``count / hospitals``: the count itself when
        all ``hospitals`` take part, proportionally fewer when some are missing.
        """
        if self.num_shares <= 1:
            return self.num_shares
        return min(1.0, self.num_shares / hospitals)


@dataclass(frozen=True)
class DataSettings:
    """Where hospital data comes from and how each hospital splits it.

    Attributes
    ----------
    dataset : DatasetName
        Built-in dataset that simulated hospitals share out.
    hospitals : int
        Number of hospitals in the federation; every round waits for them all
        (until ``round-timeout``).
    partition : PartitionName
        How the simulation splits the dataset among hospitals.
    dirichlet_alpha : float
        Concentration of the Dirichlet draw for ``dirichlet`` (label skew) and
        ``quantity`` (size skew); smaller is more skewed.
    seed : int
        Seed of every data split of a simulation, so a scenario is reproducible
        (a real hospital splits with its own ``split-seed``, never the run's).
    test_fraction : float
        Share of the dataset held out as the never-trained-on test set.
    eval_fraction : float
        Share of each simulated hospital's rows kept for its local evaluation (a
        real hospital uses its own ``eval-fraction``, never the run's). The
        default, 0.25, leaves every class of the default simulation's hospitals
        the ``min-count`` of 10 held-out rows an evaluation needs.
    contract : str
        The federation's data contract (TOML text) when real hospitals train on
        their own files; empty in a simulation, which uses ``dataset``.
    """

    dataset: DatasetName = _setting("dataset", DatasetName.BREAST_CANCER)
    hospitals: int = _setting("hospitals", 3)
    partition: PartitionName = _setting("partition", PartitionName.DIRICHLET)
    dirichlet_alpha: float = _setting("dirichlet-alpha", 2.0)
    seed: int = _setting("seed", 42)
    test_fraction: float = _setting("test-fraction", 0.25)
    eval_fraction: float = _setting("eval-fraction", 0.25)
    contract: str = _setting("contract", "")

    @property
    def simulated(self) -> bool:
        """Whether hospitals are virtual, sharing out the built-in ``dataset``."""
        return not self.contract

    def __post_init__(self) -> None:
        _require(self.hospitals >= 1, "hospitals", f"must be >= 1 (got {self.hospitals})")
        _require(
            self.dirichlet_alpha > 0,
            "dirichlet-alpha",
            f"must be > 0 (got {self.dirichlet_alpha})",
        )
        _require(
            0 < self.test_fraction < 1,
            "test-fraction",
            f"must lie in (0, 1) (got {self.test_fraction})",
        )
        _require(
            0 < self.eval_fraction < 1,
            "eval-fraction",
            f"must lie in (0, 1) (got {self.eval_fraction})",
        )


@dataclass(frozen=True)
class OutputSettings:
    """Where the run folder goes.

    Attributes
    ----------
    out_dir : str
        Run folder; empty means ``runs/<timestamp>`` under the working directory.
    resume : bool
        Continue the run in ``out_dir`` from its last complete round, after the
        aggregator stopped (``fedcare run --resume``).
    """

    out_dir: str = _setting("out-dir", "")
    resume: bool = _setting("resume", False)


_SECTIONS: dict[str, type[Any]] = {
    "federation": FederationSettings,
    "server_optimizer": ServerOptimizerSettings,
    "training": TrainingSettings,
    "privacy": PrivacySettings,
    "secure_aggregation": SecureAggregationSettings,
    "data": DataSettings,
    "output": OutputSettings,
}

SECAGG_MIN_HOSPITALS = 3
"""A federation needs 3: with two parties, each could subtract its own update from the sum."""

SECAGG_MIN_ROUND = 2
"""Flower's SecAgg+ needs 2 replies.

A round left with 2 lets each deduce the other's (DP) update.
"""


@dataclass(frozen=True)
class RunConfig:
    """The whole, resolved configuration of one federated run."""

    federation: FederationSettings = field(default_factory=FederationSettings)
    server_optimizer: ServerOptimizerSettings = field(default_factory=ServerOptimizerSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    secure_aggregation: SecureAggregationSettings = field(default_factory=SecureAggregationSettings)
    data: DataSettings = field(default_factory=DataSettings)
    output: OutputSettings = field(default_factory=OutputSettings)

    def __post_init__(self) -> None:
        hospitals = self.data.hospitals
        minimum = self.federation.min_hospitals
        _require(
            minimum <= hospitals,
            "min-hospitals",
            f"must be at most hospitals ({hospitals}) (got {minimum})",
        )
        _require(
            self.privacy.evaluation_rounds <= self.federation.rounds,
            "evaluation-rounds",
            f"must be at most num-server-rounds ({self.federation.rounds}) "
            f"(got {self.privacy.evaluation_rounds})",
        )
        if self.secure_aggregation.enabled:
            _require(
                self.federation.aggregation is AggregationName.FEDAVG,
                "aggregation",
                f"'{self.federation.aggregation}' must see each update, which secure "
                "aggregation hides; use fedavg, or turn secure aggregation off explicitly "
                "(the aggregator then sees every hospital's DP-noised update)",
            )
            _require(
                hospitals >= SECAGG_MIN_HOSPITALS,
                "hospitals",
                f"SecAgg+ needs at least {SECAGG_MIN_HOSPITALS} hospitals (got {hospitals}); "
                "add hospitals, or turn secure aggregation off explicitly",
            )
            _require(
                minimum >= SECAGG_MIN_ROUND,
                "min-hospitals",
                f"SecAgg+ cannot run a round with fewer than {SECAGG_MIN_ROUND} hospitals "
                f"(got {minimum})",
            )

    @classmethod
    def from_flat(cls, flat: Mapping[str, FlatValue]) -> RunConfig:
        """Parse and validate a flat kebab-case mapping (Flower's run config).

        Parameters
        ----------
        flat : Mapping[str, FlatValue]
            Any subset of :func:`config_keys`; missing keys take their defaults.

        Returns
        -------
        RunConfig
            The validated configuration.

        Raises
        ------
        ConfigError
            For an unknown key, a value of the wrong type, or one out of range.
        """
        known = set(config_keys())
        for key in flat:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(key, f"unknown setting{hint}")
        sections = {name: _parse_section(section, flat) for name, section in _SECTIONS.items()}
        return cls(**sections)

    def to_flat(self) -> dict[str, FlatValue]:
        """Return the configuration as Flower's flat kebab-case mapping."""
        flat: dict[str, FlatValue] = {}
        for name in _SECTIONS:
            section = getattr(self, name)
            for f in fields(section):
                value = getattr(section, f.name)
                flat[f.metadata["key"]] = value.value if isinstance(value, StrEnum) else value
        return flat

    def with_out_dir(self, out_dir: str) -> RunConfig:
        """Return a copy whose run folder is ``out_dir``."""
        return replace(self, output=replace(self.output, out_dir=out_dir))

    def evaluation_round_numbers(self) -> frozenset[int]:
        """Return the rounds in which hospitals evaluate.

        ``evaluation-rounds`` of them, evenly spread and ending with the last round
        (none when it is 0).
        """
        rounds, wanted = self.federation.rounds, self.privacy.evaluation_rounds
        return frozenset(math.ceil(rounds * k / wanted) for k in range(1, wanted + 1))

    def weakened_protections(self) -> list[str]:
        """Name every protection this configuration turns off (empty when all are on)."""
        weakened = []
        if not self.privacy.enabled:
            weakened.append("differential privacy is OFF: hospital updates carry no DP noise")
        if not self.secure_aggregation.enabled:
            weakened.append("secure aggregation is OFF: the aggregator sees each hospital's update")
        return weakened


def config_keys() -> list[str]:
    """Every run-config key fedcare understands, in declaration order."""
    return [f.metadata["key"] for section in _SECTIONS.values() for f in fields(section)]


def setting_key(section: type[Any], attribute: str) -> str:
    """Return the run-config key of ``section.attribute``, e.g. ``secure-aggregation``."""
    key: str = next(f.metadata["key"] for f in fields(section) if f.name == attribute)
    return key


def _parse_section(section: type[_Section], flat: Mapping[str, FlatValue]) -> _Section:
    kwargs = {
        f.name: _coerce(f.metadata["key"], flat[f.metadata["key"]], f.default)
        for f in fields(section)  # type: ignore[arg-type]
        if f.metadata["key"] in flat
    }
    return section(**kwargs)


def _coerce(key: str, value: FlatValue, default: Any) -> Any:
    """Check ``value`` against the type of ``default``; ints are accepted for floats."""
    if isinstance(default, StrEnum):
        choices = [member.value for member in type(default)]
        _require(value in choices, key, f"must be one of {', '.join(choices)} (got {value!r})")
        return type(default)(str(value))
    if isinstance(default, bool):
        _require(isinstance(value, bool), key, f"must be true or false (got {value!r})")
        return value
    if isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        _require(ok, key, f"must be an integer (got {value!r})")
        return value
    if isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _require(ok, key, f"must be a number (got {value!r})")
        return float(value)
    _require(isinstance(value, str), key, f"must be a string (got {value!r})")
    return value
