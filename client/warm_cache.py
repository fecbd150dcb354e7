"""What a long-lived process keeps warm for the run it serves: prepared sites and built models.

A hospital's worker (and, in a simulation, each Ray actor) handles many messages
of one run. Reading, validating and preparing the site's data, and building the
run's model, are done once per run and site; every message after that reuses
them. A real hospital's data and contract files are stamped (size, modification
time and SHA-256 of the content): when a file changes, the next message reads
and validates it again, and a file that no longer passes is refused as on the
first read.

Memory stays bounded: the cache holds one run. When a message of another run
arrives, everything of the previous run is dropped, garbage is collected and the
process's random generators are reseeded from the operating system, so nothing
of one run (arrays, models, random state) carries into the next.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from fedcare.client.site import Site, SiteSource, load_site
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.keys import NodeConfigKey
from fedcare.shared.run_identity import run_config_hash

_Model = TypeVar("_Model")

_CHUNK = 1 << 20


def file_stamp(path: Path) -> str:
    """Fingerprint of a data file (size, modification time, SHA-256), or of a folder's files.

    A folder (of image class folders) is stamped by its files' names, sizes and
    modification times; a file by its whole content as well.
    """
    digest = hashlib.sha256()
    if path.is_dir():
        for item in sorted(path.rglob("*")):
            info = item.stat()
            digest.update(f"{item.relative_to(path)}:{info.st_size}:{info.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    info = path.stat()
    digest.update(f"{info.st_size}:{info.st_mtime_ns}\n".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stamps(node_config: Mapping[str, object]) -> tuple[str, ...]:
    """Stamps of the files a real hospital's site is read from (none for a simulated one)."""
    paths = [node_config.get(key) for key in (NodeConfigKey.DATA_PATH, NodeConfigKey.CONTRACT_PATH)]
    return tuple(file_stamp(Path(str(path))) for path in paths if path is not None)


@dataclass
class _RunEntries:
    run_id: str
    sites: dict[tuple[str, str], tuple[tuple[str, ...], Site]] = field(default_factory=dict)
    models: dict[tuple[str, str], Any] = field(default_factory=dict)


class RunCache:
    """Prepared sites and built models of the run this process is serving."""

    def __init__(self) -> None:
        self._entries = _RunEntries(run_id="")

    def begin_run(self, run_id: str) -> None:
        """Serve ``run_id``: if it is a new run, drop the previous one and reset the process."""
        if run_id == self._entries.run_id:
            return
        self._entries = _RunEntries(run_id=run_id)
        reset_process_state()

    def site(
        self,
        node_config: Mapping[str, object],
        config: RunConfig,
        run_id: str,
        source: SiteSource | None = None,
    ) -> Site:
        """Return this node's prepared site for the run: read once, again if its files changed.

        Raises
        ------
        DataError
            As :func:`client.site.load_site`, on the first read or after a change.
        """
        self.begin_run(run_id)
        key = (_node_key(node_config), run_config_hash(config))
        stamps = _stamps(node_config)
        cached = self._entries.sites.get(key)
        if cached is not None and cached[0] == stamps:
            return cached[1]
        self._entries.sites.pop(key, None)
        site = load_site(node_config, config, run_id, source)
        # The model is built for the site's data (its shape, its class weights): rebuild it too.
        self._entries.models.pop((site.name, key[1]), None)
        self._entries.sites[key] = (stamps, site)
        return site

    def model(self, site: Site, config: RunConfig, build: Callable[[], _Model]) -> _Model:
        """Return a fresh copy of the run's initial model for ``site`` (built once, then copied)."""
        key = (site.name, run_config_hash(config))
        if key not in self._entries.models:
            self._entries.models[key] = build()
        template: _Model = self._entries.models[key]
        return copy.deepcopy(template)


def _node_key(node_config: Mapping[str, object]) -> str:
    # The whole node config: the site's own settings (its split, its limits, its state
    # folder) shape the prepared site as much as its data file does.
    return json.dumps({str(k): str(v) for k, v in node_config.items()}, sort_keys=True)


def reset_process_state() -> None:
    """Free the previous run's memory and reseed every random generator from the OS."""
    gc.collect()
    seed = int.from_bytes(os.urandom(8), "little")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


RUN_CACHE = RunCache()
"""The cache of this process (one per worker, one per simulation actor)."""
