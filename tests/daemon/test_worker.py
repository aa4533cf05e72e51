"""GenerationWorker: one job at a time, coalescing, cancellation, deadlines, and an outcome for all."""

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from sideman.daemon.jobs import build_job
from sideman.daemon.rolling import RollingScore
from sideman.daemon.worker import GenerationWorker, fold_pitches
from sideman.engine.inference import GenerationCancelled, GenerationSession, InferenceEngine
from sideman.engine.model import ModelConfig
from sideman.engine.score import NoteArrays
from sideman.engine.vocab import EncoderConfig

TINY = ModelConfig(vocab_size=647, n_positions=1024, n_embd=64, n_layer=2, n_head=4)
CONFIG = EncoderConfig.yellow()
COND, AGENT = 10, 20
WAIT_S = 60.0  # generous: machines are noisy; only ordering is asserted


@pytest.fixture(scope="module")
def engine() -> InferenceEngine:
    return InferenceEngine.random_init(TINY, seed=0, device="cpu")


@dataclass
class Track:
    track_id: int
    program: int
    is_drum: bool
    is_agent: bool
    params: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """Collects outcomes from any thread; ``wait(n)`` blocks until n have arrived."""

    def __init__(self) -> None:
        self.outcomes: list = []
        self.started: list = []
        self._cond = threading.Condition()

    def on_start(self, job) -> None:
        with self._cond:
            self.started.append(job.job_id)

    def on_outcome(self, outcome) -> None:
        with self._cond:
            self.outcomes.append(outcome)
            self._cond.notify_all()

    def wait(self, n: int) -> list:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.outcomes) >= n, WAIT_S), self.outcomes
            return list(self.outcomes)

    def by_id(self) -> dict:
        return {o.job_id: o for o in self.outcomes}


class BlockingEngine:
    """Runs until released or cancelled, checking the cancel event like the decode loop does."""

    def __init__(self, inner: InferenceEngine) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def session(self, score, request, cancel, **kwargs):
        outer = self

        class Session:
            def run(self):
                outer.entered.release()
                while not outer.release.wait(0.005):
                    if cancel.is_set():
                        raise GenerationCancelled("generation cancelled")
                return outer.inner.session(score, request, cancel, **kwargs).run()

        return Session()


