"""The recovery policy alone: loss budget, backoff, fallback and re-probe, on a fake clock."""

from __future__ import annotations

import pytest

from gpu_seg.resilience import Backoff, LossBucket, LossBudget, RecoveryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_allows_capacity_losses_then_refuses():
    clock = Clock()
    budget = LossBucket(LossBudget(capacity=3, forgive_after=60.0), clock)
    assert [budget.record_loss() for _ in range(4)] == [True, True, True, False]


def test_budget_forgives_one_loss_per_interval():
    clock = Clock()
    budget = LossBucket(LossBudget(capacity=2, forgive_after=60.0), clock)
    assert budget.record_loss() and budget.record_loss()
    clock.now += 60.0  # one loss forgiven
    assert budget.level == pytest.approx(1.0)
    assert budget.record_loss()
    assert not budget.record_loss()
    clock.now += 1e6
    assert budget.level == 0.0


def test_budget_rejects_nonsense():
    with pytest.raises(ValueError):
        LossBudget(capacity=-1)
    with pytest.raises(ValueError):
        LossBudget(forgive_after=0)


def test_backoff_grows_and_caps():
    backoff = Backoff(base=0.05, factor=2.0, cap=0.3)
    assert [backoff.delay(n) for n in range(6)] == [0.0, 0.05, 0.1, 0.2, 0.3, 0.3]


def test_policy_backs_off_for_losses_in_quick_succession_only():
    clock = Clock()
    policy = RecoveryPolicy(budget=LossBudget(capacity=10), clock=clock, quick_succession=5.0).new_state()
    assert policy.record_loss() == (True, 0.0)
    clock.now += 1.0
    assert policy.record_loss() == (True, 0.05)
    clock.now += 1.0
    assert policy.record_loss() == (True, 0.1)
    clock.now += 100.0
    assert policy.record_loss() == (True, 0.0)


def test_policy_fallback_and_reprobe_schedule():
    clock = Clock()
    policy = RecoveryPolicy(budget=LossBudget(capacity=1), clock=clock, reprobe_interval=30.0).new_state()
    assert policy.record_loss()[0]
    may_rebuild, _ = policy.record_loss()
    assert not may_rebuild
    policy.enter_fallback("budget")
    assert policy.fallback_active and not policy.probe_due()
    clock.now += 29.9
    assert not policy.probe_due()
    clock.now += 0.2
    assert policy.probe_due()
    policy.probe_failed()
    assert not policy.probe_due()
    clock.now += 30.0
    assert policy.probe_due()
    policy.leave_fallback()
    assert not policy.fallback_active and policy.bucket.level == 0.0


def test_one_policy_shared_by_two_states_keeps_them_independent():
    clock = Clock()
    policy = RecoveryPolicy(budget=LossBudget(capacity=1), clock=clock)
    first, second = policy.new_state(), policy.new_state()
    assert first.record_loss()[0] and not first.record_loss()[0]
    first.enter_fallback("budget")
    assert second.record_loss()[0] and not second.fallback_active


def test_policy_settings_are_immutable():
    policy = RecoveryPolicy()
    with pytest.raises(AttributeError):
        policy.reprobe_interval = 1.0  # type: ignore[misc]
