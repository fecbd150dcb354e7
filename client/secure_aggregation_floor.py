"""The hospital's floor under SecAgg+: what it checks before it answers any stage.

Flower's ``secaggplus_mod`` takes the protocol's parameters from the aggregator
on trust. An aggregator that sets a reconstruction threshold of 1, gives a
hospital a neighbourhood of itself alone, or asks it to unmask itself, recovers
that hospital's update. These checks run *before* the mod is called, on what
the aggregator sent, and each returns the reason to refuse (``None`` to go on):

* setup: at least ``min-participants`` hospitals (this one included) share
  keys; the threshold is at least 2 and more than half the shares, so no two
  disjoint groups of neighbours can both reach it (an aggregator that tells
  some neighbours a hospital dropped out and others that it did not still
  cannot rebuild both its private mask and its pairwise masks);
* share keys: the neighbourhood holds this hospital and at least
  ``min-participants - 1`` distinct others, and no more than the shares;
* collect masked vectors: the update is masked only if shares came from
  enough distinct neighbours (its pairwise masks cancel only in a sum with them);
* unmask: active and dead lists are disjoint, without repeats, within the
  neighbourhood; this hospital is active and never listed as dead (which would
  reveal its own masking key); and at least ``min-participants`` are active,
  so the sum unmasked holds at least that many updates.

What these checks cannot see: node ids and keys are whatever the aggregator
relays, so an aggregator that invents hospitals of its own (or hospitals that
collude with it) can still fill a neighbourhood; SecAgg+ protects each update
against an aggregator that follows or deviates from the protocol, and against
fewer colluding hospitals than the threshold, not against a Sybil aggregator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage

MIN_THRESHOLD = 2
"""A threshold of 1 lets any single share, the aggregator's relay included, rebuild a secret."""


@dataclass(frozen=True)
class Neighbourhood:
    """What the hospital accepted at setup and key sharing in the current round.

    Attributes
    ----------
    shares : int
        Shares each secret is split into.
    threshold : int
        Shares needed to rebuild a secret.
    members : tuple[int, ...]
        Node ids it shares keys with, itself included (empty before key sharing).
    """

    shares: int
    threshold: int
    members: tuple[int, ...] = ()


def setup_problem(configs: Mapping[str, object], *, min_participants: int) -> str | None:
    """Check the setup stage's parameters against the floor."""
    numbers = [_whole(configs.get(k)) for k in (Key.SAMPLE_NUMBER, Key.SHARE_NUMBER, Key.THRESHOLD)]
    sample, shares, threshold = numbers
    if sample is None or shares is None or threshold is None:
        return "the setup carries no whole sample, share and threshold numbers"
    if shares < min_participants:
        return (
            f"the setup gives a neighbourhood of {shares} hospitals, fewer than the "
            f"{min_participants} (itself included) this hospital requires (min-participants)"
        )
    if shares > sample:
        return "the setup asks for more shares than hospitals in the round"
    if threshold < MIN_THRESHOLD or 2 * threshold <= shares or threshold > shares:
        return (
            f"the setup's reconstruction threshold ({threshold} of {shares} shares) is unsafe: "
            f"it must be at least {MIN_THRESHOLD} and more than half the shares"
        )
    return None


def share_keys_problem(
    configs: Mapping[str, object], *, node_id: int, accepted: Neighbourhood, min_participants: int
) -> tuple[str | None, tuple[int, ...]]:
    """Check the neighbourhood the aggregator relayed keys for; return it when accepted."""
    try:
        members = tuple(sorted(int(key) for key in configs if key != Key.STAGE))
    except ValueError:
        return "the key-sharing stage names a node that is not a node id", ()
    if node_id not in members:
        return "the key-sharing stage leaves this hospital out of its own neighbourhood", ()
    if len(members) < min_participants:
        return (
            f"the neighbourhood holds {len(members) - 1} other hospital(s); this hospital "
            f"requires at least {min_participants - 1} (min-participants {min_participants})",
            (),
        )
    if len(members) > accepted.shares:
        return "the neighbourhood is larger than the shares agreed at setup", ()
    return None, members


def collect_problem(
    configs: Mapping[str, object], *, node_id: int, accepted: Neighbourhood, min_participants: int
) -> str | None:
    """Check whose shares arrived before the update is masked and sent."""
    sources = _node_ids(configs.get(Key.SOURCE_LIST))
    if sources is None:
        return "the masking stage carries no list of node ids"
    others = set(accepted.members) - {node_id}
    if len(set(sources)) != len(sources) or not set(sources) <= others:
        return "the masking stage names repeated nodes or nodes outside the neighbourhood"
    if len(sources) + 1 < min_participants:
        return (
            f"shares arrived from {len(sources)} other hospital(s); this hospital masks its "
            f"update only in a sum of at least {min_participants} (min-participants)"
        )
    return None


def unmask_problem(
    configs: Mapping[str, object], *, node_id: int, accepted: Neighbourhood, min_participants: int
) -> str | None:
    """Check the active and dead lists before any key share is revealed."""
    active = _node_ids(configs.get(Key.ACTIVE_NODE_ID_LIST))
    dead = _node_ids(configs.get(Key.DEAD_NODE_ID_LIST))
    if active is None or dead is None:
        return "the unmasking stage carries no active and dead node lists"
    if len(set(active)) != len(active) or len(set(dead)) != len(dead) or set(active) & set(dead):
        return "the unmasking stage lists a node twice, or as both active and dead"
    if node_id in dead or node_id not in active:
        return "the unmasking stage asks this hospital to help unmask its own update"
    if not set(active) | set(dead) <= set(accepted.members):
        return "the unmasking stage names nodes outside this hospital's neighbourhood"
    if len(active) < min_participants:
        return (
            f"the sum to unmask holds {len(active)} hospital(s) of this neighbourhood; this "
            f"hospital helps unmask only a sum of at least {min_participants} (min-participants)"
        )
    return None


def stage_of(configs: Mapping[str, object]) -> str:
    """Return the SecAgg+ stage a message asks for (empty when it names none)."""
    stage = configs.get(Key.STAGE)
    return stage if isinstance(stage, str) else ""


SETUP, SHARE_KEYS, COLLECT, UNMASK = (
    Stage.SETUP,
    Stage.SHARE_KEYS,
    Stage.COLLECT_MASKED_VECTORS,
    Stage.UNMASK,
)


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _node_ids(value: object) -> list[int] | None:
    if not isinstance(value, list):
        return None
    ids = [_whole(item) for item in value]
    return [item for item in ids if item is not None] if None not in ids else None
