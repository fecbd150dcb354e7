"""Benchmark: how a simulation scales with the number of hospitals (time and memory).

Each size runs ``fedcare simulate`` as a user would, in a process of its own,
while this process samples the resident memory of that process and all its
descendants (Ray's processes and actors included). Times come from the run's
own log (``fedcare.log``): start-up is from launching the command to the first
round's training request; a round is from its training request to its result
line; the report is what follows the last round (the baselines, the plot, the
files).

Run ``python -m fedcare.simulations.scale_benchmark`` (or ``make benchmark``,
which runs it with the other sections).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from fedcare.server.report import SUMMARY
from fedcare.server.run_directory import LOG_FILE
from fedcare.simulations.process_tree import TreeSampler, TreeSamples, supported

_GIB = 2**30


@dataclass(frozen=True)
class ScaleCase:
    """One federation size: the scenario and rounds it runs."""

    hospitals: int
    scenario: str
    rounds: int

    def arguments(self, out: Path) -> list[str]:
        """``fedcare simulate`` arguments for this case."""
        return [
            "simulate",
            "--scenario",
            self.scenario,
            "--hospitals",
            str(self.hospitals),
            "--rounds",
            str(self.rounds),
            "--out",
            str(out),
        ]


CASES = {
    3: ScaleCase(3, "breast-cancer", 5),
    10: ScaleCase(10, "breast-cancer-10", 5),
    100: ScaleCase(100, "many-hospitals", 5),
    1000: ScaleCase(1000, "many-hospitals", 2),
}
"""The sizes measured: the default federation, ten hospitals of the same data, then
synthetic discharge records dealt out evenly to 100 and 1,000 hospitals (DP-SGD
and SecAgg+ on in every case)."""


@dataclass(frozen=True)
class ScaleResult:
    """What one size measured (seconds and bytes; CPU seconds of the whole process tree)."""

    case: ScaleCase
    status: str
    start_up: float
    rounds: list[float]
    round_cpu: list[float]
    report: float
    total: float
    total_cpu: float
    peak: int
    round_peaks: list[int]

    @property
    def later_rounds(self) -> float | None:
        """Mean wall time of the rounds after the first (which also warms the hospitals up)."""
        return statistics.mean(self.rounds[1:]) if len(self.rounds) > 1 else None

    @property
    def later_rounds_cpu(self) -> float | None:
        """Mean CPU time of the rounds after the first."""
        return statistics.mean(self.round_cpu[1:]) if len(self.round_cpu) > 1 else None


_STARTED = re.compile(r"^(\S+ \S+) .*round (\d+)/\d+: \d+ hospitals asked to train")
_ENDED = re.compile(r"^(\S+ \S+) .*round (\d+)/\d+: .* \| epsilon spent:")


def _timestamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def round_windows(log: str) -> dict[int, tuple[float, float]]:
    """Each round's start and end (epoch seconds) from a run's log file."""
    starts: dict[int, float] = {}
    windows: dict[int, tuple[float, float]] = {}
    for line in log.splitlines():
        if started := _STARTED.match(line):
            starts[int(started[2])] = _timestamp(started[1])
        elif (ended := _ENDED.match(line)) and int(ended[2]) in starts:
            windows[int(ended[2])] = (starts[int(ended[2])], _timestamp(ended[1]))
    return windows


def measure(case: ScaleCase, workdir: Path) -> ScaleResult:
    """Run ``case`` in a fresh process and measure it."""
    out = workdir / f"hospitals-{case.hospitals}"
    command = [sys.executable, "-m", "fedcare", *case.arguments(out)]
    launched = time.time()
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as process:
        with TreeSampler(process.pid) as sampler:
            _, stderr = process.communicate()
    finished = time.time()
    summary_path = out / SUMMARY
    if not summary_path.is_file():
        raise RuntimeError(
            f"{case.hospitals} hospitals: the simulation wrote no report; see {out / LOG_FILE}: "
            + stderr.decode(errors="replace")[-500:]
        )
    windows = round_windows((out / LOG_FILE).read_text(encoding="utf-8"))
    ordered = [windows[r] for r in sorted(windows)]
    summary = json.loads(summary_path.read_text())
    return _result(case, summary, ordered, sampler.readings, launched, finished)


def _result(
    case: ScaleCase,
    summary: dict[str, object],
    windows: list[tuple[float, float]],
    readings: TreeSamples,
    launched: float,
    finished: float,
) -> ScaleResult:
    first_start = windows[0][0] if windows else finished
    last_end = windows[-1][1] if windows else finished
    return ScaleResult(
        case=case,
        status=str(summary["status"]),
        start_up=first_start - launched,
        rounds=[end - start for start, end in windows],
        round_cpu=[readings.cpu_between(start, end) for start, end in windows],
        report=finished - last_end,
        total=finished - launched,
        total_cpu=readings.cpu_between(launched, finished),
        peak=readings.peak,
        round_peaks=[readings.peak_between(start, end) for start, end in windows],
    )


def scale_table(results: list[ScaleResult], *, title: str, markdown: bool = False) -> Table:
    """One row per size: start-up, round times (wall and CPU), report, total, peak memory."""
    table = Table(title=title, box=box.MARKDOWN if markdown else box.HEAVY_HEAD)
    columns = ("hospitals", "scenario", "rounds", "start-up", "round 1", "later rounds")
    for column in (
        *columns,
        "later rounds CPU",
        "report",
        "total",
        "total CPU",
        "peak RSS",
        "peak RSS per round (GiB)",
        "status",
    ):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for result in results:
        table.add_row(
            f"{result.case.hospitals:,}",
            result.case.scenario,
            str(result.case.rounds),
            f"{result.start_up:.1f} s",
            f"{result.rounds[0]:.1f} s" if result.rounds else "-",
            _seconds(result.later_rounds),
            _seconds(result.later_rounds_cpu),
            f"{result.report:.1f} s",
            f"{result.total:.1f} s",
            f"{result.total_cpu:.0f} s",
            f"{result.peak / _GIB:.2f} GiB",
            " ".join(f"{peak / _GIB:.2f}" for peak in result.round_peaks),
            result.status,
        )
    return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def print_scale_section(console: Console, sizes: list[int], *, markdown: bool = False) -> None:
    """Measure each of ``sizes`` (keys of :data:`CASES`) and print the scale table."""
    if not supported():
        console.print("simulation scale: skipped (memory sampling needs Linux's /proc)")
        return
    results = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="fedcare-scale-") as tmp:
        for size in sizes:
            case = CASES[size]
            with console.status(f"simulating {size:,} hospitals, {case.rounds} rounds"):
                results.append(measure(case, Path(tmp)))
    title = (
        f"Simulation scale, DP-SGD and SecAgg+, {os.cpu_count()} cores, load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (CPU and memory: the "
        "whole process tree)"
    )
    console.print(scale_table(results, title=title, markdown=markdown))


def parse_sizes(text: str) -> list[int]:
    """Parse ``--sizes 3,10,100`` (each one of :data:`CASES`)."""
    sizes = [int(part) for part in text.split(",") if part.strip()]
    unknown = [size for size in sizes if size not in CASES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"no case for {unknown}; choose among {', '.join(map(str, CASES))}"
        )
    return sizes


def main() -> None:
    """Measure the sizes asked for and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=parse_sizes, default=list(CASES), help="comma-separated hospital counts"
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    print_scale_section(Console(width=200), args.sizes, markdown=args.markdown)


if __name__ == "__main__":
    main()
