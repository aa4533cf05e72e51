"""Step planner (tokens.md §9, osc-protocol.md §11.8): windows, targets and context per step."""

import numpy as np
import pytest

from sideman.engine.planner import PlanError, Step, plan_request, plan_steps
from sideman.engine.request import GenerationRequest, InferenceConfig, RequestError, TrackPrompt
from sideman.engine.score import Score, TrackInfo


def one_track(n_bars, bars, model_dim, bars_per_step=1, autoregressive=False):
    selected = np.zeros((1, n_bars), dtype=bool)
    selected[0, list(bars)] = True
    return plan_steps(selected, [autoregressive], [False], model_dim, bars_per_step)


def as_rows(steps):
    return [(s.start_bar, s.end_bar, [bar for _, bar in s.targets]) for s in steps]


# ---- tokens.md §9.3 (model_dim = 4, measured on the reference) -------------------------------


@pytest.mark.parametrize(
    ("n_bars", "model_dim", "bars_per_step", "autoregressive", "expected"),
    [
        pytest.param(
            8,
            4,
            1,
            False,
            [
                (0, 4, [0]),
                (0, 4, [1]),
                (1, 5, [2]),
                (2, 6, [3]),
                (3, 7, [4]),
                (4, 8, [5]),
                (4, 8, [6]),
                (4, 8, [7]),
            ],
            id="infill-8-bars-bps1",
        ),
        pytest.param(
            8,
            4,
            2,
            False,
            [(0, 4, [0, 1]), (1, 5, [2, 3]), (3, 7, [4, 5]), (4, 8, [6, 7])],
            id="infill-bps2",
        ),
        pytest.param(
            8,
            4,
            1,
            True,
            [(0, 4, [0, 1, 2, 3]), (1, 5, [4]), (2, 6, [5]), (3, 7, [6]), (4, 8, [7])],
            id="autoregressive-8-bars",
        ),
        pytest.param(8, 8, 1, True, [(0, 8, list(range(8)))], id="autoregressive-model-dim-8"),
    ],
)
def test_reference_step_tables(n_bars, model_dim, bars_per_step, autoregressive, expected):
    steps = one_track(n_bars, range(n_bars), model_dim, bars_per_step, autoregressive)
    assert as_rows(steps) == expected
    assert all(step.autoregressive == autoregressive for step in steps)


# ---- osc-protocol.md §11.8: autoregressive agent, generation bars a right suffix ---------------
# Score length max(target + j, M) and "only [target, target + j) is kept" are the daemon's
# windowing; the planner is responsible for the steps over the suffix it is given.


@pytest.mark.parametrize(
    ("target", "j", "model_dim", "expected"),
    [
        pytest.param(4, 1, 8, [(0, 8, [4, 5, 6, 7])], id="warm-up-one-pass"),
        pytest.param(7, 1, 8, [(0, 8, [7])], id="7-1-8"),
        pytest.param(8, 1, 8, [(1, 9, [8])], id="8-1-8"),
        pytest.param(20, 1, 8, [(13, 21, [20])], id="20-1-8"),
        pytest.param(20, 2, 8, [(14, 22, [20, 21])], id="20-2-8"),
        pytest.param(21, 2, 8, [(14, 22, [21]), (15, 23, [22])], id="21-2-8-two-passes"),
        pytest.param(20, 4, 8, [(16, 24, [20, 21, 22, 23])], id="20-4-8"),
    ],
)
def test_agent_suffix_steps(target, j, model_dim, expected):
    n_bars = max(target + j, model_dim)
    steps = one_track(
        n_bars, range(target, n_bars), model_dim, bars_per_step=j, autoregressive=True
    )
    assert as_rows(steps) == expected


def test_bootstrap_b_generates_the_whole_prefix_in_three_passes():
    # target 9, j 1, M 8: score of 10 bars, every agent bar generated.
    steps = one_track(10, range(10), 8, bars_per_step=1, autoregressive=True)
    assert as_rows(steps) == [(0, 8, list(range(8))), (1, 9, [8]), (2, 10, [9])]


def test_bootstrap_b_collapse_is_one_pass_over_the_offset_score():
    # The daemon slices bars [2, 10) into an 8-bar score (offset 2); the planner sees bars 0..7.
    steps = one_track(8, range(8), 8, bars_per_step=1, autoregressive=True)
    assert as_rows(steps) == [(0, 8, list(range(8)))]


