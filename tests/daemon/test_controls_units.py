"""Output control, meter lookahead, adaptation and heartbeats as units: the session and scheduler
driven directly with a stand-in worker (osc-protocol §16 D35, D50, D56, D58)."""

import asyncio
import json

import numpy as np
import pytest

from sideman.daemon.controls import (
    CLIENT_CANCEL_REASON,
    ControlHandlers,
    PlayedNotesError,
    parse_played,
)
from sideman.daemon.events import EventBus
from sideman.daemon.heartbeat import Heartbeat, heartbeat_payload
from sideman.daemon.jobs import build_job, outcome_for, prepare_job
from sideman.daemon.params import ParamStore
from sideman.daemon.protocol import ProtocolError
from sideman.daemon.scheduler import Scheduler
from sideman.daemon.session import Session
from sideman.engine.vocab import EncoderConfig

CONFIG = EncoderConfig.yellow()
PIANO, BASS = 0, 1
BAR_TICKS = 48  # a 4/4 bar at resolution 12


# ---- played notes ------------------------------------------------------------------------------


def test_played_notes_become_tick_columns_ending_at_the_barline():
    onset, duration, pitch, velocity = parse_played("[[40, 90, 0.0, 0.5], [43, 80, 0.75, 2]]", BAR_TICKS)
    assert onset.tolist() == [0, 36]
    assert duration.tolist() == [24, 12]  # the second note is cut at the barline
    assert pitch.tolist() == [40, 43] and velocity.tolist() == [90, 80]


def test_an_empty_list_is_a_silent_bar():
    assert all(len(column) == 0 for column in parse_played("[]", BAR_TICKS))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("not json", "not valid JSON"),
        ('{"pitch": 40}', "must be a JSON list"),
        ("[[40, 90, 0.0]]", "note 0: must be a list [pitch, velocity, onset, duration]"),
        ("[[40, 90, 0.0, 0.5], 7]", "note 1: must be a list"),
        ("[[128, 90, 0.0, 0.5]]", "note 0: 'pitch' must be in 0..127"),
        ("[[40.5, 90, 0.0, 0.5]]", "'pitch' must be an integer"),
        ("[[true, 90, 0.0, 0.5]]", "'pitch' must be an integer"),
        ("[[40, 0, 0.0, 0.5]]", "'velocity' must be in 1..127"),
        ('[[40, "loud", 0.0, 0.5]]', "'velocity' must be an integer"),
        ("[[40, 90, 1.0, 0.5]]", "'onset' must be in [0, 1)"),
        ("[[40, 90, -0.1, 0.5]]", "'onset' must be in [0, 1)"),
        ("[[40, 90, 0.0, 0]]", "'duration' must be in (0, 64]"),
        ("[[40, 90, 0.0, NaN]]", "'duration' must be a finite number"),
    ],
)
def test_bad_played_notes_name_the_note_and_the_field(text, named):
    with pytest.raises(PlayedNotesError) as caught:
        parse_played(text, BAR_TICKS)
    assert named in str(caught.value)


# ---- heartbeat_s -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, 0.1, 2, "1.5", 60])
def test_heartbeat_s_accepts_off_or_a_tenth_of_a_second_to_a_minute(value):
    store = ParamStore.for_encoder(CONFIG)
    assert store.set("heartbeat_s", value) == float(value)


@pytest.mark.parametrize("value", [0.05, -1, 61, "often"])
def test_heartbeat_s_refuses_other_values_with_error_4(value):
    store = ParamStore.for_encoder(CONFIG)
    with pytest.raises(ProtocolError) as caught:
        store.set("heartbeat_s", value)
    assert caught.value.code == 4 and "heartbeat_s" in caught.value.message
    assert store.values()["heartbeat_s"] == 0.0


def test_heartbeat_beats_at_its_interval_and_not_while_off():
    """A fake clock advancing 0.05 s per reading: beats 0.2 s apart once the interval is set."""
    times = iter(i * 0.05 for i in range(10_000))
    now = [0.0]

    def clock():
        now[0] = next(times)
        return now[0]

    interval = [0.0]
    beats: list[float] = []

    async def main():
        def beat():
            beats.append(now[0])
            if len(beats) == 4:
                task.cancel()

        task = asyncio.get_running_loop().create_task(
            Heartbeat(lambda: interval[0], beat, clock=clock, poll_s=0.0).run()
        )
        for _ in range(20):
            await asyncio.sleep(0)
        assert beats == []  # off
        interval[0] = 0.2
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(beats) == 4
    assert all(later - earlier >= 0.2 - 1e-9 for earlier, later in zip(beats, beats[1:], strict=False))


def test_a_failing_beat_does_not_end_the_heartbeats():
    calls = []

    async def main():
        def beat():
            calls.append(1)
            if len(calls) == 3:
                task.cancel()
            raise RuntimeError("socket gone")

        ticks = iter(range(10_000))
        task = asyncio.get_running_loop().create_task(
            Heartbeat(lambda: 1.0, beat, clock=lambda: float(next(ticks)), poll_s=0.0).run()
        )
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(calls) == 3


