"""The Locust users' retry budget (Finagle's model): deposits, withdrawals, ttl and floor."""

from __future__ import annotations

import math

import pytest

from loadtests.retrybudget import RetryBudget, Window


class Clock:
    """A clock the test moves by hand: no sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _retries(budget: RetryBudget, wanted: int) -> int:
    return sum(budget.try_withdraw() for _ in range(wanted))


def test_a_fifth_of_the_first_attempts_may_be_retried_without_a_floor():
    clock = Clock()
    budget = RetryBudget(ratio=0.2, floor_per_s=0, clock=clock)
    assert not budget.try_withdraw()  # nothing deposited, no reserve
    for _ in range(100):
        budget.deposit()
    assert budget.balance() == 20
    assert _retries(budget, 50) == 20
    assert (budget.granted, budget.refused) == (20, 31)
    assert budget.balance() == 0


def test_the_floor_is_a_reserve_of_floor_times_ttl_retries():
    clock = Clock()
    budget = RetryBudget(ratio=0.2, floor_per_s=1.0, ttl_s=10, clock=clock)
    assert _retries(budget, 30) == 10  # before any request: the reserve alone
    for _ in range(10):
        budget.deposit()
    assert _retries(budget, 30) == 2


def test_deposits_and_withdrawals_expire_after_the_ttl():
    clock = Clock()
    budget = RetryBudget(ratio=0.5, floor_per_s=0.5, ttl_s=10, clock=clock)
    for _ in range(20):
        budget.deposit()
    assert _retries(budget, 100) == 15  # 10 earned plus 5 of reserve
    clock.now += 10.0
    # The window has moved on: the old deposits and withdrawals are gone, the reserve is back.
    assert budget.balance() == 5
    assert _retries(budget, 100) == 5


def test_a_retry_storm_is_held_to_the_ratio_plus_the_floor_over_a_long_run():
    """Every request fails and wants two retries; what is sent stays within the budget."""
    clock = Clock()
    budget = RetryBudget(ratio=0.2, floor_per_s=1.0, ttl_s=10, clock=clock)
    first = sent = 0
    for _ in range(600):  # 60 s at 10 first attempts a second
        clock.now += 0.1
        budget.deposit()
        first += 1
        sent += _retries(budget, 2)
    windows = math.ceil(60 / (10 - 10 / 10))  # a deposit may leave up to one slice early
    assert sent <= 0.2 * first + 1.0 * 10 * windows
    assert sent >= 0.2 * first  # and the budget is actually spent
    assert budget.refused == 2 * first - sent


def test_ratio_zero_and_floor_zero_allow_no_retry():
    budget = RetryBudget(ratio=0, floor_per_s=0, clock=Clock())
    budget.deposit()
    assert not budget.try_withdraw() and budget.balance() == 0


def test_ratio_zero_leaves_only_the_floor():
    clock = Clock()
    budget = RetryBudget(ratio=0, floor_per_s=2, ttl_s=5, clock=clock)
    for _ in range(1000):
        budget.deposit()  # earns nothing
    assert _retries(budget, 100) == 10


def test_a_refusal_leaves_the_balance_untouched():
    budget = RetryBudget(ratio=0.25, floor_per_s=0, clock=Clock())
    for _ in range(3):
        budget.deposit()
    assert not budget.try_withdraw()
    budget.deposit()
    assert budget.try_withdraw()


@pytest.mark.parametrize(
    "kwargs",
    [{"ratio": -0.1}, {"ratio": 1001}, {"ratio": math.nan}, {"floor_per_s": -1},
     {"floor_per_s": math.inf}, {"ttl_s": 0}],
)  # fmt: skip
def test_out_of_range_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetryBudget(**kwargs)


def test_the_window_forgets_slices_it_has_passed_even_after_a_long_pause():
    clock = Clock()
    window = Window(10, 10, clock)
    window.add(5)
    clock.now += 5
    window.add(7)
    assert window.total() == 12
    clock.now += 5  # the first slot has left the window
    assert window.total() == 7
    clock.now += 3600
    assert window.total() == 0
