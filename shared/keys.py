"""Keys of everything that crosses the wire between aggregator and hospitals, defined once.

Run-config keys live with their settings in :mod:`shared.config`; metric names in
:class:`shared.metrics.MetricName`. Everything is kebab-case, as in Flower.
"""

from enum import StrEnum


class InstructionKey(StrEnum):
    """Keys the aggregator adds to the run config it sends with every instruction."""

    SERVER_ROUND = "server-round"


class ReplyKey(StrEnum):
    """Keys of the aggregate scalars a hospital sends back (never per-patient values)."""

    HOSPITAL = "hospital"
    EPSILON = "epsilon"
    DATASET_EPSILON = "dataset-epsilon"
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


class StateKey(StrEnum):
    """Keys of what a hospital keeps in Flower's per-run node state between rounds."""

    PRIVACY_PLAN = "fedcare-privacy-plan"
    PLAN = "plan"
