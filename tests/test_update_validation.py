"""Update screening for the robust mode: layout, finiteness, norm, sample count, no leaks."""

import logging
import math

import numpy as np
import pytest
import torch

from fedcare.server.update_validation import (
    Rejection,
    UpdateBounds,
    UpdateBoundsError,
    screen_replies,
    update_norm,
    update_problems,
)
from fedcare.shared.serialization import ModelLayout, get_weights

CANARY = 987654.321
"""Planted in hostile updates; no problem message or log line may repeat it."""

BOUNDS = UpdateBounds(
    shapes=((2, 2), (2,)), dtypes=("float32", "float32"), max_norm=10.0, max_examples=1000
)


def _update(scale: float = 0.5) -> list[np.ndarray]:
    return [np.full((2, 2), scale, dtype=np.float32), np.full((2,), scale, dtype=np.float32)]


def _with_canary(arrays: list[np.ndarray]) -> list[np.ndarray]:
    planted = [a.copy() for a in arrays]
    planted[-1].flat[0] = CANARY
    return planted


def _no_canary(text: str) -> None:
    assert "987654" not in text


def test_valid_update_has_no_problems() -> None:
    assert update_problems(_update(), 12, BOUNDS) == []


def test_bounds_from_layout_accept_what_get_weights_sends() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    layout = ModelLayout.of(model)
    bounds = UpdateBounds.from_layout(layout, max_norm=100.0, max_examples=50)
    assert bounds.shapes == layout.shapes
    assert bounds.dtypes == ("float32",) * len(layout.shapes)
    assert (bounds.max_norm, bounds.max_examples) == (100.0, 50)
    # BatchNorm's int64 counter travels as float32 too: get_weights casts everything.
    assert update_problems(get_weights(model), 10, bounds) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries_are_counted(bad: float) -> None:
    arrays = _with_canary(_update())
    arrays[0][0, 0] = bad
    arrays[0][1, 1] = bad
    problems = update_problems(arrays, 12, BOUNDS)
    assert problems == ["array 0 holds 2 non-finite entries (NaN or infinity)"]
    _no_canary(" ".join(problems))


def test_wrong_shape_names_both_shapes() -> None:
    arrays = _with_canary(_update())
    arrays[0] = np.zeros((3,), dtype=np.float32)
    problems = update_problems(arrays, 12, BOUNDS)
    assert "array 0 has shape (3,), expected (2, 2)" in problems
    _no_canary(" ".join(problems))


@pytest.mark.parametrize("count", [0, 1, 3])
def test_wrong_array_count_is_one_problem(count: int) -> None:
    arrays = [*_with_canary(_update()), np.zeros((2,), dtype=np.float32)][:count]
    problems = update_problems(arrays, 12, BOUNDS)
    assert f"update has {count} arrays, expected 2" in problems
    assert not any("shape" in p for p in problems)
    _no_canary(" ".join(problems))


def test_wrong_dtype_is_named() -> None:
    arrays = [a.astype(np.float64) for a in _update()]
    problems = update_problems(arrays, 12, BOUNDS)
    assert problems == [
        "array 0 has dtype float64, expected float32",
        "array 1 has dtype float64, expected float32",
    ]


def test_huge_norm_is_reported_without_the_value_behind_it() -> None:
    arrays = [np.zeros((2, 2), dtype=np.float32), np.zeros((2,), dtype=np.float32)]
    arrays[1][0] = CANARY  # the norm equals the lone entry, so it must not print in full
    problems = update_problems(arrays, 12, BOUNDS)
    assert len(problems) == 1
    assert "exceeds the bound 10" in problems[0]
    _no_canary(problems[0])


def test_norm_at_the_bound_passes() -> None:
    arrays = [np.zeros((2, 2), dtype=np.float32), np.array([6.0, 8.0], dtype=np.float32)]
    assert update_problems(arrays, 12, BOUNDS) == []


@pytest.mark.parametrize(
    ("num_examples", "expected"),
    [
        (0, "num_examples is 0; an update needs at least 1 training row"),
        (-5, "num_examples is -5; an update needs at least 1 training row"),
        (10**9, "num_examples 1000000000 exceeds the plausible maximum 1000"),
        (3.5, "num_examples is a float, expected a whole number"),
        (True, "num_examples is a bool, expected a whole number"),
        ("12", "num_examples is a str, expected a whole number"),
    ],
)
def test_implausible_sample_counts(num_examples: object, expected: str) -> None:
    loose = UpdateBounds(BOUNDS.shapes, BOUNDS.dtypes, max_norm=1e7, max_examples=1000)
    problems = update_problems(_with_canary(_update()), num_examples, loose)
    assert problems == [expected]
    _no_canary(problems[0])


