"""Jobs: trigger rule, bar clock, window and request shapes, seeds, prompt state (osc-protocol §11)."""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from sideman.daemon.jobs import (
    BarClock,
    build_job,
    derive_seed,
    job_bars,
    job_window,
    trigger_target,
)
from sideman.daemon.rolling import RollingScore
from sideman.engine.vocab import EncoderConfig

CONFIG = EncoderConfig.yellow()
COND, AGENT = 10, 20


@dataclass
class Track:
    track_id: int
    program: int
    is_drum: bool
    is_agent: bool
    params: dict[str, Any] = field(default_factory=dict)


def params(**overrides: Any) -> dict[str, Any]:
    base = {
        "buffer_bars": 4, "lookahead_bars": 1, "num_anticipated_bars": 1, "adapt_buffer": True,
        "model_dim": 8, "mask_mode": "attention", "warmup_policy": "a_empty", "sampling_seed": 7,
        "num_candidates": 2, "density_hard_limit": 16,
    }  # fmt: skip
    return {**base, **overrides}


def session(
    bars: int, first_bar: int = 0, agent_params: dict | None = None, cond_params: dict | None = None
):
    """A rolling score with one conditioning track (a note per bar) and one agent, bars closed."""
    score = RollingScore(supported_meters=CONFIG.time_signatures)
    score.add_track(COND, 0, False, False)
    score.add_track(AGENT, 33, False, True)
    for bar in range(first_bar, first_bar + bars):
        score.add_note(COND, bar, 60 + bar % 12, 90, 0.0, 0.5)
        score.end_bar(bar, 4, 4)
    tracks = {
        COND: Track(COND, 0, False, False, {"ignore": False, **(cond_params or {})}),
        AGENT: Track(AGENT, 33, False, True, {"temperature": 1.0, "min_pitch": 0, "max_pitch": 127, **(agent_params or {})}),
    }  # fmt: skip
    return score, tracks


def make_job(score, tracks, target, job_id=1, **kwargs):
    settings = kwargs.pop("params", None) or params()
    return build_job(
        job_id=job_id, session_token=3, target_bar=target, score=score, tracks=tracks,
        params=settings, encoder_config=CONFIG, now=100.0, **kwargs,
    )  # fmt: skip


def prompt_of(job, track_id):
    index = job.snapshot.track_ids.index(track_id)
    return next(p for p in job.request.tracks if p.id == index)


# ---- trigger ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("adapt", "expected"),
    [
        (True, {1: None, 2: None, 3: 4, 4: 5, 5: 6}),
        (False, {1: None, 2: None, 3: None, 4: 5, 5: 6}),
    ],
)
def test_trigger_rule_table_for_adapt_buffer_on_and_off(adapt, expected):
    settings = params(adapt_buffer=adapt)
    got = {p: trigger_target(p - 1, p, settings) for p in expected}
    assert got == expected


def test_lookahead_moves_the_target_and_the_first_trigger():
    settings = params(lookahead_bars=2)
    assert trigger_target(1, 2, settings) == 4  # p + k = 4 >= B
    assert trigger_target(0, 1, settings) is None


def test_only_a_rising_playhead_triggers():
    settings = params()
    assert trigger_target(5, 5, settings) is None
    assert trigger_target(6, 5, settings) is None
    assert trigger_target(5, 8, settings) == 9  # a jump still triggers once, for the newest bar


def test_duplicate_bar_end_never_retriggers():
    score, _ = session(5)
    repeat = score.end_bar(4, 4, 4)
    assert not repeat.new
    assert trigger_target(repeat.playhead_before, repeat.playhead, params()) is None


def test_buffer_counts_bars_from_the_session_origin():
    score, _ = session(2, first_bar=100)
    assert score.origin == 100 and score.playhead == 102
    assert trigger_target(101, 102, params(), origin=score.origin) is None
    assert trigger_target(102, 103, params(), origin=score.origin) == 104


# ---- bar clock ---------------------------------------------------------------------------------


def test_bar_clock_estimates_seconds_per_quarter_and_predicts_bar_starts():
    clock = BarClock()
    assert clock.seconds_per_quarter() is None
    assert clock.bar_start_time(5, 4, lambda b: (4, 4)) is None
    for bar in range(4):
        clock.bar_ended(bar, (4, 4), now=10.0 + 2.0 * bar)  # 2 s per 4/4 bar = 120 BPM
    assert clock.seconds_per_quarter() == pytest.approx(0.5)
    assert clock.bpm() == pytest.approx(120.0)
    meters = {4: (4, 4), 5: (6, 8)}
    # bar 4 started at 16.0; bar 5 starts 2 s later, bar 6 after a 6/8 bar (1.5 s) more
    assert clock.bar_start_time(4, 4, meters.get) == pytest.approx(16.0)
    assert clock.bar_start_time(6, 4, meters.get) == pytest.approx(16.0 + 2.0 + 1.5)