class FailingOnceEngine:
    def __init__(self, inner: InferenceEngine) -> None:
        self.inner = inner
        self.calls = 0

    def session(self, score, request, cancel, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise ZeroDivisionError("meter with denominator 0")
        return self.inner.session(score, request, cancel, **kwargs)


def make_session(bars: int = 10, agent_params: dict | None = None):
    score = RollingScore(supported_meters=CONFIG.time_signatures)
    score.add_track(COND, 0, False, False)
    score.add_track(AGENT, 33, False, True)
    for bar in range(bars):
        score.add_note(COND, bar, 60 + bar % 5, 90, 0.0, 0.25)
        score.add_note(COND, bar, 67, 80, 0.5, 0.25)
        score.end_bar(bar, 4, 4)
    agent = {"temperature": 1.0, "min_pitch": 0, "max_pitch": 127, **(agent_params or {})}
    tracks = {
        COND: Track(COND, 0, False, False, {"ignore": False}),
        AGENT: Track(AGENT, 33, False, True, agent),
    }
    return score, tracks


def job(score, tracks, target: int, job_id: int = 1, deadline: float | None = None, **overrides):
    params = {
        "model_dim": 4, "mask_mode": "attention", "density_hard_limit": 16, "sampling_seed": 1,
        "num_candidates": 2, **overrides,
    }  # fmt: skip
    return build_job(
        job_id=job_id, session_token=1, target_bar=target, score=score, tracks=tracks, params=params,
        encoder_config=CONFIG, deadline=deadline,
    )  # fmt: skip


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def worker_for(engine, recorder) -> GenerationWorker:
    return GenerationWorker(engine, on_start=recorder.on_start, on_outcome=recorder.on_outcome)


def test_a_job_is_done_with_agent_notes_for_its_bars(engine, recorder):
    score, tracks = make_session(agent_params={"min_pitch": 48, "max_pitch": 72})
    worker = worker_for(engine, recorder)
    try:
        worker.submit(job(score, tracks, target=11, num_anticipated_bars=2))
        (outcome,) = recorder.wait(1)
    finally:
        worker.close()
    assert outcome.status == "done", outcome.reason
    assert recorder.started == [1]
    assert set(outcome.notes) == {(AGENT, 11), (AGENT, 12)}
    assert outcome.agent_track_ids == (AGENT,)
    for onset, duration, pitch, velocity in outcome.notes.values():
        assert len(pitch) > 0
        assert (
            np.all(velocity > 0) and np.all(duration >= 1) and np.all((onset >= 0) & (onset < 48))
        )
        assert np.all((pitch >= 48) & (pitch <= 72))
    assert outcome.generated_tokens > 0 and outcome.latency_ms > 0
    assert outcome.prompt_state["target_bar"] == 11
    assert outcome.sampled_attrs is None or set(outcome.sampled_attrs) <= {
        "note_density", "min_polyphony", "max_polyphony", "min_note_duration", "max_note_duration",
    }  # fmt: skip


def test_fold_pitches_moves_octaves_into_range_and_clamps_narrow_ranges():
    pitch = np.array([20, 47, 48, 60, 72, 73, 127], dtype=np.int32)
    assert fold_pitches(pitch, 48, 72).tolist() == [56, 59, 48, 60, 72, 61, 67]
    assert fold_pitches(np.array([59, 66]), 60, 64).tolist() == [60, 64]


def test_a_queued_job_replaced_by_a_newer_one_is_reported_dropped(engine, recorder):
    blocking = BlockingEngine(engine)
    score, tracks = make_session()
    worker = worker_for(blocking, recorder)
    try:
        worker.submit(job(score, tracks, target=11, job_id=1))
        assert blocking.entered.acquire(timeout=WAIT_S)
        assert worker.busy and worker.in_flight_bars() == {11}
        worker.submit(job(score, tracks, target=12, job_id=2))
        worker.submit(job(score, tracks, target=13, job_id=3))
        dropped = recorder.wait(1)[0]
        assert (dropped.job_id, dropped.status, dropped.reason) == (
            2,
            "dropped",
            "superseded by bar 13",
        )
        blocking.release.set()
        recorder.wait(3)
    finally:
        worker.close()
    outcomes = recorder.by_id()
    assert [o.job_id for o in recorder.outcomes] == [2, 1, 3]
    assert outcomes[1].status == outcomes[3].status == "done"
    assert recorder.started == [1, 3]
    assert worker.stats()["counts"]["dropped"] == 1


def test_cancel_all_cancels_the_running_and_the_queued_job(engine, recorder):
    blocking = BlockingEngine(engine)
    score, tracks = make_session()
    worker = worker_for(blocking, recorder)
    try:
        worker.submit(job(score, tracks, target=11, job_id=1))
        assert blocking.entered.acquire(timeout=WAIT_S)
        worker.submit(job(score, tracks, target=12, job_id=2))
        worker.cancel_all("session stopped")
        recorder.wait(2)
        assert not worker.busy
        blocking.release.set()
        worker.submit(job(score, tracks, target=13, job_id=3))  # the worker keeps going
        recorder.wait(3)
    finally:
        worker.close()
    outcomes = recorder.by_id()
    assert (outcomes[1].status, outcomes[1].reason) == ("cancelled", "session stopped")
    assert (outcomes[2].status, outcomes[2].reason) == ("cancelled", "session stopped")
    assert outcomes[3].status == "done"


def test_the_running_job_is_cancelled_between_tokens_at_its_deadline(engine, recorder):
    blocking = BlockingEngine(engine)  # never released: only the deadline can end it
    score, tracks = make_session()
    worker = worker_for(blocking, recorder)
    try:
        worker.submit(job(score, tracks, target=11, deadline=time.monotonic() + 0.2))
        (outcome,) = recorder.wait(1)
    finally:
        blocking.release.set()
        worker.close()
    assert (outcome.status, outcome.reason) == ("cancelled", "deadline")
    assert outcome.deadline is not None


def test_the_real_engine_stops_at_the_deadline_cancel_event(engine, recorder, monkeypatch):
    original = GenerationSession._decode

    def slow_decode(self, *args, **kwargs):
        self.cancel.wait(WAIT_S)  # the deadline timer sets it; the decode loop checks it at once
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationSession, "_decode", slow_decode)
    score, tracks = make_session()
    worker = worker_for(engine, recorder)
    try:
        worker.submit(job(score, tracks, target=11, deadline=time.monotonic() + 0.2))
        (outcome,) = recorder.wait(1)
    finally:
        worker.close()
    assert (outcome.status, outcome.reason) == ("cancelled", "deadline")