def test_numpy_integer_sample_count_is_accepted() -> None:
    assert update_problems(_update(), np.int64(12), BOUNDS) == []


def test_every_problem_is_reported_together() -> None:
    arrays = _with_canary(_update())
    arrays[0] = arrays[0].astype(np.float64)
    arrays[0][0, 0] = np.nan
    problems = update_problems(arrays, 0, BOUNDS)
    assert problems == [
        "array 0 has dtype float64, expected float32",
        "array 0 holds 1 non-finite entries (NaN or infinity)",
        "num_examples is 0; an update needs at least 1 training row",
    ]
    _no_canary(" ".join(problems))


def test_non_numeric_array_is_a_dtype_problem_only() -> None:
    arrays = [np.array([["a", "b"], ["c", "d"]]), np.zeros((2,), dtype=np.float32)]
    problems = update_problems(arrays, 12, BOUNDS)
    assert len(problems) == 1
    assert problems[0].startswith("array 0 has dtype str")


def test_update_norm() -> None:
    assert update_norm([np.array([3.0], np.float32), np.array([[4.0]], np.float32)]) == 5.0
    assert update_norm([]) == 0.0
    assert update_norm([np.zeros(3, np.float32), np.zeros(0, np.float32)]) == 0.0
    assert update_norm([np.array([1, -1, 1, -1], np.int8)]) == 2.0


def test_update_norm_does_not_overflow() -> None:
    big32 = np.array([3e38, 3e38], dtype=np.float32)  # squares overflow float32
    assert update_norm([big32]) == pytest.approx(float(np.float32(3e38)) * math.sqrt(2))
    big64 = np.array([1e200, 1e200])  # squares overflow even float64
    assert update_norm([big64, big64]) == pytest.approx(2e200)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_update_norm_of_non_finite_is_inf(bad: float) -> None:
    assert update_norm([np.array([1.0, bad], np.float32), np.ones(2, np.float32)]) == math.inf


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shapes": ((2,),), "dtypes": ("float32", "float32")},
        {"dtypes": ("float32", "no-such-dtype")},
        {"max_norm": 0.0},
        {"max_norm": -1.0},
        {"max_norm": math.nan},
        {"max_examples": 0},
        {"max_examples": 2.5},
    ],
)
def test_inconsistent_bounds_are_refused(kwargs: dict[str, object]) -> None:
    settings: dict[str, object] = {
        "shapes": ((2, 2), (2,)),
        "dtypes": ("float32", "float32"),
        "max_norm": 10.0,
        "max_examples": 1000,
    } | kwargs
    with pytest.raises(UpdateBoundsError):
        UpdateBounds(**settings)  # type: ignore[arg-type]


def test_screen_replies_keeps_good_ones_in_order(caplog: pytest.LogCaptureFixture) -> None:
    nan_update = _with_canary(_update())
    nan_update[0][0, 0] = np.nan
    replies = [
        ("alpha", _update(0.1), 10),
        ("bravo", nan_update, 10),
        ("charlie", _update(0.2), 20),
        ("delta", _with_canary(_update()), 10),
        ("echo", _update(0.3), 0),
        ("foxtrot", _update(0.4), 40),
    ]
    with caplog.at_level(logging.WARNING, logger="fedcare.server.update_validation"):
        accepted, rejected = screen_replies(replies, BOUNDS)
    assert [name for name, _, _ in accepted] == ["alpha", "charlie", "foxtrot"]
    assert accepted[1][1] is replies[2][1]
    assert [r.hospital for r in rejected] == ["bravo", "delta", "echo"]
    assert all(isinstance(r, Rejection) and r.reasons for r in rejected)
    assert "non-finite" in rejected[0].reasons[0]
    assert "exceeds the bound" in rejected[1].reasons[0]
    assert rejected[2].reasons == ("num_examples is 0; an update needs at least 1 training row",)
    assert rejected[2].describe().startswith("echo: update rejected (num_examples is 0")
    logged = [record.getMessage() for record in caplog.records]
    assert [line.split(":")[0] for line in logged] == ["bravo", "delta", "echo"]
    _no_canary(" ".join(logged))