def test_bar_clock_scales_intervals_by_meter_and_ignores_jumps_and_repeats():
    clock = BarClock()
    clock.bar_ended(0, (4, 4), now=0.0)
    clock.bar_ended(1, (3, 4), now=1.5)  # 3 quarters in 1.5 s: 0.5 s per quarter
    clock.bar_ended(1, (3, 4), now=9.0)  # repeat: ignored
    clock.bar_ended(5, (4, 4), now=20.0)  # jump: re-anchors only
    assert clock.seconds_per_quarter() == pytest.approx(0.5)
    assert clock.bar_start_time(6, 6, lambda b: (4, 4)) == pytest.approx(20.0)


def test_bar_clock_median_resists_one_outlier():
    clock = BarClock()
    times = [0.0, 2.0, 4.0, 6.0, 14.0, 16.0, 18.0]  # one 8 s bar among 2 s bars
    for bar, t in enumerate(times):
        clock.bar_ended(bar, (4, 4), now=t)
    assert clock.seconds_per_quarter() == pytest.approx(0.5)


def test_tempo_override_wins_until_cleared_and_reset_forgets_everything():
    clock = BarClock()
    clock.bar_ended(0, (4, 4), now=0.0)
    clock.bar_ended(1, (4, 4), now=2.0)
    clock.set_tempo(60.0)
    assert clock.seconds_per_quarter() == pytest.approx(1.0)
    clock.set_tempo(None)
    assert clock.seconds_per_quarter() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="beats per minute"):
        clock.set_tempo(float("nan"))
    clock.set_tempo(90.0)
    clock.reset()
    assert clock.seconds_per_quarter() is None


# ---- windows and request shapes ---------------------------------------------------------------------


def test_job_bars_skip_bars_already_generated_or_in_flight():
    assert job_bars(10, 3, {10}) == (11, 12)
    assert job_bars(10, 1, {10}) == ()
    assert job_window((11, 12), origin=0, model_dim=8) == (5, 13)
    assert job_window((4,), origin=0, model_dim=8) == (0, 8)
    assert job_window((103,), origin=100, model_dim=8) == (100, 108)


def test_warm_up_job_window_starts_at_origin_and_masks_future_bars():
    score, tracks = session(4)  # bars 0-3 closed, playhead 4
    job = make_job(score, tracks, target=4)
    assert job.error is None
    assert (job.window_start, job.bars, job.target_bar) == (0, (4,), 4)
    assert job.snapshot.n_bars == 8
    cond, agent = prompt_of(job, COND), prompt_of(job, AGENT)
    assert cond.mask_bars == (4, 5, 6, 7) and cond.bars == ()
    assert agent.bars == (4,)
    assert agent.mask_bars == (5, 6, 7)  # nothing after the job's bars is generated (D46)
    assert not agent.autoregressive
    assert job.request.config.bars_per_step == 1
    assert job.prompt_state == {
        "target_bar": 4, "start_bar": 0, "end_bar": 8,
        "tracks": [
            {"id": 0, "is_agent": False, "states": list("CCCCAAAA")},
            {"id": 1, "is_agent": True, "states": list("CCCCTAAA")},
        ],
    }  # fmt: skip


def test_steady_state_window_ends_at_the_job_and_the_agent_is_autoregressive():
    score, tracks = session(10)  # playhead 10
    job = make_job(score, tracks, target=11, params=params(mask_mode="remove"))
    assert job.window_start == 4
    cond, agent = prompt_of(job, COND), prompt_of(job, AGENT)
    assert cond.mask_bars == (6, 7)  # absolute bars 10 (playing) and 11
    assert agent.bars == (7,) and agent.autoregressive and agent.mask_bars == ()
    state = job.prompt_state
    assert (state["start_bar"], state["end_bar"]) == (4, 12)
    assert state["tracks"][0]["states"] == list("CCCCCCMM")
    assert state["tracks"][1]["states"] == list("CCCCCCCT")


def test_anticipated_bars_are_made_once_and_a_fully_generated_target_gives_no_job():
    score, tracks = session(10)
    empty = np.zeros(0, dtype=np.int32)
    score.set_generated(AGENT, 12, empty, empty, empty, empty)
    job = make_job(score, tracks, target=11, params=params(num_anticipated_bars=3))
    assert job.bars == (11, 13)
    assert job.request.config.bars_per_step == 2
    assert (
        make_job(
            score, tracks, target=11, params=params(num_anticipated_bars=3), in_flight={11, 13}
        )
        is None
    )