def test_a_job_whose_deadline_passed_is_dropped_without_starting(engine, recorder):
    score, tracks = make_session()
    worker = worker_for(engine, recorder)
    try:
        worker.submit(job(score, tracks, target=11, deadline=time.monotonic() - 0.5))
        (outcome,) = recorder.wait(1)
    finally:
        worker.close()
    assert outcome.status == "dropped" and "deadline passed" in outcome.reason
    assert recorder.started == []


def test_an_exception_inside_a_job_fails_it_and_the_next_job_still_runs(engine, recorder):
    score, tracks = make_session()
    worker = worker_for(FailingOnceEngine(engine), recorder)
    try:
        worker.submit(job(score, tracks, target=11, job_id=1))
        recorder.wait(1)
        worker.submit(job(score, tracks, target=12, job_id=2))
        recorder.wait(2)
    finally:
        worker.close()
    first, second = recorder.outcomes
    assert (first.status, first.reason) == ("failed", "ZeroDivisionError: meter with denominator 0")
    assert second.status == "done"
    assert worker.stats()["restarts"] == 0


def test_a_callback_that_raises_does_not_stop_the_worker(engine, recorder):
    score, tracks = make_session()

    def bad_start(job):
        raise RuntimeError("subscriber bug")

    worker = GenerationWorker(engine, on_start=bad_start, on_outcome=recorder.on_outcome)
    try:
        worker.submit(job(score, tracks, target=11, job_id=1))
        recorder.wait(1)
        worker.submit(job(score, tracks, target=12, job_id=2))
        recorder.wait(2)
    finally:
        worker.close()
    assert [o.status for o in recorder.outcomes] == ["done", "done"]


def test_a_job_without_a_valid_request_is_reported_failed(engine, recorder):
    score, tracks = make_session()
    bad = job(score, tracks, target=11, mask_mode="token")
    worker = worker_for(engine, recorder)
    try:
        worker.submit(bad)
        (outcome,) = recorder.wait(1)
    finally:
        worker.close()
    assert outcome.status == "failed" and "mask_mode" in outcome.reason


def test_a_silent_bar_is_done_not_failed(engine, recorder, monkeypatch):
    monkeypatch.setattr(
        GenerationSession, "_target_notes", lambda self, step, prompt, generated: NoteArrays.empty()
    )
    score, tracks = make_session()
    worker = worker_for(engine, recorder)
    try:
        worker.submit(job(score, tracks, target=11, silence_check=True))
        (outcome,) = recorder.wait(1)
    finally:
        worker.close()
    assert (outcome.status, outcome.reason) == ("done", "silent bar")
    onset, duration, pitch, velocity = outcome.notes[(AGENT, 11)]
    assert len(pitch) == 0


def test_submit_after_close_reports_the_job_dropped(engine, recorder):
    score, tracks = make_session()
    worker = worker_for(engine, recorder)
    worker.close()
    worker.submit(job(score, tracks, target=11))
    (outcome,) = recorder.wait(1)
    assert (outcome.status, outcome.reason) == ("dropped", "worker closed")
    assert not worker.stats()["alive"]
