"""A simulation's log file: every line of Flower, Ray and fedcare, in the run folder.

The driver process (ServerApp, Flower's simulation engine, Ray's client) logs
through :class:`RunLog`; each Ray worker (the virtual hospitals) appends to the
same file through :func:`log_worker_to_run_file`, which Ray runs as each worker
starts. Quiet by default: Flower's, Ray's and the root logger's console lines are
held back for the run and only the file gets them; ``echo=True`` (``--verbose``)
leaves them on the console as well.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import TracebackType

RUN_LOG_ENV = "FEDCARE_RUN_LOG"
"""Environment variable naming the log file, for Ray's worker processes."""

FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

_CONSOLE_LOGGERS = ("", "flwr", "ray")
"""Loggers whose console handlers a quiet run holds back: the root (Opacus gives it
one on import), Flower's and Ray's. fedcare's own console lines are the CLI's."""

_FILE_LOGGERS = ("", "flwr", "ray", "fedcare")
"""Loggers the file handler goes on when they do not pass records to the root."""


def file_handler(path: Path) -> logging.FileHandler:
    """Return a handler appending every record to ``path`` (one ``write`` per line).

    Several processes append to the file at once; a line written with
    ``O_APPEND`` in one call never interleaves with another's.
    """
    handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=False)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    handler.setLevel(logging.DEBUG)
    return handler


class RunLog:
    """Route this process' log lines to ``path`` for the duration of a run.

    Parameters
    ----------
    path : Path
        The run folder's log file (created, or appended to when it exists).
    echo : bool
        Also leave Flower's, Ray's and the root logger's lines on the console.
    """

    def __init__(self, path: Path, *, echo: bool) -> None:
        self.path = path
        self._echo = echo
        self._handler: logging.FileHandler | None = None
        self._silenced: list[tuple[logging.Handler, int]] = []
        self._attached: list[logging.Logger] = []
        self._root_level = logging.getLogger().level

    def __enter__(self) -> RunLog:
        """Open the file and attach it; hold console handlers back unless echoing."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = file_handler(self.path)
        root = logging.getLogger()
        root.setLevel(min(self._root_level or logging.WARNING, logging.INFO))
        for name in _FILE_LOGGERS:
            logger = logging.getLogger(name)
            if name == "" or not logger.propagate:
                logger.addHandler(self._handler)
                self._attached.append(logger)
        logging.captureWarnings(True)
        if not self._echo:
            self._hold_back_consoles()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Detach the file and give the console handlers back their levels."""
        for handler, level in self._silenced:
            handler.setLevel(level)
        for logger in self._attached:
            if self._handler is not None:
                logger.removeHandler(self._handler)
        logging.captureWarnings(False)
        logging.getLogger().setLevel(self._root_level)
        if self._handler is not None:
            self._handler.close()

    def _hold_back_consoles(self) -> None:
        for name in _CONSOLE_LOGGERS:
            for handler in logging.getLogger(name).handlers:
                if isinstance(handler, logging.StreamHandler) and handler is not self._handler:
                    self._silenced.append((handler, handler.level))
                    handler.setLevel(logging.CRITICAL + 1)


def log_worker_to_run_file() -> None:
    """Send a Ray worker's log lines and warnings to the run's log file.

    Ray calls this in every worker process as it starts (the runtime
    environment's ``worker_process_setup_hook``); the file comes from
    :data:`RUN_LOG_ENV`. Flower's logger keeps its own console handler (Ray
    forwards that output to the driver only with ``--verbose``).
    """
    path = os.environ.get(RUN_LOG_ENV)
    if not path:
        return
    handler = file_handler(Path(path))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, logging.INFO))
    flower = logging.getLogger("flwr")
    if not flower.propagate:
        flower.addHandler(handler)
    logging.captureWarnings(True)
