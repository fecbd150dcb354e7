"""Submitting a training run to a running aggregator with Flower's ``flwr run``.

The submitted Flower app (FAB) carries configuration only: its ``pyproject.toml``
names fedcare's installed ServerApp and ClientApp and holds the resolved run
config, contract included. Every hospital therefore runs the fedcare code it has
installed and reviewed, never code shipped to it with a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from fedcare.server.superlink import CONNECTION
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import ConfigError

APP_NAME = "fedcare-run"


def check_submission(config: RunConfig, *, contract_source: str) -> None:
    """Check, before anything is sent, what the aggregator will need to start the run.

    The contract must parse (errors name ``contract_source``), the model must
    read its inputs, and an ``initial-model`` file must exist.

    Raises
    ------
    shared.errors.FedcareError
        One sentence naming the field or setting at fault.
    """
    # Imported here: it builds on torch, and submitting stays quick to start.
    from fedcare.server.reference import contract_reference

    contract_reference(config.data.contract, config.training, source=contract_source)
    initial = config.training.initial_model
    if initial and not Path(initial).is_file():
        raise ConfigError("initial-model", f"{initial} is not a file the aggregator can read")


def app_pyproject(config: RunConfig, version: str) -> dict[str, Any]:
    """Return the ``pyproject.toml`` of the configuration-only Flower app for one run."""
    return {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": APP_NAME,
            "version": version,
            "description": (
                "A fedcare training run "
                "(configuration only; hospitals run their installed fedcare)."
            ),
            "license": "Apache-2.0",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedcare",
                    "components": {
                        "serverapp": "fedcare.server.server_app:app",
                        "clientapp": "fedcare.client.client_app:app",
                    },
                    "config": config.to_flat(),
                }
            }
        },
    }


def write_app(folder: Path, config: RunConfig, version: str) -> Path:
    """Write the run's app folder (a single ``pyproject.toml``) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        tomli_w.dumps(app_pyproject(config, version)), encoding="utf-8"
    )
    return folder


def flwr_run_command(executable: str, app: Path) -> list[str]:
    """``flwr run`` against the aggregator's connection, streaming the logs."""
    return [executable, "run", str(app), CONNECTION, "--stream"]
