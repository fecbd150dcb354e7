"""Simulate a whole federation on this machine with Flower's Ray simulation engine."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from fedcare.server.report import SUMMARY
from fedcare.server.run_directory import LOG_FILE, check_run_path, default_run_path
from fedcare.shared.config import DeviceName, RunConfig
from fedcare.shared.errors import ConfigError, FedcareError
from fedcare.shared.models import check_model_input
from fedcare.simulations.federation import build_federation
from fedcare.simulations.own_data import OwnData

logger = logging.getLogger(__name__)


def backend_config(config: RunConfig) -> dict[str, Any]:
    """Ray resources: one CPU per virtual hospital, a GPU share when one is used."""
    cpus = os.cpu_count() or 1
    use_gpu = config.training.device is not DeviceName.CPU and torch.cuda.is_available()
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 1.0 / cpus if use_gpu else 0.0},
        "init_args": {"num_cpus": cpus, "num_gpus": 1 if use_gpu else 0, "logging_level": "ERROR"},
    }


def simulate(config: RunConfig, data: OwnData | None = None) -> dict[str, Any]:
    """Run the federation ``config`` describes, one virtual hospital per SuperNode.

    Its hospitals share out the built-in dataset, or each reads one of the
    user's own files (``data``, :mod:`simulations.own_data`). Everything that
    can be checked is checked before Ray starts: the run folder is free, every
    hospital gets enough data, and the model reads the data's inputs. Nothing
    is written on a failed start.

    Returns
    -------
    dict[str, Any]
        The run summary (``summary.json``).

    Raises
    ------
    shared.errors.FedcareError
        If a check fails, or the run stopped before writing its report.
    """
    # Imported here: Flower's simulation stack (Ray) is heavy to import.
    from flwr.simulation import run_simulation

    from fedcare.client.client_app import make_client_app
    from fedcare.server.server_app import make_server_app

    if not config.output.out_dir:
        config = config.with_out_dir(str(default_run_path()))
    # Keep Ray from rewriting CUDA_VISIBLE_DEVICES for CPU-only actors (and warning about it).
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    run_path = Path(config.output.out_dir)
    if not config.output.resume:
        check_run_path(run_path)
    _check_data(config, data)
    logger.info("simulating %s hospitals; run folder %s", config.data.hospitals, run_path)
    # One BLAS thread in this process: its server thread once hung spinning in a BLAS
    # call beside Ray and torch; the heavy work runs in torch and the Ray actors anyway.
    with threadpool_limits(limits=1, user_api="blas"):
        run_simulation(
            server_app=make_server_app(config, data.reference if data is not None else None),
            client_app=make_client_app(data),
            num_supernodes=config.data.hospitals,
            backend_config=backend_config(config),  # type: ignore[arg-type]
        )
    summary = run_path / SUMMARY
    if not summary.is_file():
        log = run_path / LOG_FILE
        details = f"; details in {log}" if log.is_file() else ""
        raise FedcareError(f"the simulation stopped before writing its report (see above){details}")
    report: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8"))
    return report


def _check_data(config: RunConfig, data: OwnData | None) -> None:
    """Check the hospitals' data and that the model reads it, before anything starts.

    Raises
    ------
    shared.errors.FedcareError
        Naming the file, the setting or the model at fault.
    """
    if data is not None:
        data.check(config)
        return
    if config.data.contract:
        raise ConfigError(
            "contract",
            "this run simulated hospitals' own files; give the same --contract and --data "
            "options again to continue it",
        )
    training = config.training
    kind = build_federation(config.data).schema.kind
    check_model_input(training.model, kind, training.model_version)
