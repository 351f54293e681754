"""Time-budget arithmetic. Run: python -m pytest tests/solver/test_budget.py -q"""

import pytest

from solver.budget import BudgetPolicy, TimeBudget


def test_even_share_of_the_limit_after_the_margin():
    budget = TimeBudget(BudgetPolicy(time_limit_s=1000, margin_s=100), num_problems=3, start_s=0, now_s=0)
    assert budget.allowance_s(now_s=0) == pytest.approx(300)


def test_model_loading_time_counts_against_the_limit():
    budget = TimeBudget(BudgetPolicy(time_limit_s=1000, margin_s=100), num_problems=3, start_s=0, now_s=300)
    assert budget.allowance_s(now_s=300) == pytest.approx(200)


def test_unused_time_fills_a_buffer_drawn_up_to_max_extra():
    policy = BudgetPolicy(time_limit_s=10_000, margin_s=0, base_s=350, max_extra_s=210)
    budget = TimeBudget(policy, num_problems=10, start_s=0, now_s=0)
    budget.record(used_s=50)  # 300 s unused
    assert budget.allowance_s(now_s=50) == pytest.approx(350 + 210)
    budget.record(used_s=500)  # drew 150 of the 300
    assert budget.buffer_s == pytest.approx(150)
    assert budget.allowance_s(now_s=550) == pytest.approx(500)


def test_allowance_never_exceeds_time_left():
    policy = BudgetPolicy(time_limit_s=1000, margin_s=10, base_s=400, max_extra_s=0)
    budget = TimeBudget(policy, num_problems=5, start_s=0, now_s=0)
    assert budget.allowance_s(now_s=900) == pytest.approx(90)
    assert budget.allowance_s(now_s=995) == 0
    assert budget.is_exhausted(now_s=990)


def test_no_limit_gives_no_allowance():
    budget = TimeBudget(BudgetPolicy(), num_problems=5, start_s=0, now_s=0)
    assert budget.allowance_s(now_s=123) is None
    assert not budget.is_exhausted(now_s=1e9)


def test_default_margin_is_three_percent_within_bounds():
    assert BudgetPolicy(time_limit_s=1000).effective_margin_s == pytest.approx(30)
    assert BudgetPolicy(time_limit_s=10).effective_margin_s == 1
    assert BudgetPolicy(time_limit_s=18000).effective_margin_s == 60


@pytest.mark.parametrize("kwargs", [{"time_limit_s": -1}, {"time_limit_s": 5, "margin_s": 5}, {"base_s": -3}])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        BudgetPolicy(**kwargs)
