"""Keys of everything that crosses the wire between aggregator and hospitals, defined once.

Run-config keys live with their settings in :mod:`shared.config`. Everything is
kebab-case, as in Flower. This module imports nothing heavy: the ClientApp's
egress guard reads it in processes that never import torch.
"""

import re
from enum import StrEnum

NOISY_SUM_PREFIX = "noisy-sum-"
"""Reply keys ``noisy-sum-000``, ``noisy-sum-001``, ...: a hospital's noisy evaluation sums."""
NOISY_SUM_KEY = re.compile(r"noisy-sum-\d{3}")


def noisy_sum_key(index: int) -> str:
    """Return the reply key of the ``index``-th noisy evaluation sum."""
    return f"{NOISY_SUM_PREFIX}{index:03d}"


class InstructionKey(StrEnum):
    """Keys the aggregator adds to the run config it sends with every instruction."""

    SERVER_ROUND = "server-round"


class ReplyKey(StrEnum):
    """Keys of the aggregate scalars a hospital sends back (never per-patient values)."""

    HOSPITAL = "hospital"
    EPSILON = "epsilon"
    """Epsilon of everything this run has released from the hospital's data (all kinds)."""
    TRAINING_EPSILON = "training-epsilon"
    """Epsilon of this run's model updates alone."""
    EVALUATION_EPSILON = "evaluation-epsilon"
    """Epsilon of this run's evaluation releases alone."""
    DATASET_EPSILON = "dataset-epsilon"
    """Epsilon of every release from the dataset, over all runs."""
    DELTA = "delta"
    NOISE_MULTIPLIER = "noise-multiplier"
    SAMPLE_RATE = "sample-rate"
    STEPS = "steps"
    TRAIN_LOSS = "train-loss"
    LOSS = "loss"


class NodeConfigKey(StrEnum):
    """Keys of a SuperNode's node config that fedcare reads."""

    PARTITION_ID = "partition-id"
    NUM_PARTITIONS = "num-partitions"
    HOSPITAL_NAME = "hospital-name"
    DATA_PATH = "data-path"
    CONTRACT_PATH = "contract-path"
    DEVICE = "device"
    STATE_DIR = "state-dir"
    MAX_EPSILON = "max-epsilon"
    MAX_DELTA = "max-delta"
    REQUIRE_SECURE_AGGREGATION = "require-secure-aggregation"
    DATASET = "dataset"
    MIN_COUNT = "min-count"
    SPLIT_SEED = "split-seed"
    EVAL_FRACTION = "eval-fraction"
    MIN_BATCH_SIZE = "min-batch-size"
    MIN_PARTICIPANTS = "min-participants"


class StateKey(StrEnum):
    """Keys of what a hospital keeps in Flower's per-run node state between rounds."""

    PRIVACY_PLAN = "fedcare-privacy-plan"
    PLAN = "plan"
    SECAGG_FLOOR = "fedcare-secagg-floor"
    """What the hospital accepted in this round's SecAgg+ setup (its neighbourhood)."""
    NEIGHBOURS = "neighbours"


class MetricName(StrEnum):
    """Names of every metric fedcare reports (the keys of every metric map, as plain strings)."""

    AUROC = "auroc"
    ACCURACY = "accuracy"
    SENSITIVITY = "sensitivity"
    SPECIFICITY = "specificity"
    F1 = "f1"
    BRIER = "brier"
    MAE = "mae"
    RMSE = "rmse"
    R2 = "r2"
    C_INDEX = "c-index"
    RECONSTRUCTION_MSE = "reconstruction-mse"
    RECONSTRUCTION_MAE = "reconstruction-mae"
    HIT_RATE = "hit-rate"
    """Hit-rate@5: share of patients whose held-out response ranks in the top 5."""
    NDCG = "ndcg"
    """NDCG@5: normalised discounted cumulative gain of the held-out response in the top 5."""


PERSONALISED_PREFIX = "personalised-"
"""Prefix of a hospital's metrics of its personalised (locally fine-tuned) model."""

PERSONALISED_METRICS = frozenset(
    f"{PERSONALISED_PREFIX}{name}" for name in (*MetricName, ReplyKey.LOSS)
)
"""Every key a personalised evaluation adds to a hospital's reply (metrics, never sums)."""
