"""A federated run's progress on the terminal: a bar per round, then one line for it.

The bar follows the run's own log lines, so it works the same for an in-process
simulation (:class:`ProgressHandler` on the loggers) and for a deployed run whose
log arrives as text from ``flwr run --stream`` (:meth:`RoundProgress.feed`).
The lines it reads: fedcare's "round R/N: K hospitals asked to train" and
"round R/N: <metrics> | epsilon spent: ...", and Flower's SecAgg+ stage and
aggregation lines.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from fedcare.console import console as stdout
from fedcare.shared.config.run_config import RunConfig

SECAGG_PHASES = (
    "exchanging public keys",
    "sharing key shares",
    "training and masking",
    "unmasking the sum",
    "evaluating",
)
"""What each part of a SecAgg+ round does; the bar advances as each ends."""

PLAIN_PHASES = ("training", "evaluating")

FOLLOWED_LOGGERS = ("fedcare", "flwr")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ROUND_STARTED = re.compile(r"round (\d+)/(\d+): (\d+) hospitals asked to train")
_ROUND_ENDED = re.compile(r"(round \d+/\d+: .* \| epsilon spent: .*?)\s*$")
_STAGE_DONE = re.compile(r"\[Stage (\d)\] Received")
_TRAINED = re.compile(r"aggregate_fit: received")
_EVALUATED = re.compile(r"aggregate_evaluate: received")


class RoundProgress:
    """Show a bar for the current round and print each round's line when it ends.

    Parameters
    ----------
    console : Console
        Where the bar and the lines go.
    secure_aggregation : bool
        Whether rounds run SecAgg+'s four exchanges before evaluation.
    """

    def __init__(self, console: Console, *, secure_aggregation: bool) -> None:
        self._console = console
        self._phases = SECAGG_PHASES if secure_aggregation else PLAIN_PHASES
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[phase]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None
        self._done = 0

    def __enter__(self) -> RoundProgress:
        """Start drawing."""
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop drawing; an unfinished round's bar disappears."""
        self._progress.stop()

    def feed(self, text: str) -> None:
        """Advance the display from one log line (ANSI colours and prefixes allowed)."""
        line = _ANSI.sub("", text)
        if started := _ROUND_STARTED.search(line):
            self._start(f"round {started[1]}/{started[2]}", int(started[3]))
        elif ended := _ROUND_ENDED.search(line):
            self._finish(ended[1])
        elif stage := _STAGE_DONE.search(line):
            self._reach(int(stage[1]) + 1)
        elif _TRAINED.search(line):
            self._reach(len(self._phases) - 1)
        elif _EVALUATED.search(line):
            self._reach(len(self._phases))

    def _start(self, name: str, hospitals: int) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._done = 0
        self._task = self._progress.add_task(
            f"{name} ({hospitals} hospitals)", total=len(self._phases), phase=self._phases[0]
        )

    def _reach(self, done: int) -> None:
        if self._task is None or done <= self._done:
            return
        self._done = min(done, len(self._phases))
        phase = self._phases[self._done] if self._done < len(self._phases) else "done"
        self._progress.update(self._task, completed=self._done, phase=phase)

    def _finish(self, line: str) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        self._console.print(line, highlight=False, markup=False, soft_wrap=True)


class ProgressHandler(logging.Handler):
    """Feed an in-process run's log records to a :class:`RoundProgress`."""

    def __init__(self, progress: RoundProgress) -> None:
        super().__init__(level=logging.DEBUG)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        """Pass the record's message on."""
        try:
            self._progress.feed(record.getMessage())
        except Exception:  # a display problem must never stop a run
            self.handleError(record)


@contextmanager
def progress_from_logs(console: Console, *, secure_aggregation: bool) -> Iterator[RoundProgress]:
    """Show a run's progress from the log records of this process (fedcare's and Flower's)."""
    with RoundProgress(console, secure_aggregation=secure_aggregation) as progress:
        handler = ProgressHandler(progress)
        loggers = [logging.getLogger(name) for name in FOLLOWED_LOGGERS]
        for logger in loggers:
            logger.addHandler(handler)
        try:
            yield progress
        finally:
            for logger in loggers:
                logger.removeHandler(handler)


def watch(config: RunConfig, *, verbose: bool) -> AbstractContextManager[object]:
    """Show the run's progress on the terminal, unless ``verbose`` shows its log lines instead."""
    if verbose:
        return nullcontext()
    return progress_from_logs(stdout, secure_aggregation=config.secure_aggregation.enabled)


_ERROR_LINE = re.compile(r"\bERROR\b|Error|❌")


def follow_stream(
    run: Callable[[Callable[[str], None]], int],
    log_path: Path,
    *,
    secure_aggregation: bool,
    verbose: bool,
) -> tuple[int, str | None]:
    """Follow a run's streamed log: every line to ``log_path``, its progress on the terminal.

    With ``verbose`` the terminal gets the lines themselves instead.

    Parameters
    ----------
    run : Callable[[Callable[[str], None]], int]
        Runs the command, handing it each output line; returns its exit code.
    log_path : Path
        The run folder's log file (appended to).
    secure_aggregation : bool
        Whether the run's rounds use SecAgg+ (the progress bar's phases).
    verbose : bool
        Echo every line instead of showing progress.

    Returns
    -------
    tuple[int, str | None]
        The exit code and the last line that reported an error, if any.
    """
    last_error: str | None = None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    display = (
        nullcontext(None)
        if verbose
        else RoundProgress(stdout, secure_aggregation=secure_aggregation)
    )
    with log_path.open("a", encoding="utf-8") as log, display as progress:

        def on_line(line: str) -> None:
            nonlocal last_error
            log.write(line + "\n")
            log.flush()
            if progress is None:
                print(line, flush=True)  # noqa: T201 - the stream, as Flower wrote it
            else:
                progress.feed(line)
            plain = _ANSI.sub("", line).strip()
            if _ERROR_LINE.search(plain):
                last_error = plain

        code = run(on_line)
    return code, last_error
