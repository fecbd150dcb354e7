"""A hospital's own settings (``site.toml``), parsed once and validated.

The file is the hospital's, not the aggregator's: which data it trains on, under
which contract, on which device, with which credentials, and the privacy limits
it accepts. The part the ClientApp needs travels to it as Flower node config
(:meth:`SiteNode.to_node_config`); nothing in it ever leaves the hospital.

Example
-------
.. code-block:: toml

    [hospital]
    name = "st-mary"
    aggregator = "aggregator.example.org:8000"
    credentials = "credentials"     # own node key + ca.crt, bundle.toml from the operator
    data = "patients.csv"
    contract = "contract.toml"
    device = "auto"
    state = "fedcare-state"         # privacy ledger, audit log, Flower's files
    dataset = "st-mary"             # what the privacy budget is kept for (default: name)
    runtime-port = 9094

    [privacy]
    max-epsilon = 3.0
    delta = 1e-5
    require-secure-aggregation = true
    min-count = 10                  # fewest patients any metric sent out may describe
    min-participants = 3            # fewest hospitals (itself included) its update is summed with
    split-seed = 0                  # how this hospital splits its rows (never the run's seed)
    eval-fraction = 0.25            # share of its rows held out for its own evaluation
    min-batch-size = 16             # smallest DP-SGD batch size it accepts from a run

    [policy]                        # which runs it joins (see client.site_policy)
    max-rounds = 50
    require-approval = true
    approved = []                   # `fedcare hospital approve HASH` adds to it
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.client.site_policy import POLICY_TABLE, SitePolicy
from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.training import DeviceName
from fedcare.shared.errors import ConfigError
from fedcare.shared.keys import NodeConfigKey

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


MIN_PARTICIPANTS = 2
"""The lowest ``min-participants`` a hospital may set: SecAgg+ needs two. With two, each
of the pair can subtract its own update from the sum and see the other's (DP-noised) one;
the default, 3, keeps every sum to at least two others besides the hospital."""


class SiteConfigError(ConfigError):
    """``site.toml`` (or the node config built from it) is missing or invalid."""


@dataclass(frozen=True)
class SitePrivacy:
    """The privacy limits a hospital accepts for its data.

    Attributes
    ----------
    max_epsilon : float
        Most epsilon the hospital lets its data spend.
    delta : float
        Largest delta it accepts.
    require_secure_aggregation : bool
        Refuse to send any update outside SecAgg+.
    min_count : int
        Fewest patients an aggregate metric may describe before it may leave; an
        evaluation is refused unless every class (every reported group) has them.
    min_participants : int
        Fewest hospitals, itself included, that SecAgg+ must sum its update
        with: it refuses a SecAgg+ neighbourhood, a masking or an unmasking that
        involves fewer (:mod:`client.secure_aggregation`). The default 3 means a
        federation of three stops aggregating while one of them is away.
    split_seed : int
        Seed of its own train/evaluation split (a run's seed is never used).
    eval_fraction : float
        Share of its rows it holds out for its own evaluation.
    min_batch_size : int
        Smallest DP-SGD batch size it accepts; a run asking for less is refused.
    """

    max_epsilon: float = 3.0
    delta: float = 1e-5
    require_secure_aggregation: bool = True
    min_count: int = 10
    min_participants: int = 3
    split_seed: int = 0
    eval_fraction: float = 0.25
    min_batch_size: int = 16

    def __post_init__(self) -> None:
        if not (self.max_epsilon > 0 and math.isfinite(self.max_epsilon)):
            raise SiteConfigError(
                "privacy.max-epsilon", f"must be a finite number > 0 (got {self.max_epsilon})"
            )
        if not 0 < self.delta < 1:
            raise SiteConfigError("privacy.delta", f"must lie in (0, 1) (got {self.delta})")
        if self.min_count < 1:
            raise SiteConfigError("privacy.min-count", f"must be >= 1 (got {self.min_count})")
        if self.min_participants < MIN_PARTICIPANTS:
            raise SiteConfigError(
                "privacy.min-participants",
                f"must be >= {MIN_PARTICIPANTS}, the fewest SecAgg+ can sum "
                f"(got {self.min_participants})",
            )
        if not 0 < self.eval_fraction < 1:
            raise SiteConfigError(
                "privacy.eval-fraction", f"must lie in (0, 1) (got {self.eval_fraction})"
            )
        if self.min_batch_size < 1:
            raise SiteConfigError(
                "privacy.min-batch-size", f"must be >= 1 (got {self.min_batch_size})"
            )


@dataclass(frozen=True)
class SiteNode:
    """What the hospital's ClientApp needs to know, as Flower node config.

    Attributes
    ----------
    name : str
        The hospital's name in reports.
    data : Path
        Its CSV or Parquet file.
    contract : Path
        The data contract the file is checked against.
    device : DeviceName
        Where to train.
    state : Path
        Folder for the hospital's own records (privacy ledger, audit log).
    privacy : SitePrivacy
        Its privacy limits.
    dataset : str
        The label the privacy budget is also kept under. The ledger keys every
        release on the data's fingerprint (its rows and contract) *and* this
        label, and a release counts against both: renaming the label or the
        file leaves the fingerprint, changing the rows leaves the label. It
        defaults to the hospital's name (one budget for everything it holds:
        the cautious choice).
    """

    name: str
    data: Path
    contract: Path
    device: DeviceName
    state: Path
    privacy: SitePrivacy
    dataset: str = ""

    def __post_init__(self) -> None:
        if not self.dataset:
            object.__setattr__(self, "dataset", self.name)

    def to_node_config(self) -> dict[str, FlatValue]:
        """Flatten into Flower node config (absolute paths, kebab-case keys)."""
        return {
            NodeConfigKey.HOSPITAL_NAME.value: self.name,
            NodeConfigKey.DATA_PATH.value: str(self.data.resolve()),
            NodeConfigKey.CONTRACT_PATH.value: str(self.contract.resolve()),
            NodeConfigKey.DEVICE.value: self.device.value,
            NodeConfigKey.STATE_DIR.value: str(self.state.resolve()),
            NodeConfigKey.MAX_EPSILON.value: self.privacy.max_epsilon,
            NodeConfigKey.MAX_DELTA.value: self.privacy.delta,
            NodeConfigKey.REQUIRE_SECURE_AGGREGATION.value: self.privacy.require_secure_aggregation,
            NodeConfigKey.DATASET.value: self.dataset,
            NodeConfigKey.MIN_COUNT.value: self.privacy.min_count,
            NodeConfigKey.MIN_PARTICIPANTS.value: self.privacy.min_participants,
            NodeConfigKey.SPLIT_SEED.value: self.privacy.split_seed,
            NodeConfigKey.EVAL_FRACTION.value: self.privacy.eval_fraction,
            NodeConfigKey.MIN_BATCH_SIZE.value: self.privacy.min_batch_size,
        }

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> SiteNode:
        """Rebuild from Flower node config (inside the ClientApp).

        Raises
        ------
        SiteConfigError
            Naming the missing or malformed key.
        """

        def get(key: str, kind: type, default: Any = None) -> Any:
            value = node_config.get(key, default)
            if value is None:
                raise SiteConfigError(
                    key,
                    "missing from the node config; "
                    "start the hospital with `fedcare hospital start`",
                )
            try:
                return kind(value)
            except (TypeError, ValueError) as error:
                raise SiteConfigError(key, f"cannot be read as {kind.__name__}") from error

        return cls(
            name=get(NodeConfigKey.HOSPITAL_NAME, str),
            data=Path(get(NodeConfigKey.DATA_PATH, str)),
            contract=Path(get(NodeConfigKey.CONTRACT_PATH, str)),
            device=_device(NodeConfigKey.DEVICE, get(NodeConfigKey.DEVICE, str)),
            state=Path(get(NodeConfigKey.STATE_DIR, str)),
            privacy=SitePrivacy(
                max_epsilon=get(NodeConfigKey.MAX_EPSILON, float),
                delta=get(NodeConfigKey.MAX_DELTA, float),
                require_secure_aggregation=get(NodeConfigKey.REQUIRE_SECURE_AGGREGATION, bool),
                min_count=get(NodeConfigKey.MIN_COUNT, int),
                min_participants=get(
                    NodeConfigKey.MIN_PARTICIPANTS, int, SitePrivacy.min_participants
                ),
                split_seed=get(NodeConfigKey.SPLIT_SEED, int, SitePrivacy.split_seed),
                eval_fraction=get(NodeConfigKey.EVAL_FRACTION, float, SitePrivacy.eval_fraction),
                min_batch_size=get(NodeConfigKey.MIN_BATCH_SIZE, int, SitePrivacy.min_batch_size),
            ),
            dataset=get(NodeConfigKey.DATASET, str),
        )


@dataclass(frozen=True)
class SiteSettings:
    """All of ``site.toml``.

    Attributes
    ----------
    node : SiteNode
        What the ClientApp gets.
    aggregator : str
        ``host:port`` of the aggregator.
    credentials : Path
        The hospital's credentials folder: its own node key pair
        (``fedcare hospital keygen``) and the ``ca.crt`` and ``bundle.toml`` the
        operator sent back for its public key.
    runtime_port : int
        Loopback port of the SuperNode's local runtime API.
    source : Path
        The file these settings came from.
    policy : SitePolicy
        Which runs the hospital takes part in.
    """

    node: SiteNode
    aggregator: str
    credentials: Path
    runtime_port: int
    source: Path
    policy: SitePolicy = SitePolicy()

    @classmethod
    def load(cls, path: Path) -> SiteSettings:
        """Read and validate ``site.toml``; relative paths are relative to its folder.

        Raises
        ------
        SiteConfigError
            Naming the file and the field.
        """
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SiteConfigError("site.toml", f"{path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise SiteConfigError("site.toml", f"{path} is not valid TOML: {error}") from None
        return _parse(raw, path)


def _parse(raw: dict[str, Any], path: Path) -> SiteSettings:
    unknown = set(raw) - {"hospital", "privacy", POLICY_TABLE}
    if unknown:
        raise SiteConfigError(
            sorted(unknown)[0],
            f"unknown section in {path}; expected [hospital], [privacy] and [{POLICY_TABLE}]",
        )
    hospital = _table(raw, "hospital", path)
    privacy = _table(raw, "privacy", path, required=False)
    base = path.parent
    name = _field(hospital, "name", str, path)
    if not _NAME.match(name):
        raise SiteConfigError(
            "hospital.name", f"in {path} must be 1-63 letters, digits, '-' or '_'"
        )
    node = SiteNode(
        name=name,
        data=base / _field(hospital, "data", str, path),
        contract=base / _field(hospital, "contract", str, path),
        device=_device("hospital.device", hospital.get("device", DeviceName.AUTO.value)),
        state=base / hospital.get("state", "fedcare-state"),
        dataset=str(hospital.get("dataset", "")),
        privacy=SitePrivacy(
            max_epsilon=float(privacy.get("max-epsilon", SitePrivacy.max_epsilon)),
            delta=float(privacy.get("delta", SitePrivacy.delta)),
            require_secure_aggregation=bool(
                privacy.get("require-secure-aggregation", SitePrivacy.require_secure_aggregation)
            ),
            min_count=int(privacy.get("min-count", SitePrivacy.min_count)),
            min_participants=int(privacy.get("min-participants", SitePrivacy.min_participants)),
            split_seed=int(privacy.get("split-seed", SitePrivacy.split_seed)),
            eval_fraction=float(privacy.get("eval-fraction", SitePrivacy.eval_fraction)),
            min_batch_size=int(privacy.get("min-batch-size", SitePrivacy.min_batch_size)),
        ),
    )
    return SiteSettings(
        node=node,
        aggregator=_field(hospital, "aggregator", str, path),
        credentials=base / _field(hospital, "credentials", str, path),
        runtime_port=int(hospital.get("runtime-port", 9094)),
        source=path,
        policy=SitePolicy.from_table(_table(raw, POLICY_TABLE, path, required=False), path),
    )


def _table(raw: dict[str, Any], name: str, path: Path, *, required: bool = True) -> dict[str, Any]:
    table = raw.get(name, None if required else {})
    if not isinstance(table, dict):
        raise SiteConfigError(name, f"{path} needs a [{name}] table")
    return table


def _field(table: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    value = table.get(key)
    if not isinstance(value, kind):
        raise SiteConfigError(f"hospital.{key}", f"{path} must set {key} (a {kind.__name__})")
    return value


def _device(key: str, value: str) -> DeviceName:
    choices = [d.value for d in DeviceName]
    if value not in choices:
        raise SiteConfigError(key, f"must be one of {', '.join(choices)} (got {value!r})")
    return DeviceName(value)
