"""A bare Flower 1.41 app doing a fedcare round's exchanges, with Flower's default processes.

The deployment benchmark compares fedcare against it: the same three hospitals'
worth of logistic regression (in torch, as a typical app), the same legacy FedAvg
with Flower's SecAgg+ workflow (or without), the same train and evaluate
exchanges per round, on a SuperLink and three SuperNodes on 127.0.0.1, all with
Flower's defaults: one ``flwr-clientapp`` process per message, started by the
SuperNode's own SuperExec, and Flower's grid polling replies every 3 s. It runs
without TLS (fedcare's federation has TLS and node authentication), which only
favours the bare app. Its ServerApp writes the time of every exchange, like
fedcare's run record, to a JSON file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomli_w

from fedcare.shared.flower_process import flower_environment, flower_executable, port_open
from fedcare.simulations.local_deployment import Processes, free_port, wait_for

PACKAGE = "bareflower"

SERVER_APP = """
import json, time
from pathlib import Path
import numpy as np
from flwr.common import ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

TIMES = {}

def note(server_round, stage, seconds):
    stages = TIMES.setdefault(str(server_round), {})
    stages[stage] = stages.get(stage, 0.0) + seconds

class TimedGrid(Grid):
    def __init__(self, grid):
        self._grid = grid
    def set_run(self, run):
        self._grid.set_run(run)
    @property
    def run(self):
        return self._grid.run
    def create_message(self, *args, **kwargs):
        return self._grid.create_message(*args, **kwargs)
    def get_node_ids(self):
        return self._grid.get_node_ids()
    def push_messages(self, messages):
        return self._grid.push_messages(messages)
    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)
    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        started = time.monotonic()
        replies = self._grid.send_and_receive(messages, timeout=timeout)
        first = messages[0]
        configs = first.content.config_records.get("secaggplus_configs")
        stage = str(configs["stage"]) if configs is not None else str(first.metadata.message_type)
        note(first.metadata.group_id, stage, time.monotonic() - started)
        return replies

class TimedFedAvg(FedAvg):
    def configure_fit(self, server_round, parameters, client_manager):
        self.round_started = started = time.monotonic()
        result = super().configure_fit(server_round, parameters, client_manager)
        note(server_round, "wait-train", time.monotonic() - started)
        return result
    def configure_evaluate(self, server_round, parameters, client_manager):
        started = time.monotonic()
        result = super().configure_evaluate(server_round, parameters, client_manager)
        note(server_round, "wait-evaluate", time.monotonic() - started)
        return result
    def aggregate_evaluate(self, server_round, results, failures):
        result = super().aggregate_evaluate(server_round, results, failures)
        note(server_round, "round", time.monotonic() - self.round_started)
        return result

app = ServerApp()

@app.main()
def main(grid, context):
    config = context.run_config
    hospitals = int(config["hospitals"])
    initial = [np.zeros((1, 30), np.float32), np.zeros(1, np.float32)]
    strategy = TimedFedAvg(
        fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=hospitals,
        min_evaluate_clients=hospitals, min_available_clients=hospitals,
        initial_parameters=ndarrays_to_parameters(initial),
    )
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=int(config["num-server-rounds"])),
        strategy=strategy,
    )
    fit = None
    if config["secagg"]:
        fit = SecAggPlusWorkflow(num_shares=hospitals, reconstruction_threshold=2)
    DefaultWorkflow(fit_workflow=fit)(TimedGrid(grid), legacy)
    Path(str(config["timing-file"])).write_text(json.dumps(TIMES))
"""

CLIENT_APP = """
import numpy as np
import torch
from torch.nn.functional import binary_cross_entropy_with_logits as bce
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

def data(partition):
    rng = np.random.default_rng(partition)
    x = rng.normal(size=(150, 30)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)

