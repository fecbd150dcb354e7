"""Which runs a hospital lets its data join: the ``[policy]`` table of ``site.toml``.

The aggregator proposes a run; the hospital decides. Its policy limits what a run
may ask for (models, epsilon per run, rounds, local epochs, evaluation), and a
hospital that wants to see every run first sets ``require-approval`` and lists the
configuration hashes it approved (``fedcare run`` prints a run's hash;
``fedcare hospital approve HASH`` adds one to this list). The largest delta a run
may use is ``[privacy] delta``, and the most epsilon over every run ``[privacy]
max-epsilon`` (:mod:`client.policy` checks both).

Example
-------
.. code-block:: toml

    [policy]
    models = ["logreg", "mlp"]      # default: every model installed here (built-in or plugin)
    max-epsilon-per-run = 1.0       # default: [privacy] max-epsilon
    max-rounds = 50
    max-local-epochs = 5
    allow-evaluation = true
    max-evaluations = 50            # evaluation requests answered per run
    require-approval = true
    approved = ["3f5c...e1"]        # run-configuration hashes
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.shared.errors import ConfigError
from fedcare.shared.run_identity import is_run_config_hash

POLICY_TABLE = "policy"
APPROVED_KEY = "approved"


class PolicyConfigError(ConfigError):
    """The ``[policy]`` table of ``site.toml`` is invalid."""


@dataclass(frozen=True)
class SitePolicy:
    """What a run must stay within for this hospital to take part.

    Attributes
    ----------
    models : frozenset[str] | None
        Models the hospital trains: built-in names or installed plugins' names;
        ``None`` (the default) allows every model installed here.
    max_epsilon_per_run : float | None
        Most epsilon one run may ask for; ``None``: only ``[privacy] max-epsilon``.
    max_rounds : int | None
        Most rounds a run may have.
    max_local_epochs : int | None
        Most local epochs per round.
    allow_evaluation : bool
        Whether the hospital scores global models on its data at all.
    max_evaluations : int | None
        Most evaluation requests it answers in one run.
    require_approval : bool
        Take part only in runs whose configuration hash is in ``approved``.
    approved : frozenset[str]
        Approved run-configuration hashes.
    """

    models: frozenset[str] | None = None
    max_epsilon_per_run: float | None = None
    max_rounds: int | None = None
    max_local_epochs: int | None = None
    allow_evaluation: bool = True
    max_evaluations: int | None = None
    require_approval: bool = False
    approved: frozenset[str] = frozenset()

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: Path) -> SitePolicy:
        """Parse the ``[policy]`` table of ``source``.

        Raises
        ------
        PolicyConfigError
            Naming the key, the file and what it accepts.
        """
        known = {
            "models",
            "max-epsilon-per-run",
            "max-rounds",
            "max-local-epochs",
            "allow-evaluation",
            "max-evaluations",
            "require-approval",
            APPROVED_KEY,
        }
        for key in table:
            if key not in known:
                raise PolicyConfigError(
                    f"policy.{key}", f"unknown in {source}; known: {', '.join(sorted(known))}"
                )
        return cls(
            models=_models(table.get("models"), source),
            max_epsilon_per_run=_epsilon(table.get("max-epsilon-per-run"), source),
            max_rounds=_count(table, "max-rounds", source),
            max_local_epochs=_count(table, "max-local-epochs", source),
            allow_evaluation=_flag(table, "allow-evaluation", True, source),
            max_evaluations=_count(table, "max-evaluations", source, minimum=0),
            require_approval=_flag(table, "require-approval", False, source),
            approved=_hashes(table.get(APPROVED_KEY, []), source),
        )


def _models(value: object, source: Path) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyConfigError("policy.models", f"in {source} must be a list of model names")
    return frozenset(value)


def _epsilon(value: object, source: Path) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise PolicyConfigError("policy.max-epsilon-per-run", f"in {source} must be a number > 0")
    if not math.isfinite(value):
        raise PolicyConfigError("policy.max-epsilon-per-run", f"in {source} must be finite")
    return float(value)


def _count(table: Mapping[str, Any], key: str, source: Path, *, minimum: int = 1) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PolicyConfigError(f"policy.{key}", f"in {source} must be an integer >= {minimum}")
    return value


def _flag(table: Mapping[str, Any], key: str, default: bool, source: Path) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise PolicyConfigError(f"policy.{key}", f"in {source} must be true or false")
    return value


def _hashes(value: object, source: Path) -> frozenset[str]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and is_run_config_hash(v) for v in value
    ):
        raise PolicyConfigError(
            f"policy.{APPROVED_KEY}",
            f"in {source} must be a list of run-configuration hashes (64 hex digits each, "
            "as `fedcare run` prints them)",
        )
    return frozenset(value)


def approve_run(site_toml: Path, config_hash: str) -> bool:
    """Add ``config_hash`` to the approved list in ``site_toml``, keeping its comments.

    Returns
    -------
    bool
        ``False`` if it was already approved (the file is left as it was).

    Raises
    ------
    PolicyConfigError
        If ``config_hash`` is not a run-configuration hash.
    """
    import tomlkit  # only this command edits the file

    from fedcare.shared.private_files import write_private

    if not is_run_config_hash(config_hash):
        raise PolicyConfigError(
            "HASH", "must be a run-configuration hash: 64 hex digits, as `fedcare run` prints it"
        )
    document = tomlkit.parse(site_toml.read_text(encoding="utf-8"))
    if POLICY_TABLE not in document:
        document[POLICY_TABLE] = tomlkit.table()
    policy = document[POLICY_TABLE]
    approved = policy.setdefault(APPROVED_KEY, tomlkit.array())
    if config_hash in approved:
        return False
    approved.append(config_hash)
    approved.multiline(True)
    write_private(site_toml, tomlkit.dumps(document).encode("utf-8"))
    return True
