"""Adaptation under latency pressure (osc-protocol §16 D50): the degradation policy as a pure class."""

import math

import pytest

from sideman.daemon.adapt import (
    RECOVERY_JOBS,
    DegradationPolicy,
    budget_used,
    degradation_steps,
    degrade,
)

YELLOW_WINDOWS = (4, 8)
PARAMS = {"model_dim": 8, "num_candidates": 3, "lookahead_bars": 1, "num_anticipated_bars": 1}


def test_a_job_over_80_percent_of_its_budget_degrades_the_next_one_level():
    policy = DegradationPolicy()
    assert policy.record(0.81, max_level=2) == 1
    assert policy.record(0.9, max_level=2) == 2


def test_the_level_never_exceeds_what_the_parameters_allow():
    policy = DegradationPolicy()
    for _ in range(5):
        policy.record(math.inf, max_level=2)
    assert policy.level == 2


def test_a_job_between_50_and_80_percent_keeps_the_level():
    policy = DegradationPolicy(level=1)
    assert policy.record(0.8, max_level=2) == 1
    assert policy.record(0.5, max_level=2) == 1


def test_four_consecutive_fast_jobs_step_back_up_one_level():
    policy = DegradationPolicy(level=2)
    for _ in range(RECOVERY_JOBS - 1):
        assert policy.record(0.3, max_level=2) == 2
    assert policy.record(0.3, max_level=2) == 1
    for _ in range(RECOVERY_JOBS):
        policy.record(0.1, max_level=2)
    assert policy.level == 0


def test_a_middling_job_breaks_the_fast_streak():
    policy = DegradationPolicy(level=1)
    for used in (0.2, 0.2, 0.2, 0.6, 0.2, 0.2, 0.2):
        policy.record(used, max_level=2)
    assert policy.level == 1
    assert policy.record(0.2, max_level=2) == 0


def test_a_slow_job_resets_the_streak_and_degrades():
    policy = DegradationPolicy(level=1)
    for used in (0.2, 0.2, 0.2, 0.95):
        policy.record(used, max_level=2)
    assert policy.level == 2 and policy.fast_streak == 0


def test_reset_returns_to_full_quality():
    policy = DegradationPolicy(level=2, fast_streak=3)
    policy.reset()
    assert (policy.level, policy.fast_streak) == (0, 0)


@pytest.mark.parametrize(
    ("status", "reason", "latency", "budget", "expected"),
    [
        ("done", "", 0.5, 2.0, 0.25),
        ("done", "silent bar", 1.8, 2.0, 0.9),
        ("late", "finished 30 ms after its deadline", 2.03, 2.0, math.inf),
        ("cancelled", "deadline", 2.0, 2.0, math.inf),
        ("dropped", "deadline passed 12 ms before it could start", 2.0, 2.0, math.inf),
        ("dropped", "superseded by bar 7", 0.1, 2.0, None),
        ("cancelled", "cancelled by /midigpt/agent/cancel", 0.1, 2.0, None),
        ("cancelled", "session stopped", 0.1, 2.0, None),
        ("failed", "invalid request: x", 0.1, 2.0, None),
        ("done", "", 0.5, None, None),
    ],
)
def test_budget_used_counts_speed_only_when_the_outcome_says_something(status, reason, latency, budget, expected):
    assert budget_used(status, reason, latency, budget) == expected


def test_levels_are_single_candidate_then_smaller_windows():
    steps = degradation_steps(PARAMS, YELLOW_WINDOWS)
    assert steps == [{}, {"num_candidates": 1}, {"num_candidates": 1, "model_dim": 4}]
    params, level = degrade(PARAMS, 2, YELLOW_WINDOWS)
    assert level == 2 and params["model_dim"] == 4 and params["num_candidates"] == 1
    assert PARAMS["model_dim"] == 8  # the client's values are not touched


def test_windows_step_down_one_at_a_time_and_keep_a_completed_bar():
    params = {**PARAMS, "model_dim": 16, "lookahead_bars": 2, "num_anticipated_bars": 2}
    steps = degradation_steps(params, (2, 4, 6, 8, 16))
    # lookahead + anticipated + 1 = 5: window 4 would leave no completed bar
    assert [step.get("model_dim") for step in steps] == [None, None, 8, 6]


def test_a_level_beyond_the_steps_is_clamped():
    params, level = degrade({**PARAMS, "model_dim": 4}, 3, YELLOW_WINDOWS)
    assert level == 1 and params["model_dim"] == 4 and params["num_candidates"] == 1
    assert degrade(PARAMS, 0, YELLOW_WINDOWS) == (PARAMS, 0)
