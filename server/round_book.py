"""The round book: which hospitals a round asked, which replied, failed or stayed silent.

Every line a round's record gets about a hospital's part in it is written here,
from plain node ids, names and reasons; the Flower glue
(:class:`server.strategy.FedCareStrategy`) only unpacks Flower's replies into them.

Notes
-----
A hospital is named by its authenticated node, never by what its reply claims.
Flower's legacy workflows strip the sender from an error reply, so error
replies are booked as they arrive (:meth:`RoundBook.note_exchange`), before the
stage's results are; a hospital that was asked and is in neither dropped out or
missed the deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fedcare.server.run_record import RoundRecord

# Why not __name__: the run log shows a round's lines under one name, whichever part
# of the aggregator writes them.
logger = logging.getLogger("fedcare.server.strategy")

TRAIN = "train"
EVALUATE = "evaluate"


def fail_round(record: RoundRecord, message: str) -> None:
    """Add ``message`` to a round's failures and log it as an error."""
    record.failures.append(message)
    logger.error("round %s %s", record.round, message)


HOSPITAL_WORDS_LIMIT = 600
"""Most characters of a hospital's reason the record keeps (fedcare's own are shorter)."""


def hospital_words(text: str) -> str:
    """Return a hospital's reason as one line of printable text, at most the limit long.

    The reason comes from outside the aggregator and ends up on the operator's
    terminal, in logs and in the report: a control character (a terminal escape
    sequence, a carriage return that hides the line before it) or a new line that
    forges a log line must not survive, and nor must an endless text.
    """
    printable = "".join(c if c.isprintable() else " " for c in text)
    line = " ".join(printable.split())
    return line if len(line) <= HOSPITAL_WORDS_LIMIT else line[: HOSPITAL_WORDS_LIMIT - 1] + "…"


class RoundBook:
    """Who was asked, who answered and who failed, in the current round's stages.

    Parameters
    ----------
    names_by_node : dict[int, str]
        The registered hospitals' names by node id (``hospital-names``).
    registered : bool
        Whether the federation registers its hospitals (a deployment); if not
        (a simulation), each hospital's reply names it.
    """

    def __init__(self, names_by_node: dict[int, str], *, registered: bool) -> None:
        self._names = dict(names_by_node)
        self._registered = registered
        self._asked: dict[str, set[int]] = {}
        self._erred: dict[str, set[int]] = {}
        # Whether this round's training ended in the strategy (aggregated, or failed and
        # said why); if not, SecAgg+ halted before it could.
        self._train_concluded = False

    def describe(self, node_id: int) -> str:
        """Return a hospital's name (registered, or in simulation its own), else its node id."""
        return self._names.get(node_id, f"node {node_id}")

    def learn_name(self, node_id: int, claimed: object) -> str:
        """Name the hospital behind ``node_id`` by its authenticated node, never by its reply.

        A deployment's names come from the aggregator's registry of node keys
        (``hospital-names``, which ``fedcare run`` always sets; only a registered
        node can connect); a name a reply claims is only compared with it. A
        simulation, on built-in data or the user's own files, has no node keys
        and no registry: its virtual hospitals are fedcare's own code in this
        process, and their replies name them.
        """
        if not self._registered:
            if isinstance(claimed, str):
                self._names[node_id] = claimed
        elif isinstance(claimed, str) and claimed != self._names.get(node_id):
            logger.warning(
                "%s replied as %r; it is reported under its registered name",
                self.describe(node_id),
                claimed[:80],
            )
        return self.describe(node_id)

    def start_training(self) -> None:
        """Open a round's training: until it concludes, a halt means SecAgg+ stopped it."""
        self._train_concluded = False

    def conclude_training(self) -> None:
        """Mark the round's training as ended in the strategy, with or without a new model."""
        self._train_concluded = True

    def ask(self, record: RoundRecord, stage: str, node_ids: Iterable[int]) -> None:
        """Book the hospitals a stage was sent to (the training stage's also in the record)."""
        self._asked[stage] = set(node_ids)
        if stage == TRAIN:
            record.asked = sorted(self.describe(node_id) for node_id in self._asked[stage])

    def note_exchange(
        self, record: RoundRecord, stage: str, seconds: float, errors: Iterable[tuple[int, str]]
    ) -> None:
        """Book an exchange's time and every error reply, naming the hospital that sent it.

        ``stage`` is ``evaluate``, ``train`` or a SecAgg+ stage of training.
        """
        spent = record.stage_seconds.get(stage, 0.0)
        record.stage_seconds[stage] = spent + seconds
        kind = EVALUATE if stage == EVALUATE else TRAIN
        for node_id, reason in errors:
            self._erred.setdefault(kind, set()).add(node_id)
            fail_round(record, f"{kind}: {self.describe(node_id)}: {hospital_words(reason)}")

    def note_failures(
        self, record: RoundRecord, stage: str, failed: Iterable[tuple[int, str]]
    ) -> None:
        """Book the failed replies that name their sender: ``(node id, status message)``."""
        for node_id, message in failed:
            fail_round(record, f"{stage}: {self.describe(node_id)}: {hospital_words(message)}")

    def note_silent(self, record: RoundRecord, stage: str, answered: Iterable[int]) -> None:
        """Book every hospital that was asked and returned neither a result nor an error.

        ``answered`` holds the nodes that sent a result or a failed reply; the
        error replies were booked with their sender by :meth:`note_exchange`.
        """
        heard = set(answered) | self._erred.pop(stage, set())
        for node_id in sorted(self._asked.pop(stage, set()) - heard):
            fail_round(
                record,
                f"{stage}: no result from {self.describe(node_id)} (dropped out or missed "
                "the deadline)",
            )

    def check_trained(self, record: RoundRecord) -> None:
        """Make a round that never reached aggregation an error in the record.

        SecAgg+ halts without calling the strategy when too few hospitals finish
        its stages; Flower then goes on to evaluation with the old model.
        """
        if record.aggregated or self._train_concluded:
            return
        unfinished = ", ".join(self.describe(n) for n in sorted(self._asked.pop(TRAIN, set())))
        fail_round(
            record,
            "train: secure aggregation halted before aggregating (too few hospitals completed "
            f"the protocol; asked: {unfinished or 'none'}); the global model is unchanged",
        )
