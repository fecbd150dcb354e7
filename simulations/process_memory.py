"""Resident memory of a process and all its descendants, sampled while it runs (Linux).

A simulation is a process tree: the driver (aggregator, Flower's engine), Ray's
own processes and one actor process per CPU core. Its footprint is the sum of
their resident set sizes (shared pages counted once per process, so an upper
bound), read from ``/proc``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def supported() -> bool:
    """Whether this system exposes processes in ``/proc`` (Linux)."""
    return (_PROC / "self" / "statm").is_file()


def _parents() -> dict[int, int]:
    """Return the parent pid of every process that can be read."""
    parents: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone, or not ours to read
            continue
        # The command name (field 2) may contain spaces and parentheses; the parent pid
        # is the second field after its closing parenthesis.
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
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


def tree_resident_bytes(root: int) -> int:
    """Return the summed resident set size of ``root`` and its descendants."""
    return sum(resident_bytes(pid) for pid in tree(root))


@dataclass
class MemorySamples:
    """``(time.time(), bytes)`` samples of a process tree's resident memory."""

    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def peak(self) -> int:
        """Largest sample (0 if none)."""
        return max((size for _, size in self.samples), default=0)

    def peak_between(self, start: float, end: float) -> int:
        """Largest sample taken from ``start`` to ``end`` (0 if none)."""
        return max((size for at, size in self.samples if start <= at <= end), default=0)


class TreeMemorySampler:
    """Sample a process tree's resident memory on a background thread until stopped.

    Parameters
    ----------
    root : int
        The tree's root process.
    interval : float
        Seconds between samples.
    """

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.memory = MemorySamples()
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemorySampler:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop sampling (after one last sample)."""
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.memory.samples.append((time.time(), tree_resident_bytes(self._root)))
            if self._stop.wait(self._interval):
                return