# ---- context -------------------------------------------------------------------------------


def test_steady_state_agent_window_context():
    # osc-protocol.md §11.4: k = 1, j = 1, M = 8, playhead p = 10; human bars from p on are masked.
    p, model_dim = 10, 8
    n_bars = p + 2
    selected = np.zeros((2, n_bars), dtype=bool)
    selected[1, p + 1] = True
    masked = np.zeros_like(selected)
    masked[0, p:] = True
    (step,) = plan_steps(selected, [False, True], [False, False], model_dim, 1, 1, masked)
    assert (step.start_bar, step.end_bar, step.targets) == (p - 6, p + 2, ((1, p + 1),))
    human, agent = step.context
    assert human.tolist() == [True] * 6 + [False, False]
    assert agent.tolist() == [True] * 7 + [False]


def test_ignored_track_is_never_context_and_never_a_target():
    selected = np.zeros((3, 8), dtype=bool)
    selected[0, :] = True
    steps = plan_steps(selected, [False, False, False], [False, True, False], 4)
    assert steps
    for step in steps:
        assert not step.context[1].any()
        assert step.context[2].all()
        assert all(track != 1 for track, _ in step.targets)


def test_ignored_track_with_selection_is_refused():
    selected = np.ones((1, 4), dtype=bool)
    with pytest.raises(PlanError, match="track 0 is ignored"):
        plan_steps(selected, [False], [True], 4)


def test_mask_bars_are_never_context():
    selected = np.zeros((2, 8), dtype=bool)
    selected[0, :] = True
    masked = np.zeros_like(selected)
    masked[1, 3:6] = True
    for step in plan_steps(selected, [False, False], [False, False], 4, mask_bars=masked):
        window_mask = masked[:, step.start_bar : step.end_bar]
        assert not (step.context & window_mask).any()
        assert step.context[1][~window_mask[1]].all()


def test_mask_bar_that_is_also_selected_is_refused():
    selected = np.ones((1, 4), dtype=bool)
    with pytest.raises(PlanError, match="both selected and masked"):
        plan_steps(selected, [False], [False], 4, mask_bars=selected)


def test_targets_are_not_context():
    for step in one_track(8, range(8), 4, 2):
        assert not (step.context & step.target_mask).any()


def test_autoregressive_context_is_only_already_generated_bars_and_the_prefix():
    # Partial autoregression: bars 0-1 are the fixed prefix, 2-7 are generated.
    steps = one_track(8, range(2, 8), 4, autoregressive=True)
    assert as_rows(steps) == [(0, 4, [2, 3]), (1, 5, [4]), (2, 6, [5]), (3, 7, [6]), (4, 8, [7])]
    generated: set[int] = set()
    for step in steps:
        for local, is_context in enumerate(step.context[0]):
            bar = step.start_bar + local
            assert is_context == (bar < 2 or bar in generated)
        generated.update(bar for _, bar in step.targets)


def test_other_autoregressive_track_is_hidden_until_generated():
    selected = np.zeros((2, 8), dtype=bool)
    selected[:, 4:] = True
    steps = plan_steps(selected, [True, True], [False, False], 8)
    assert [step.track_indices for step in steps] == [(0,), (1,)]
    first, second = steps
    assert first.context[1].tolist() == [True] * 4 + [False] * 4
    assert second.context[0].all()  # track 0 is now generated


def test_infill_track_sees_its_other_bars_as_context():
    step = one_track(8, range(8), 4)[2]
    assert (step.start_bar, step.targets) == (1, ((0, 2),))
    assert step.context[0].tolist() == [True, False, True, True]


def test_autoregressive_pass_runs_before_infill_and_infill_sees_its_output():
    selected = np.zeros((2, 8), dtype=bool)
    selected[0, 2:4] = True  # infill
    selected[1, 4:] = True  # autoregressive
    steps = plan_steps(selected, [False, True], [False, False], 8)
    assert [step.autoregressive for step in steps] == [True, False, False]
    assert steps[0].targets == tuple((1, bar) for bar in range(4, 8))
    assert all(step.context[1].all() for step in steps[1:])


# ---- tracks per step -------------------------------------------------------------------------


