"""Benchmark: where a deployed round's time goes, fedcare's warm workers against bare Flower.

One fedcare federation on 127.0.0.1 (CA, aggregator with TLS and node
authentication, three hospitals, each a SuperNode in process isolation with
fedcare's warm worker) runs DP-SGD with SecAgg+ and then without; the aggregator
times every exchange (the run's ``metrics.json``, ``stage_seconds``). A bare Flower
1.41 app (:mod:`simulations.bare_flower`) does the same exchanges with Flower's
default per-message processes. The tables give each stage's mean over the rounds
after the first, the first round on its own, and how much of each exchange was the
hospitals' workers (from their logs) and how much Flower's own latency.

Run ``python -m fedcare.simulations.deployment_benchmark`` (``make benchmark-deployment``)
under ``flock /tmp/fedcare-heavy.lock``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedcare.server.report import METRICS_JSON
from fedcare.simulations.bare_flower import run_bare, start_bare_federation, write_app
from fedcare.simulations.local_deployment import LocalFederation, Processes, start_local_federation

HOSPITALS = 3
SECAGG_STAGES = ("wait-train", "setup", "share_keys", "collect_masked_vectors", "unmask")
PLAIN_STAGES = ("wait-train", "train")
EVALUATION = ("wait-evaluate", "evaluate")
_WORKER_LINE = re.compile(r"run (\d+), (\w+): (?:answered|refused) in ([\d.]+) s")

Rounds = dict[str, dict[str, float]]
"""Round number (as text) to stage to seconds; stage ``round`` is the whole round."""


def fedcare_rounds(root: Path, rounds: int) -> tuple[Rounds, Rounds, dict[str, float]]:
    """Run fedcare with and without SecAgg+; return both runs' stage times and worker times."""

    def open_site(name: str, site: dict[str, Any]) -> None:
        site["privacy"] |= {"require-secure-aggregation": False, "max-epsilon": 100.0}

    processes = Processes(root / "logs")
    try:
        federation = start_local_federation(root, processes, customize_site=open_site)
        secagg = _fedcare_run(federation, "secagg", rounds, ())
        plain = _fedcare_run(federation, "plain", rounds, ("--no-secure-aggregation",))
        worker = _worker_seconds([processes.log(f"hospital-{i}") for i in range(1, 4)])
    finally:
        processes.stop_all()
    return secagg, plain, worker


def _fedcare_run(
    federation: LocalFederation, name: str, rounds: int, extra: tuple[str, ...]
) -> Rounds:
    run, out = federation.start_run(name, rounds=rounds, timeout=300, extra=extra)
    if run.wait(timeout=1800) != 0:
        raise RuntimeError(federation.processes.log(name)[-2000:])
    record = json.loads((out / METRICS_JSON).read_text(encoding="utf-8"))
    return {
        str(r["round"]): {**r["stage_seconds"], "round": r["seconds"]}
        for r in record["rounds"]
        if r["seconds"] is not None
    }


def _worker_seconds(logs: list[str]) -> dict[str, float]:
    """Mean time a hospital's worker spent on a message, by stage (from its log)."""
    times: dict[str, list[float]] = {}
    for log in logs:
        for _run, stage, seconds in _WORKER_LINE.findall(log):
            times.setdefault(stage, []).append(float(seconds))
    return {stage: statistics.mean(values) for stage, values in times.items()}


def bare_rounds(root: Path, rounds: int) -> tuple[Rounds, Rounds]:
    """Run the bare Flower app with and without SecAgg+; return both runs' stage times."""
    processes = Processes(root / "logs")
    try:
        port = start_bare_federation(root, processes, hospitals=HOSPITALS)
        results = []
        for secagg in (True, False):
            timing = root / f"bare-{'secagg' if secagg else 'plain'}.json"
            app = write_app(
                root / timing.stem, hospitals=HOSPITALS, rounds=rounds, secagg=secagg, timing=timing
            )
            results.append(run_bare(root, processes, port, app, timing))
    finally:
        processes.stop_all()
    return results[0], results[1]


def _mean(rounds: Rounds, stage: str, *, first: bool) -> float | None:
    values = [s[stage] for n, s in rounds.items() if stage in s and (n == "1") == first]
    return statistics.mean(values) if values else None


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def stage_table(title: str, stages: tuple[str, ...], ours: Rounds, bare: Rounds) -> Table:
    """One row per stage: fedcare, bare Flower and their ratio (later rounds), fedcare's round 1."""
    table = Table(title=title)
    for column in ("stage", "fedcare", "bare Flower", "bare / fedcare", "fedcare round 1"):
        table.add_column(column, justify="right")
    for stage in (*stages, "round"):
        mine, theirs = _mean(ours, stage, first=False), _mean(bare, stage, first=False)
        # A ratio of two waits for connected hospitals (milliseconds) says nothing.
        ratio = f"{theirs / mine:.2f}x" if mine and theirs and min(mine, theirs) > 0.5 else "-"
        table.add_row(
            stage, _cell(mine), _cell(theirs), ratio, _cell(_mean(ours, stage, first=True))
        )
    return table


def share_table(secagg: Rounds, plain: Rounds, worker: dict[str, float]) -> Table:
    """For each fedcare exchange: its time, the workers' part, and what is left (Flower's)."""
    table = Table(title="fedcare's part of each exchange (later rounds, mean over hospitals)")
    for column in ("exchange", "at the aggregator", "hospital worker", "Flower and transport"):
        table.add_column(column, justify="right")
    for rounds, stages in ((secagg, SECAGG_STAGES[1:] + EVALUATION[1:]), (plain, PLAIN_STAGES[1:])):
        for stage in stages:
            total = _mean(rounds, stage, first=False)
            mine = worker.get(stage)
            rest = total - mine if total is not None and mine is not None else None
            table.add_row(stage, _cell(total), _cell(mine), _cell(rest))
    return table


def main() -> None:
    """Measure fedcare and bare Flower, with and without SecAgg+, and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedcare-bench-") as tmp:
        secagg, plain, worker = fedcare_rounds(Path(tmp) / "fedcare", args.rounds)
        bare_secagg, bare_plain = bare_rounds(Path(tmp) / "bare", args.rounds)
    console = Console(width=120)
    what = f"{HOSPITALS} hospitals on 127.0.0.1, {args.rounds} rounds"
    console.print(
        stage_table(f"Round with SecAgg+ ({what})", SECAGG_STAGES + EVALUATION, secagg, bare_secagg)
    )
    console.print(
        stage_table(f"Round without SecAgg+ ({what})", PLAIN_STAGES + EVALUATION, plain, bare_plain)
    )
    console.print(share_table(secagg, plain, worker))
    console.print(
        json.dumps(
            {
                "fedcare": {"secagg": secagg, "plain": plain, "worker": worker},
                "bare": {"secagg": bare_secagg, "plain": bare_plain},
            }
        )
    )


if __name__ == "__main__":
    main()
