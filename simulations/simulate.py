"""Simulate a whole federation on this machine with Flower's Ray simulation engine.

fedcare starts Ray itself, with Flower's own settings plus what a quiet, lean run
needs, and then hands over to Flower's ``run_simulation``, which uses the running
Ray instance (Flower starts one only when none is running) and shuts it down at
the end. One Ray actor per CPU core (``actors``) runs the virtual hospitals in
turn; an actor keeps what a hospital prepared (its data, its DP calibration) for
the next message of any hospital of the run it serves.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedcare.server.report import SUMMARY
from fedcare.server.run_directory import LOG_FILE, check_run_path, default_run_path
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import DeviceName
from fedcare.shared.errors import ConfigError, FedcareError
from fedcare.shared.models import check_model_input
from fedcare.simulations.builtin_data import BuiltinData
from fedcare.simulations.federation import build_federation
from fedcare.simulations.own_data import OwnData
from fedcare.simulations.run_log import RUN_LOG_ENV, RunLog, log_worker_to_run_file

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

logger = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 256 * 2**20
"""Ray's shared object store. Messages are model-sized (kilobytes to a few MB); Ray's
default reserves 30% of the machine's memory for it."""


class SimulationError(FedcareError):
    """The simulation stopped: the message says why and where the full log is."""


@dataclass(frozen=True)
class SimulationResources:
    """How Flower's Ray backend shares this machine among the virtual hospitals.

    Attributes
    ----------
    cpus : int
        CPU cores Ray may use.
    actors : int
        Virtual hospitals served at once: Ray actors, each a process that
        imports torch once and keeps its caches across messages.
    gpus : int
        GPUs Ray may use (0 on the CPU).
    """

    cpus: int
    actors: int
    gpus: int = 0

    @classmethod
    def for_machine(cls, config: RunConfig, actors: int | None = None) -> SimulationResources:
        """One actor per CPU core, or ``actors``; a GPU when the run's device asks for one.

        Raises
        ------
        FedcareError
            If ``actors`` is below 1.
        """
        cpus = os.cpu_count() or 1
        if actors is not None and actors < 1:
            raise FedcareError(f"--actors must be at least 1 (got {actors})")
        gpus = 1 if _uses_gpu(config) else 0
        return cls(cpus=cpus, actors=actors or cpus, gpus=gpus)

    @property
    def threads_per_actor(self) -> int:
        """CPU threads each actor's torch may use: its whole cores, at least one."""
        return max(1, self.cpus // self.actors)

    def backend_config(self) -> dict[str, Any]:
        """Flower's backend config: each actor's share of the CPUs (and GPU)."""
        return {
            "client_resources": {
                "num_cpus": _share(self.cpus, self.actors),
                "num_gpus": _share(self.gpus, self.actors),
            },
            "init_args": self.ray_init_args(),
        }

    def ray_init_args(self) -> dict[str, Any]:
        """``ray.init`` arguments: this machine's resources, a small object store, no dashboard."""
        return {
            "num_cpus": self.cpus,
            "num_gpus": self.gpus,
            "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES,
            "logging_level": "WARNING",
        }


def _share(total: int, actors: int) -> float:
    """Return each actor's share of ``total``, rounded down to Ray's precision (1e-4).

    Rounded down so that Flower's pool sizing (``int(total / share)``) counts
    exactly ``actors``.
    """
    return math.floor(total / actors * 10_000) / 10_000


def _uses_gpu(config: RunConfig) -> bool:
    if config.training.device is DeviceName.CPU:
        return False
    import torch  # heavy: only to ask for a GPU

    return torch.cuda.is_available()


def backend_config(config: RunConfig) -> dict[str, Any]:
    """Flower's backend config for ``config`` on this machine (for ``run_simulation``)."""
    return SimulationResources.for_machine(config).backend_config()


def simulate(
    config: RunConfig,
    data: OwnData | None = None,
    *,
    verbose: bool = False,
    actors: int | None = None,
    client_app: ClientApp | None = None,
) -> dict[str, Any]:
    """Run the federation ``config`` describes, one virtual hospital per SuperNode.

    Its hospitals share out the built-in dataset, or each reads one of the
    user's own files (``data``, :mod:`simulations.own_data`). Everything that
    can be checked is checked before Ray starts: the run folder is free, every
    hospital gets enough data, and the model reads the data's inputs. Nothing
    is written on a failed start. Every log line of the run goes to
    ``<run folder>/fedcare.log``; with ``verbose`` Flower's and Ray's lines
    also reach the console.

    Parameters
    ----------
    config : RunConfig
        The run.
    data : OwnData | None
        The user's own files, one per hospital (default: the built-in dataset).
    verbose : bool
        Show Flower's and Ray's log lines (including the virtual hospitals').
    actors : int | None
        Hospitals served at once (default: one per CPU core).
    client_app : ClientApp | None
        The hospitals' app (default: fedcare's).

    Returns
    -------
    dict[str, Any]
        The run summary (``summary.json``).

    Raises
    ------
    shared.errors.FedcareError
        If a check fails.
    SimulationError
        If the simulation stopped with an error, or before writing its report; it
        names the log file.
    """
    if not config.output.out_dir:
        config = config.with_out_dir(str(default_run_path()))
    run_path = Path(config.output.out_dir)
    if not config.output.resume:
        check_run_path(run_path)
    _check_data(config, data)
    resources = SimulationResources.for_machine(config, actors)
    log_path = run_path / LOG_FILE
    # Imported before the log is routed: importing Flower gives its logger the console
    # handler that a quiet run holds back.
    from flwr.simulation import run_simulation

    with RunLog(log_path, echo=verbose):
        logger.info(
            "simulating %s hospitals (%s at a time); run folder %s",
            config.data.hospitals,
            resources.actors,
            run_path,
        )
        try:
            _start_ray(resources, log_path, verbose=verbose)
            _run(run_simulation, config, resources, data=data, client_app=client_app)
        except Exception as error:
            logger.info("the simulation stopped", exc_info=True)
            raise SimulationError(
                f"the simulation stopped: {type(error).__name__}: {error} (full log: {log_path})"
            ) from error
    if not (run_path / SUMMARY).is_file():
        raise SimulationError(
            f"the simulation stopped before writing its report (full log: {log_path})"
        )
    summary: dict[str, Any] = json.loads((run_path / SUMMARY).read_text(encoding="utf-8"))
    return summary


def _run(
    run_simulation: Callable[..., None],
    config: RunConfig,
    resources: SimulationResources,
    *,
    data: OwnData | None,
    client_app: ClientApp | None,
) -> None:
    # Imported here: the apps import torch, heavy to import.
    import torch
    from threadpoolctl import threadpool_limits

    from fedcare.client.client_app import make_client_app
    from fedcare.server.server_app import make_server_app

    source: OwnData | BuiltinData = data if data is not None else BuiltinData()

    # One BLAS thread and one torch thread in this process: the actors have the cores.
    # The server thread once hung spinning in a BLAS call beside Ray and torch, and
    # torch's two threads made each step of the baselines' training wait on the other
    # (ten times slower on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            run_simulation(
                server_app=make_server_app(config, source.reference),
                client_app=client_app or make_client_app(source),
                num_supernodes=config.data.hospitals,
                backend_config=resources.backend_config(),
            )
    finally:
        torch.set_num_threads(threads)


