"""Before training, each hospital computes its noise-to-signal; the report shows each
hospital's noise multiplier and warns where DP noise swamps what a site can learn."""

import pytest

from fedcare.server.report import _noise_warnings, noise_by_hospital
from fedcare.server.run_record import RunRecord
from fedcare.shared.errors import SiteTooSmallError
from fedcare.shared.keys import ReplyKey
from fedcare.shared.privacy import (
    NOISE_TO_SIGNAL_WARNING,
    DpSgdPlan,
    check_noise,
    plan_dp_sgd,
)


def _plan(n: int, epsilon: float, batch: int = 32):  # type: ignore[no-untyped-def]
    return plan_dp_sgd(
        n_samples=n, batch_size=batch, local_epochs=2, rounds=5, target_epsilon=epsilon, delta=1e-5
    )


def test_a_site_big_enough_gets_its_ratio() -> None:
    plan = _plan(300, 3.0)
    ratio = check_noise(plan, 300, site="st-mary")
    assert ratio == pytest.approx(plan.noise_multiplier / (plan.sample_rate * 300))
    assert ratio < NOISE_TO_SIGNAL_WARNING


def test_a_site_too_small_for_its_budget_declines_naming_the_noise() -> None:
    # What a 12-row site would need for epsilon 0.05 over 10 full-batch steps.
    plan = DpSgdPlan(150.0, 1.0, 2, 5, 0.05, 1e-5)
    with pytest.raises(SiteTooSmallError, match="declines to train") as declined:
        check_noise(plan, 12, site="st-mary")
    assert f"{plan.noise_multiplier:.2f}" in str(declined.value)


def test_the_report_shows_each_hospitals_noise_and_warns_on_a_noisy_one() -> None:
    record = RunRecord()
    for name, (noise, rate, rows) in {
        "big": (1.0, 0.1, 400),  # expected batch 40: 0.025
        "small": (24.0, 1.0, 12),  # expected batch 12: 2.0
    }.items():
        hospital = record.round(1).hospital(name)
        hospital.train = {ReplyKey.NOISE_MULTIPLIER: noise, ReplyKey.SAMPLE_RATE: rate}
        hospital.num_train_examples = rows
    ratios = noise_by_hospital(record)
    assert ratios == pytest.approx({"big": 0.025, "small": 2.0})
    (warning,) = _noise_warnings(ratios)
    assert warning.startswith("small: DP-SGD noise-to-signal 2.000")
