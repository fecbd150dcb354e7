"""Benchmark: deployed round time with SecAgg+ and without, three hospitals on 127.0.0.1.

Each variant starts a fresh local federation (CA, aggregator with TLS and
authentication, three demo hospitals as real processes) and runs the same
DP-SGD training; the table gives the mean round time of each and their ratio.
Run ``python -m simulations.deployment_benchmark`` (``make benchmark-deployment``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedcare.server.report import METRICS_JSON
from fedcare.simulations.local_deployment import Processes, start_local_federation


def deployed_round_seconds(root: Path, *, secure_aggregation: bool, rounds: int) -> float:
    """Mean round time of one deployed run (train and evaluate, DP on)."""

    def allow(name: str, site: dict[str, Any]) -> None:
        site["privacy"] |= {"require-secure-aggregation": secure_aggregation, "max-epsilon": 100.0}

    processes = Processes(root / "logs")
    try:
        federation = start_local_federation(root, processes, customize_site=allow)
        extra = () if secure_aggregation else ("--no-secure-aggregation",)
        run, out = federation.start_run("run", rounds=rounds, timeout=300, extra=extra)
        if run.wait(timeout=1800) != 0:
            raise RuntimeError(processes.log("run")[-2000:])
        record = json.loads((out / METRICS_JSON).read_text(encoding="utf-8"))
    finally:
        processes.stop_all()
    return statistics.mean(r["seconds"] for r in record["rounds"] if r["seconds"] is not None)


def main() -> None:
    """Measure both variants and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedcare-bench-") as tmp:
        with_secagg = deployed_round_seconds(
            Path(tmp) / "secagg", secure_aggregation=True, rounds=args.rounds
        )
        plaintext = deployed_round_seconds(
            Path(tmp) / "plain", secure_aggregation=False, rounds=args.rounds
        )
    table = Table(
        title=f"Deployed round time, 3 hospitals on 127.0.0.1, TLS + auth, DP on ({args.rounds} rounds)"
    )
    for column in ("SecAgg+", "no SecAgg+", "SecAgg+ / none", "SecAgg+ adds"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{with_secagg:.1f} s",
        f"{plaintext:.1f} s",
        f"{with_secagg / plaintext:.2f}x",
        f"{with_secagg - plaintext:+.1f} s",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