def test_infill_tracks_share_a_step_when_tracks_per_step_allows():
    selected = np.zeros((3, 4), dtype=bool)
    selected[0, 1] = selected[2, 1] = True
    (step,) = plan_steps(selected, [False] * 3, [False] * 3, 4, tracks_per_step=2)
    assert step.targets == ((0, 1), (2, 1))
    assert step.track_indices == (0, 2)


def test_one_track_per_step_splits_the_same_bar():
    selected = np.zeros((2, 4), dtype=bool)
    selected[:, 1] = True
    steps = plan_steps(selected, [False, False], [False, False], 4, tracks_per_step=1)
    assert [step.targets for step in steps] == [((0, 1),), ((1, 1),)]
    assert steps[0].context[1].tolist() == [True] * 4  # infill: the other track's bar is context


def test_autoregressive_tracks_grouped_by_tracks_per_step():
    selected = np.ones((3, 8), dtype=bool)
    steps = plan_steps(selected, [True] * 3, [False] * 3, 8, tracks_per_step=2)
    assert [step.track_indices for step in steps] == [(0, 1), (2,)]


# ---- invariants ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_every_selected_bar_is_generated_exactly_once(seed):
    rng = np.random.default_rng(seed)
    n_tracks, n_bars = int(rng.integers(1, 4)), int(rng.integers(4, 14))
    model_dim = int(rng.choice([4, 8])) if n_bars >= 8 else 4
    selected = rng.random((n_tracks, n_bars)) < 0.4
    autoregressive = rng.random(n_tracks) < 0.5
    bars_per_step = int(rng.integers(1, model_dim + 1))
    tracks_per_step = int(rng.integers(1, 3))
    steps = plan_steps(
        selected, autoregressive, [False] * n_tracks, model_dim, bars_per_step, tracks_per_step
    )
    counts = np.zeros_like(selected, dtype=int)
    for step in steps:
        assert step.end_bar - step.start_bar == model_dim
        assert list(step.targets) == sorted(step.targets)
        assert step.context.shape == (n_tracks, model_dim)
        for track, bar in step.targets:
            assert step.start_bar <= bar < step.end_bar
            counts[track, bar] += 1
    assert (counts == selected).all()


def test_bars_per_step_is_clamped_to_model_dim():
    assert as_rows(one_track(8, range(8), 4, bars_per_step=9)) == as_rows(
        one_track(8, range(8), 4, bars_per_step=4)
    )


def test_short_score_gets_one_shorter_window():
    steps = one_track(3, range(3), 4, autoregressive=True)
    assert as_rows(steps) == [(0, 3, [0, 1, 2])]


def test_context_is_read_only():
    (step,) = one_track(4, [0], 4)
    with pytest.raises(ValueError):
        step.context[0, 0] = True


def test_shape_mismatches_are_refused():
    with pytest.raises(PlanError, match="one flag per track"):
        plan_steps(np.ones((2, 4), dtype=bool), [False], [False, False], 4)
    with pytest.raises(PlanError, match="n_tracks, n_bars"):
        plan_steps(np.ones(4, dtype=bool), [False], [False], 4)


def test_steps_compare_by_value():
    assert one_track(8, range(8), 4) == one_track(8, range(8), 4)
    assert isinstance(one_track(4, [0], 4)[0], Step)


# ---- plan_request ----------------------------------------------------------------------------


def score(n_bars, *drum_flags):
    return Score.empty(n_bars, [TrackInfo(is_drum=flag) for flag in drum_flags])


def test_plan_request_builds_the_selection_from_prompts():
    request = GenerationRequest(
        (
            TrackPrompt(0, mask_bars=(10, 11)),
            TrackPrompt(1, bars=(11,), autoregressive=True),
            TrackPrompt(2, ignore=True),
        ),
        InferenceConfig(model_dim=8),
    )
    (step,) = plan_request(request, score(12, False, False, True))
    assert (step.start_bar, step.end_bar, step.targets, step.autoregressive) == (
        4,
        12,
        ((1, 11),),
        True,
    )
    assert step.context[0].tolist() == [True] * 6 + [False, False]
    assert not step.context[2].any()


def test_plan_request_refuses_bars_outside_the_score():
    request = GenerationRequest((TrackPrompt(0, bars=(9,)),))
    with pytest.raises(RequestError) as error:
        plan_request(request, score(8, False))
    assert error.value.field == "tracks[0].bars[0]"