# ---- the scheduler with a stand-in worker --------------------------------------------------------


class StandInWorker:
    """Records submitted jobs; outcomes are delivered by the test."""

    def __init__(self):
        self.jobs = []
        self.cancelled = []
        self.on_start = self.on_outcome = None
        self.busy = False

    def submit(self, job):
        self.jobs.append(job)

    def cancel_all(self, reason):
        self.cancelled.append(reason)

    def in_flight_bars(self):
        return frozenset()

    def stats(self):
        return {}


@pytest.fixture
def rig():
    sent: list[tuple[str, tuple]] = []
    session = Session(CONFIG, EventBus(), lambda address, args: sent.append((address, args)))
    worker = StandInWorker()
    scheduler = Scheduler(session, worker, session.bus, loop=None)
    session.session_init("unit")
    session.param_set("buffer_bars", 2)
    session.track_create(PIANO, 0, 10, 0)
    session.track_create(BASS, 32, 10, 1)
    session.session_start()
    scheduler.set_tempo(60.0)  # 4 s bars: every job gets a deadline (a budget)
    return session, scheduler, worker, ControlHandlers(session, scheduler), sent


def addresses(sent):
    return [address for address, _ in sent]


def reports(sent):
    return [json.loads(args[0]) for address, args in sent if address == "/midigpt/job"]


def done(job, latency_s=0.1, notes=True):
    columns = (np.array([0], np.int32), np.array([12], np.int32), np.array([40], np.int32), np.array([90], np.int32))
    empty = tuple(np.zeros(0, np.int32) for _ in range(4))
    return outcome_for(
        job, "done", now=job.created + latency_s,
        notes={(BASS, bar): columns if notes else empty for bar in job.bars},
    )  # fmt: skip


def test_freeze_triggers_no_jobs_and_unfreeze_resumes(rig):
    session, scheduler, worker, controls, sent = rig
    session.bar_end(0, 4, 4)  # playhead 1 + lookahead 1 reaches buffer_bars 2
    assert [job.target_bar for job in worker.jobs] == [2]
    controls.agent_freeze(1)
    session.bar_end(1, 4, 4)
    assert len(worker.jobs) == 1 and scheduler.describe()["frozen"] is True
    controls.agent_freeze(0)
    session.bar_end(2, 4, 4)
    assert [job.target_bar for job in worker.jobs] == [2, 4]


def test_regenerate_queues_a_generated_bar_again_and_replaces_it(rig):
    session, scheduler, worker, controls, sent = rig
    session.bar_end(0, 4, 4)  # a job for bar 2
    first = worker.jobs[0]
    scheduler._deliver(done(first))
    assert 2 in session.score.generated_bars(BASS)
    session.param_set("num_anticipated_bars", 2)
    controls.agent_regenerate(2)
    again = worker.jobs[-1]
    assert again.target_bar == 2 and again.bars == (2,)
    scheduler._deliver(done(again, notes=False))
    assert session.score.window(2, 3).notes.pitch.size == 0  # the earlier version is gone
    assert [args[1] for address, args in sent if address == "/midigpt/generated/open"] == [2, 2]


@pytest.mark.parametrize("bar", [0, 1, 2])
def test_regenerate_refuses_a_bar_that_has_started(rig, bar):
    session, scheduler, worker, controls, sent = rig
    session.bar_end(0, 4, 4)
    session.bar_end(1, 4, 4)  # playhead 2
    with pytest.raises(ProtocolError) as caught:
        controls.agent_regenerate(bar)
    assert caught.value.code == 4 and "playhead 2" in caught.value.message


def test_muted_results_enter_the_history_but_are_not_sent(rig):
    session, scheduler, worker, controls, sent = rig
    controls.agent_mute(1)
    session.bar_end(0, 4, 4)  # a job for bar 2
    sent.clear()
    scheduler._deliver(done(worker.jobs[0]))
    assert not [a for a in addresses(sent) if a.startswith("/midigpt/generated/")]
    (report,) = reports(sent)
    assert report["muted"] is True and report["status"] == "done" and report["sent_bars"] == []
    assert report["reason"].startswith("muted")
    assert 2 in session.score.generated_bars(BASS)


def test_a_client_cancel_is_reported_without_error_5(rig):
    session, scheduler, worker, controls, sent = rig
    session.bar_end(0, 4, 4)  # a job for bar 2
    controls.agent_cancel()
    assert worker.cancelled[-1] == CLIENT_CANCEL_REASON
    sent.clear()
    scheduler._deliver(outcome_for(worker.jobs[0], "cancelled", CLIENT_CANCEL_REASON))
    assert reports(sent)[0]["status"] == "cancelled"
    assert "/midigpt/error" not in addresses(sent)


