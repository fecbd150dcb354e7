"""Memory and CPU time of a process and all its descendants, sampled while it runs (Linux).

A simulation is a process tree: the driver (aggregator, Flower's engine), Ray's
own processes and one actor process per CPU core. Its memory is the sum of their
resident set sizes (shared pages counted once per process, so an upper bound);
its CPU time, the sum of their user and system time, read from ``/proc``. CPU time
does not depend on what else the machine runs; wall time does.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def supported() -> bool:
    """Whether this system exposes processes in ``/proc`` (Linux)."""
    return (_PROC / "self" / "statm").is_file()


def _stat_fields(pid: int) -> list[str]:
    """Fields of ``/proc/PID/stat`` after the command name (the state is field 0)."""
    stat = (_PROC / str(pid) / "stat").read_text()
    # The command name may contain spaces and parentheses; it ends at the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def _parents() -> dict[int, int]:
    """Return the parent pid of every process that can be read."""
    parents: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):  # gone, or not ours to read
                continue
    return parents


def tree(root: int) -> list[int]:
    """Return ``root`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found, frontier = [root], [root]
    while frontier:
        frontier = [child for pid in frontier for child in children.get(pid, [])]
        found.extend(frontier)
    return found


def resident_bytes(pid: int) -> int:
    """Return the resident set size of one process (0 if it has gone)."""
    try:
        return int((_PROC / str(pid) / "statm").read_text().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def cpu_seconds(pid: int) -> float:
    """Return the CPU time of one process and of its children it has reaped (0 if gone)."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: fields 14 to 17 of stat(5), 11 to 14 here.
    return sum(int(value) for value in fields[11:15]) / _TICKS


def tree_resident_bytes(root: int) -> int:
    """Return the summed resident set size of ``root`` and its descendants."""
    return sum(resident_bytes(pid) for pid in tree(root))


@dataclass(frozen=True)
class TreeSample:
    """One reading of a process tree: when, its resident memory, its CPU time so far."""

    at: float
    resident: int
    cpu: float


@dataclass
class TreeSamples:
    """Readings of a process tree, oldest first."""

    samples: list[TreeSample] = field(default_factory=list)

    @property
    def peak(self) -> int:
        """Largest resident memory read (0 if none)."""
        return max((sample.resident for sample in self.samples), default=0)

    def peak_between(self, start: float, end: float) -> int:
        """Largest resident memory read from ``start`` to ``end`` (0 if none)."""
        return max(
            (sample.resident for sample in self.samples if start <= sample.at <= end), default=0
        )

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds the tree used from ``start`` to ``end`` (to the nearest readings)."""
        before = [sample.cpu for sample in self.samples if sample.at <= start]
        until = [sample.cpu for sample in self.samples if sample.at <= end]
        return (until[-1] if until else 0.0) - (before[-1] if before else 0.0)


class TreeSampler:
    """Read a process tree's memory and CPU time on a background thread until stopped.

    Parameters
    ----------
    root : int
        The tree's root process.
    interval : float
        Seconds between readings.
    """

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.readings = TreeSamples()
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeSampler:
        """Start reading."""
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop reading (after one last reading)."""
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            pids = tree(self._root)
            self.readings.samples.append(
                TreeSample(
                    at=time.time(),
                    resident=sum(resident_bytes(pid) for pid in pids),
                    cpu=sum(cpu_seconds(pid) for pid in pids),
                )
            )
            if self._stop.wait(self._interval):
                return