def _start_ray(resources: SimulationResources, log_path: Path, *, verbose: bool) -> None:
    """Start Ray for Flower, with the workers' log lines going to the run's log file.

    Ray's workers get this interpreter's import path, as Flower gives them, so
    they import exactly what the driver imports.
    """
    import ray

    # Keep Ray from rewriting CUDA_VISIBLE_DEVICES for CPU-only actors (and warning about it).
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if ray.is_initialized():
        ray.shutdown()
    import_path = os.pathsep.join([*sys.path, os.environ.get("PYTHONPATH", "")])
    ray.init(
        **resources.ray_init_args(),
        log_to_driver=verbose,
        configure_logging=verbose,
        runtime_env={
            "env_vars": {
                "PYTHONPATH": import_path,
                RUN_LOG_ENV: str(log_path.resolve()),
                # torch's threads per actor: its share of the cores. With more, the
                # threads of all actors wait on each other (a step took ten times longer).
                "OMP_NUM_THREADS": str(resources.threads_per_actor),
            },
            "worker_process_setup_hook": prepare_hospital_worker,
        },
    )


def prepare_hospital_worker() -> None:
    """Ready a Ray worker for virtual hospitals as it starts, while the aggregator starts.

    Its log lines go to the run's log file, and it imports what every hospital
    message needs (torch, Opacus, fedcare's hospital code) and creates one
    optimizer, whose first creation imports torch's compiler stack: seconds that
    would otherwise fall into the first round.
    """
    log_worker_to_run_file()
    import torch

    import fedcare.client.session  # noqa: F401 - imported for its import time

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


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