class Hospital(NumPyClient):
    def __init__(self, partition):
        self.x, self.y = data(partition)
        self.model = torch.nn.Linear(30, 1)
    def _set(self, parameters):
        state = dict(zip(self.model.state_dict(), map(torch.from_numpy, parameters)))
        self.model.load_state_dict(state)
    def _loss(self):
        return bce(self.model(self.x)[:, 0], self.y)
    def fit(self, parameters, config):
        self._set(parameters)
        optimizer = torch.optim.SGD(self.model.parameters(), lr=0.5)
        for _ in range(2):
            for start in range(0, len(self.x), 32):
                optimizer.zero_grad()
                xb, yb = self.x[start:start + 32], self.y[start:start + 32]
                bce(self.model(xb)[:, 0], yb).backward()
                optimizer.step()
        return [p.detach().numpy() for p in self.model.state_dict().values()], len(self.x), {}
    def evaluate(self, parameters, config):
        self._set(parameters)
        with torch.no_grad():
            return float(self._loss()), len(self.x), {}

def client_fn(context):
    return Hospital(int(context.node_config["partition-id"])).to_client()

app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
"""


def write_app(folder: Path, *, hospitals: int, rounds: int, secagg: bool, timing: Path) -> Path:
    """Write the bare app (``pyproject.toml`` and its package) into ``folder``; return it."""
    app = folder / PACKAGE
    (app / PACKAGE).mkdir(parents=True, exist_ok=True)
    (app / PACKAGE / "__init__.py").write_text("")
    (app / PACKAGE / "server_app.py").write_text(SERVER_APP)
    (app / PACKAGE / "client_app.py").write_text(CLIENT_APP)
    pyproject: dict[str, Any] = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": PACKAGE,
            "version": "1.0.0",
            "description": "A bare Flower app for fedcare's deployment benchmark",
            "license": "Apache-2.0",
            "dependencies": [],
        },
        "tool": {
            "hatch": {"build": {"targets": {"wheel": {"packages": ["."]}}}},
            "flwr": {
                "app": {
                    "publisher": "benchmark",
                    "components": {
                        "serverapp": f"{PACKAGE}.server_app:app",
                        "clientapp": f"{PACKAGE}.client_app:app",
                    },
                    "config": {
                        "num-server-rounds": rounds,
                        "hospitals": hospitals,
                        "secagg": secagg,
                        "timing-file": str(timing),
                    },
                }
            },
        },
    }
    (app / "pyproject.toml").write_text(tomli_w.dumps(pyproject))
    return app


def start_bare_federation(root: Path, processes: Processes, *, hospitals: int) -> int:
    """Start a SuperLink and ``hospitals`` SuperNodes with Flower's defaults; return the port."""
    port = free_port()
    env = {**_environment(root / "superlink"), "OMP_NUM_THREADS": "1"}
    superlink = [flower_executable("flower-superlink"), "--insecure", "--host", "127.0.0.1"]
    superlink += ["--port", str(port), "--disable-runtime-dependency-installation"]
    processes.start("bare-superlink", superlink, env=env)
    wait_for(lambda: port_open(port), timeout=120, what="the bare SuperLink to listen")
    for index in range(hospitals):
        command = [flower_executable("flower-supernode"), "--insecure"]
        command += ["--superlink", f"127.0.0.1:{port}", "--host", "127.0.0.1"]
        command += ["--port", str(free_port()), "--node-config", f"partition-id={index}"]
        node_env = {**_environment(root / f"node-{index}"), "OMP_NUM_THREADS": "1"}
        processes.start(f"bare-node-{index}", command, env=node_env)
    return port


def run_bare(
    root: Path, processes: Processes, port: int, app: Path, timing: Path
) -> dict[str, Any]:
    """Submit the bare app with ``flwr run`` and return its exchange times by round."""
    home = root / "operator"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bare"\n\n[superlink.bare]\naddress = "127.0.0.1:{port}"\n'
        "insecure = true\n"
    )
    command = [flower_executable("flwr"), "run", str(app), "bare", "--stream"]
    code = processes.run(f"bare-run-{timing.stem}", command, timeout=1800, env=_environment(home))
    if code != 0 or not timing.is_file():
        raise RuntimeError(processes.log(f"bare-run-{timing.stem}")[-2000:])
    return dict(json.loads(timing.read_text()))


def _environment(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return flower_environment(home)