def test_ignored_conditioning_track_is_dropped_from_the_prompt_without_mask_bars():
    score, tracks = session(10, cond_params={"ignore": True})
    job = make_job(score, tracks, target=11)
    cond = prompt_of(job, COND)
    assert cond.ignore and cond.mask_bars == () and cond.bars == ()
    assert job.error is None


@pytest.mark.parametrize("policy", ["a_masked", "b", "b_collapse"])
def test_masked_warm_up_masks_only_agent_bars_without_notes(policy):
    score, tracks = session(6)
    one = np.array([0], dtype=np.int32)
    score.set_generated(AGENT, 5, one, one + 12, one + 64, one + 80)
    job = make_job(score, tracks, target=6, params=params(warmup_policy=policy))
    agent = prompt_of(job, AGENT)
    assert agent.bars == (6,)
    assert agent.mask_bars == (0, 1, 2, 3, 4, 7)  # bar 5 holds generated notes: context


def test_a_empty_keeps_empty_agent_bars_as_context():
    score, tracks = session(6)
    assert prompt_of(make_job(score, tracks, target=6), AGENT).mask_bars == (7,)


def test_inference_config_combines_params_and_agent_temperature():
    score, tracks = session(10, agent_params={"temperature": 0.5})
    settings = params(
        temperature=1.5, top_k=40, mask_k=3, num_candidates=4, max_attempts=5, model_dim=4
    )
    config = make_job(score, tracks, target=11, params=settings).request.config
    assert config.temperature == pytest.approx(0.75)
    assert (config.top_k, config.mask_k, config.model_dim, config.density_hard_limit) == (
        40,
        3,
        4,
        16,
    )
    assert (config.num_candidates, config.max_attempts) == (4, 1)  # one batch replaces retries
    single = make_job(
        score, tracks, target=11, params={**settings, "num_candidates": 1}
    ).request.config
    assert single.max_attempts == 5


def test_every_agent_is_in_one_request():
    score, tracks = session(10)
    score.add_track(30, 40, False, True)
    tracks[30] = Track(30, 40, False, True, {"temperature": 1.0, "min_pitch": 48, "max_pitch": 72})
    job = make_job(score, tracks, target=11)
    assert job.agent_track_ids == (AGENT, 30)
    assert prompt_of(job, 30).bars == prompt_of(job, AGENT).bars == (7,)
    assert job.pitch_ranges == {30: (48, 72)}


def test_attribute_overrides_go_to_the_agent_prompt():
    score, tracks = session(10)
    job = make_job(score, tracks, target=11, attributes={"min_polyphony": 1})
    assert dict(prompt_of(job, AGENT).attributes) == {"min_polyphony": 1}
    assert dict(prompt_of(job, COND).attributes) == {}


def test_a_request_the_engine_would_reject_gives_a_job_with_an_error():
    score, tracks = session(10)
    job = make_job(
        score, tracks, target=11, params=params(mask_mode="token")
    )  # yellow has no MaskBar
    assert job.request is None
    assert "mask_mode" in job.error
    job = make_job(score, tracks, target=11, attributes={"tension": 3})
    assert job.request is None and "tension" in job.error


# ---- seeds ------------------------------------------------------------------------------------------


def test_seed_differs_per_bar_and_is_reproducible():
    seeds = [derive_seed(7, bar) for bar in range(50)]
    assert len(set(seeds)) == 50
    assert seeds == [derive_seed(7, bar) for bar in range(50)]
    assert derive_seed(8, 3) != derive_seed(7, 3)
    assert all(0 <= s < 2**31 for s in seeds)
    score, tracks = session(10)
    first, again = make_job(score, tracks, target=11), make_job(score, tracks, target=11, job_id=2)
    assert (
        first.request.config.seed == again.request.config.seed == derive_seed(7, 11) == first.seed
    )
    assert make_job(score, tracks, target=12).seed != first.seed


def test_free_running_seed_is_drawn_per_job_and_recorded():
    score, tracks = session(10)
    jobs = [make_job(score, tracks, target=11, params=params(sampling_seed=-1)) for _ in range(5)]
    seeds = {job.seed for job in jobs}
    assert len(seeds) > 1
    assert all(job.request.config.seed == job.seed >= 0 for job in jobs)


def test_job_carries_identity_deadline_and_params():
    score, tracks = session(10)
    job = make_job(score, tracks, target=11, deadline=101.5)
    assert (job.job_id, job.session_token, job.deadline, job.created) == (1, 3, 101.5, 100.0)
    assert job.params["density_hard_limit"] == 16