def test_a_slow_job_degrades_the_next_and_fast_jobs_restore_it(rig):
    session, scheduler, worker, controls, sent = rig
    session.bar_end(0, 4, 4)
    first = worker.jobs[0]
    budget = first.deadline - first.created
    scheduler._deliver(done(first, latency_s=0.9 * budget))
    assert reports(sent)[-1]["status"] == "done"
    session.bar_end(1, 4, 4)
    second = worker.jobs[-1]
    assert prepare_job(second).request.config.num_candidates == 1
    assert reports(sent)[-1]["degraded"] == 1
    scheduler._deliver(outcome_for(second, "late", "finished 5 ms after its deadline", now=second.deadline + 0.005))
    assert reports(sent)[-1]["degraded"] == 1  # the level the job ran at
    session.bar_end(2, 4, 4)
    third = worker.jobs[-1]
    assert prepare_job(third).request.config.model_dim == 4 and scheduler.describe()["degraded"] == 2
    assert session.params.values()["model_dim"] == 8  # the client's value is kept
    for bar in range(3, 3 + 2 * 4):
        scheduler._deliver(done(worker.jobs[-1], latency_s=0.01))
        session.bar_end(bar, 4, 4)
    assert scheduler.adapt.level == 0
    assert prepare_job(worker.jobs[-1]).request.config.num_candidates == 3


def test_played_notes_replace_the_agent_bar(rig):
    session, scheduler, worker, controls, sent = rig
    session.bar_end(0, 4, 4)
    scheduler._deliver(done(worker.jobs[0]))
    assert session.score.window(2, 3).notes.pitch.tolist() == [40]  # what the model generated
    session.bar_end(1, 4, 4)
    session.bar_end(2, 4, 4)
    controls.agent_played(BASS, 2, "[[45, 70, 0.5, 0.25], [47, 71, 0.75, 0.25]]")
    notes = session.score.window(2, 3).notes
    assert notes.pitch.tolist() == [45, 47] and notes.onset.tolist() == [24, 36]


def test_played_notes_for_a_conditioning_or_unknown_track_are_refused(rig):
    session, scheduler, worker, controls, sent = rig
    session.bar_end(0, 4, 4)
    with pytest.raises(ProtocolError) as caught:
        controls.agent_played(PIANO, 0, "[]")
    assert caught.value.code == 4 and "conditioning" in caught.value.message
    with pytest.raises(ProtocolError) as caught:
        controls.agent_played(9, 0, "[]")
    assert caught.value.code == 2


def test_an_announced_meter_sizes_the_target_bar_and_its_output(rig):
    session, scheduler, worker, controls, sent = rig
    controls.meter_announce(2, 3, 4)
    session.bar_end(0, 4, 4)  # a job for bar 2
    job = worker.jobs[0]
    meters = job.snapshot.meters.tolist()
    assert meters[2 - job.window_start] == [3, 4]
    columns = (np.array([27], np.int32), np.array([30], np.int32), np.array([40], np.int32), np.array([90], np.int32))
    scheduler._deliver(outcome_for(job, "done", now=job.created + 0.1, notes={(BASS, 2): columns}))
    (note,) = [args for address, args in sent if address == "/midigpt/generated/note"]
    assert note[4] == pytest.approx(27 / 36) and note[5] == pytest.approx(9 / 36)  # a 3/4 bar is 36 ticks


def test_a_meter_outside_the_vocabulary_or_for_an_ended_bar_is_error_4(rig):
    session, scheduler, worker, controls, sent = rig
    session.bar_end(0, 4, 4)
    with pytest.raises(ProtocolError) as caught:
        controls.meter_announce(3, 19, 16)
    assert caught.value.code == 4 and "19/16" in caught.value.message
    with pytest.raises(ProtocolError) as caught:
        controls.meter_announce(0, 3, 4)
    assert caught.value.code == 4 and "bar_index 0" in caught.value.message


def test_heartbeat_payload_says_state_playhead_busy_and_last_job(rig):
    session, scheduler, worker, controls, sent = rig
    session.bar_end(0, 4, 4)  # a job for bar 2
    scheduler._deliver(done(worker.jobs[0]))
    payload = heartbeat_payload(session, scheduler, seq=7)
    assert payload["seq"] == 7 and payload["state"] == "RUNNING" and payload["playhead"] == 1
    assert payload["busy"] is False and payload["last_job"]["status"] == "done"
    assert payload["frozen"] is False and payload["muted"] is False and payload["degraded"] == 0


def test_build_job_regenerate_ignores_generated_bars(rig):
    session, scheduler, worker, controls, sent = rig
    for bar in range(3):
        session.bar_end(bar, 4, 4)
    empty = np.zeros(0, np.int32)
    session.score.set_generated(BASS, 4, empty, empty, empty, empty)
    common = dict(
        job_id=99, session_token=session.token, target_bar=4, score=session.score,
        tracks=session.tracks, params=session.params.values(), encoder_config=CONFIG,
    )  # fmt: skip
    assert build_job(**common) is None
    assert build_job(**common, regenerate=True).bars == (4,)
