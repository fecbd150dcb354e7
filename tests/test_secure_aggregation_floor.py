"""The SecAgg+ floor: fedcare's own settings always pass it, crafted ones never do."""

from __future__ import annotations

import pytest
from flwr.common.secure_aggregation.secaggplus_constants import Key

from fedcare.client.secure_aggregation_floor import (
    Neighbourhood,
    collect_problem,
    setup_problem,
    share_keys_problem,
    unmask_problem,
)
from fedcare.shared.config.secagg import SecureAggregationSettings


def _flower_setup(hospitals: int, settings: SecureAggregationSettings) -> dict[str, int]:
    """What Flower's SecAggPlusWorkflow sends at setup for fractional settings."""
    shares = round(settings.share_fraction(hospitals) * hospitals)
    if shares < hospitals and shares % 2 == 0:
        shares += 1
    if shares <= 2:
        shares = hospitals
    threshold = max(round(settings.reconstruction_threshold * shares), 2)
    return {Key.SAMPLE_NUMBER: hospitals, Key.SHARE_NUMBER: shares, Key.THRESHOLD: threshold}


@pytest.mark.parametrize("hospitals", [*range(3, 31), 50, 100, 1000])
def test_fedcare_default_secagg_settings_pass_the_floor(hospitals: int) -> None:
    setup = _flower_setup(hospitals, SecureAggregationSettings())
    assert setup_problem(setup, min_participants=3) is None


@pytest.mark.parametrize(("shares", "threshold"), [(3, 1), (4, 2), (5, 2), (10, 5), (5, 6)])
def test_thresholds_at_or_below_half_the_shares_are_refused(shares: int, threshold: int) -> None:
    setup = {Key.SAMPLE_NUMBER: 10, Key.SHARE_NUMBER: shares, Key.THRESHOLD: threshold}
    assert "unsafe" in str(setup_problem(setup, min_participants=3))


def test_a_hospital_may_ask_for_a_larger_neighbourhood() -> None:
    setup = {Key.SAMPLE_NUMBER: 5, Key.SHARE_NUMBER: 5, Key.THRESHOLD: 3}
    assert setup_problem(setup, min_participants=5) is None
    assert "fewer than the 6" in str(setup_problem(setup, min_participants=6))
    assert setup_problem({Key.SHARE_NUMBER: True}, min_participants=3) is not None


def test_key_sharing_needs_itself_and_enough_distinct_others() -> None:
    accepted = Neighbourhood(shares=5, threshold=3)
    keys = {str(n): [b"a", b"b"] for n in (1, 2, 3)}
    problem, members = share_keys_problem(keys, node_id=1, accepted=accepted, min_participants=3)
    assert problem is None and members == (1, 2, 3)
    for crafted, node in [(keys, 9), ({"1": [], "2": []}, 1), ({**keys, "x": []}, 1)]:
        assert share_keys_problem(crafted, node_id=node, accepted=accepted, min_participants=3)[0]
    too_many = {str(n): [] for n in range(1, 8)}
    problem, _ = share_keys_problem(too_many, node_id=1, accepted=accepted, min_participants=3)
    assert problem is not None and "larger than the shares" in problem


def test_masking_and_unmasking_stay_within_the_accepted_neighbourhood() -> None:
    accepted = Neighbourhood(shares=5, threshold=3, members=(1, 2, 3, 4, 5))
    kwargs = {"node_id": 1, "accepted": accepted, "min_participants": 3}
    assert collect_problem({Key.SOURCE_LIST: [2, 3, 4]}, **kwargs) is None  # type: ignore[arg-type]
    assert collect_problem({Key.SOURCE_LIST: [2, 2, 3]}, **kwargs)  # type: ignore[arg-type]
    assert collect_problem({Key.SOURCE_LIST: [2, 6]}, **kwargs)  # type: ignore[arg-type]
    honest = {Key.ACTIVE_NODE_ID_LIST: [1, 2, 3, 4], Key.DEAD_NODE_ID_LIST: [5]}
    assert unmask_problem(honest, **kwargs) is None  # type: ignore[arg-type]
    repeated = {Key.ACTIVE_NODE_ID_LIST: [1, 2, 2], Key.DEAD_NODE_ID_LIST: []}
    assert unmask_problem(repeated, **kwargs)  # type: ignore[arg-type]
    assert unmask_problem({Key.ACTIVE_NODE_ID_LIST: "1"}, **kwargs)  # type: ignore[arg-type]


def test_the_floor_cannot_tell_an_invented_hospital_from_a_real_one() -> None:
    """What SecAgg+ cannot protect against: node ids and keys are the aggregator's to relay.

    An aggregator that invents two neighbours (ids and fresh keys of its own) meets
    every check; only DP-SGD then protects the hospital's update.
    """
    accepted = Neighbourhood(shares=3, threshold=2)
    invented = {"1": [b"own-1", b"own-2"], "900": [b"fake-1", b"fake-2"], "901": [b"f3", b"f4"]}
    problem, members = share_keys_problem(
        invented, node_id=1, accepted=accepted, min_participants=3
    )
    assert problem is None and members == (1, 900, 901)
