"""Missing values in a contract: what an empty cell means, per feature, and the inputs it adds.

Real hospital data has gaps, and a contract says what each feature's empty cells mean:

* ``reject`` (the default): the file is refused while any such cell is empty;
* ``drop-rows`` (tables): rows with such an empty cell are left out;
* ``impute`` (tables): the cell takes the feature's ``fill`` value; with
  ``indicator = true`` the model also gets an input ``NAME_missing``, 1 where the
  cell was empty, so it can tell a filled value from a measured one. A category's
  empty cell is no category (all its one-hot inputs 0) and takes no ``fill``;
* ``forward-fill`` (sequences, for the whole contract): within a stay an empty
  cell carries the feature's last observed value forward, and before the first
  observation takes ``fill``. Each feature adds two inputs, as GRU-D does (Che et
  al., Scientific Reports 2018): ``NAME_observed`` (1 where it was measured at
  that step) and ``NAME_since_observed`` (time steps since it was last measured,
  over ``max_length`` and capped at 1).

``fill`` is either a number written in the contract, public and the same at every
hospital, or ``"dp-mean"``: each hospital's differentially private mean of its
observed values within the feature's ``min`` and ``max``, booked in its privacy
ledger before it is used (:mod:`client.fill_values`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from fedcare.shared.contract.fields import FieldReader


class MissingPolicy(StrEnum):
    """What an empty cell of a feature (or of the label) means."""

    REJECT = "reject"
    DROP_ROWS = "drop-rows"
    IMPUTE = "impute"
    FORWARD_FILL = "forward-fill"

    @property
    def fills(self) -> bool:
        """Whether empty cells are filled (so reach the model) rather than refused or dropped."""
        return self in (MissingPolicy.IMPUTE, MissingPolicy.FORWARD_FILL)


class FillStatistic(StrEnum):
    """A fill value each hospital computes from its own data, under differential privacy."""

    DP_MEAN = "dp-mean"


Fill = float | FillStatistic
"""A feature's fill: a public number written in the contract, or a DP statistic."""

TABLE_POLICIES = (MissingPolicy.REJECT, MissingPolicy.DROP_ROWS, MissingPolicy.IMPUTE)
"""What a table contract's ``missing`` may say, at the top level or per feature."""

SEQUENCE_POLICIES = (MissingPolicy.REJECT, MissingPolicy.FORWARD_FILL)
"""What a sequence contract's ``missing`` may say (for the whole contract)."""

_FILL_HINT = (
    'write a number (public: the same at every hospital) or "dp-mean" (each hospital\'s '
    "differentially private mean of its observed values, booked in its privacy ledger)"
)


def indicator_name(feature: str) -> str:
    """Return the name of the input that is 1 where ``feature``'s cell was empty (tables)."""
    return f"{feature}_missing"


def observed_name(feature: str) -> str:
    """Return the name of the input that is 1 where ``feature`` was measured (sequences)."""
    return f"{feature}_observed"


def since_name(feature: str) -> str:
    """Return the name of the input holding the time since ``feature`` was measured (sequences)."""
    return f"{feature}_since_observed"


class ParsedFeature(Protocol):
    """What the missing-value fields are checked against: a feature as parsed so far."""

    @property
    def name(self) -> str:
        """Return the feature's column name."""
        ...

    @property
    def categories(self) -> tuple[str, ...]:
        """Return a categorical feature's values (empty for a numeric one)."""
        ...

    @property
    def minimum(self) -> float | None:
        """Return the lower end of a numeric feature's range, if any."""
        ...

    @property
    def maximum(self) -> float | None:
        """Return the upper end of a numeric feature's range, if any."""
        ...


class MissingFields(NamedTuple):
    """A feature's missing-value fields, as :class:`shared.contract.features.Feature` holds them."""

    missing: MissingPolicy
    fill: Fill | None = None
    indicator: bool = False


def parse_missing(
    fields: FieldReader, feature: ParsedFeature, table: dict[str, Any], default: MissingPolicy
) -> MissingFields:
    """Return a feature's missing-value policy, fill and indicator from its table.

    Parameters
    ----------
    fields : FieldReader
        The contract, for errors.
    feature : ParsedFeature
        The feature as parsed so far (name, range, categories).
    table : dict[str, Any]
        Its ``[features.NAME]`` table.
    default : MissingPolicy
        The contract's policy, which the feature's own ``missing`` may override.

    Raises
    ------
    ContractError
        Naming the feature's field at fault and the fix.
    """
    field = f"features.{feature.name}"
    policy = (
        _policy(fields, f"{field}.missing", table["missing"]) if "missing" in table else default
    )
    indicator = fields.value(table, "indicator", f"{field}.indicator", bool, False)
    if not policy.fills:
        for key in ("fill", "indicator"):
            if key in table:
                raise fields.fail(
                    f"{field}.{key}",
                    f'applies only where empty cells are filled (missing = "impute"); set '
                    f"missing for this feature, or remove {key}",
                )
        return MissingFields(policy)
    if feature.categories:
        if "fill" in table:
            raise fields.fail(
                f"{field}.fill",
                "an empty category cell becomes no category (every one-hot input 0) and "
                "takes no fill value; remove fill",
            )
        return MissingFields(policy, indicator=indicator)
    fill = _fill(fields, f"{field}.fill", table.get("fill"), feature)
    return MissingFields(policy, fill, indicator)


def _policy(fields: FieldReader, field: str, value: object) -> MissingPolicy:
    allowed = [policy.value for policy in TABLE_POLICIES]
    if not isinstance(value, str) or value not in allowed:
        raise fields.fail(field, f"must be one of {', '.join(allowed)}")
    return MissingPolicy(value)


def _fill(fields: FieldReader, field: str, value: object, feature: ParsedFeature) -> Fill:
    if value is None:
        raise fields.fail(field, f"is required where empty cells are filled: {_FILL_HINT}")
    if isinstance(value, str):
        if value != FillStatistic.DP_MEAN.value:
            raise fields.fail(field, f'must be a number or "dp-mean": {_FILL_HINT}')
        if feature.minimum is None or feature.maximum is None:
            raise fields.fail(
                field,
                '"dp-mean" needs the feature\'s min and max: they bound how much one patient '
                "can move the mean, which sets the noise; add both",
            )
        return FillStatistic.DP_MEAN
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fields.fail(field, f'must be a finite number or "dp-mean": {_FILL_HINT}')
    low = -math.inf if feature.minimum is None else feature.minimum
    high = math.inf if feature.maximum is None else feature.maximum
    if not low <= value <= high:
        raise fields.fail(field, "must lie within the feature's min and max")
    return float(value)


def check_input_names(fields: FieldReader, names: Iterable[str]) -> None:
    """Refuse a contract whose features give two model inputs the same name.

    An input fedcare adds (``NAME_missing``, ``NAME_observed``,
    ``NAME_since_observed``) may collide with a column of that name.

    Raises
    ------
    ContractError
        Naming the input and the fix.
    """
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise fields.fail(
            "features",
            f"two model inputs would be named '{repeated[0]}' (fedcare adds NAME_missing, "
            "NAME_observed and NAME_since_observed inputs for filled features); rename the "
            "column in the files and the contract",
        )
