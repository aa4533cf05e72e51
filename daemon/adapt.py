"""Graceful degradation under latency pressure (osc-protocol §16 D50), as a small pure policy.

Each finished job is measured against its budget, ``deadline - created``: the fraction of the
budget it used. A job that used more than ``OVER_BUDGET`` of it, or missed its deadline (late,
cancelled or dropped at the deadline), raises the degradation level by one for the jobs that
follow; ``RECOVERY_JOBS`` consecutive jobs under ``UNDER_BUDGET`` lower it by one. A job in
between breaks the streak. Jobs that say nothing about speed (no deadline known yet, superseded,
failed, cancelled by the client or a session change) are not counted.

Levels, each including the ones before it:

- 0: the client's parameters as set;
- 1: ``num_candidates`` 1 (one sample instead of a batch);
- 2, 3, …: ``model_dim`` stepped down to the next smaller window of the checkpoint's
  ``num_bars_map`` (8 → 4 for yellow), never below ``lookahead_bars + num_anticipated_bars + 1``
  so the window keeps a completed bar.

The level never exceeds the last step the current parameters allow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OVER_BUDGET = 0.8  # a job above this fraction of its budget degrades the next one
UNDER_BUDGET = 0.5  # jobs below it count towards stepping back up
RECOVERY_JOBS = 4  # consecutive jobs under UNDER_BUDGET that lift one level


@dataclass
class DegradationPolicy:
    """The current level and the streak of fast jobs; not thread-safe (the loop owns it)."""

    level: int = 0
    fast_streak: int = 0

    def record(self, used: float, max_level: int) -> int:
        """Account one job that used ``used`` of its budget (``math.inf``: missed its deadline);
        returns the level for the next job, at most ``max_level``."""
        if used > OVER_BUDGET:
            self.level += 1
            self.fast_streak = 0
        elif used < UNDER_BUDGET:
            self.fast_streak += 1
            if self.fast_streak >= RECOVERY_JOBS:
                self.level = max(self.level - 1, 0)
                self.fast_streak = 0
        else:
            self.fast_streak = 0
        self.level = max(min(self.level, max_level), 0)
        return self.level

    def reset(self) -> None:
        self.level = 0
        self.fast_streak = 0


def budget_used(status: str, reason: str, latency_s: float, budget_s: float | None) -> float | None:
    """The fraction of its budget a job used, ``math.inf`` when it missed the deadline, or None
    when the outcome says nothing about speed. ``status``/``reason`` are the worker's."""
    if budget_s is None or budget_s <= 0:
        return None
    if status == "done":
        return max(latency_s, 0.0) / budget_s
    if status == "late":
        return math.inf
    if status == "cancelled" and reason == "deadline":
        return math.inf
    if status == "dropped" and reason.startswith("deadline passed"):
        return math.inf
    return None


def degradation_steps(
    params: Mapping[str, Any], window_sizes: Sequence[int]
) -> list[dict[str, Any]]:
    """The parameter overlay of each level for these parameters (index = level)."""
    steps: list[dict[str, Any]] = [{}, {"num_candidates": 1}]
    model_dim = int(params["model_dim"])
    smallest = int(params["lookahead_bars"]) + int(params["num_anticipated_bars"]) + 1
    for size in sorted({int(s) for s in window_sizes if smallest <= s < model_dim}, reverse=True):
        steps.append({"num_candidates": 1, "model_dim": size})
    return steps


def degrade(
    params: Mapping[str, Any], level: int, window_sizes: Sequence[int]
) -> tuple[dict[str, Any], int]:
    """``params`` with the overlay of ``level`` (clamped to the steps available) and that level."""
    steps = degradation_steps(params, window_sizes)
    applied = max(min(level, len(steps) - 1), 0)
    return {**params, **steps[applied]}, applied


__all__ = [
    "OVER_BUDGET",
    "RECOVERY_JOBS",
    "UNDER_BUDGET",
    "DegradationPolicy",
    "budget_used",
    "degradation_steps",
    "degrade",
]
