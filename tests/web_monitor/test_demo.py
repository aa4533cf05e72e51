"""The monitor's demo performer: its pieces, upload checks, and playing into the daemon.

The performer is tested against a fake ``call`` that records messages, at a fast tempo so a loop
takes a fraction of a second, and once end to end against an in-process ``Daemon`` with a tiny
random model (bpm 400, the protocol's fastest tempo).
"""

from __future__ import annotations

import concurrent.futures
import io
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from sideman.daemon.events import EventRecorder
from sideman.daemon.protocol import ErrorCode, ProtocolError
from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.vocab import EncoderConfig
from sideman.web_monitor import pieces
from sideman.web_monitor.demo import DemoPerformer, plan_loop
from sideman.web_monitor.pieces import (
    MAX_UPLOAD_BARS,
    MAX_UPLOAD_VOICES,
    VOICE_PROGRAMS,
    PieceError,
    list_pieces,
    load_midi_file,
    load_piece,
)

from ..daemon.test_local_calls import DaemonThread
from ..engine.test_train_corpus import odd_meter_midi

FAST_BPM = 2000.0  # a 4/4 bar lasts 0.12 s
WAIT_S = 10.0


# ---- pieces ---------------------------------------------------------------------------------------
def test_the_curated_list_is_a_handful_of_chorales_with_the_default_first():
    listed = list_pieces()
    assert 6 <= len(listed) <= 10
    assert listed[0].id == pieces.DEFAULT_PIECE == "bach/bwv66.6"
    assert len({p.id for p in listed}) == len(listed)
    assert listed[0].as_dict() == {
        "id": "bach/bwv66.6",
        "title": listed[0].title,
        "meter": [4, 4],
        "bars": 9,
        "voices": 4,
    }


def test_every_piece_loads_offline_with_its_voices_meter_and_bars(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    pieces._chorale_score.cache_clear()
    yellow = EncoderConfig.yellow()
    for piece in list_pieces():
        score = load_piece(piece.id)
        assert score.n_tracks == piece.voices == 4, piece.id
        assert score.n_bars == piece.bars, piece.id
        assert {tuple(m) for m in score.time_signatures.tolist()} == {piece.meter}, piece.id
        assert yellow.time_signature_index(*piece.meter) >= 0
        assert [t.program for t in score.track_info] == list(VOICE_PROGRAMS)
        assert set(score.notes.track.tolist()) == {0, 1, 2, 3}, f"{piece.id}: a silent voice"
        ends = score.bar_starts()[score.notes.bar] + score.notes.onset + score.notes.duration
        assert ends.max() <= score.bar_starts()[-1], f"{piece.id}: a note runs past the loop"


def test_the_pickup_moves_to_the_end_so_the_loop_starts_on_a_downbeat():
    from music21 import corpus

    score = load_piece("bach/bwv66.6")  # a one-beat pickup, a three-beat last bar
    notes = score.notes
    assert set(notes.track[(notes.bar == 0) & (notes.onset == 0)].tolist()) == {0, 1, 2, 3}
    soprano = corpus.parse("bach/bwv66.6").parts[0].flatten().notes
    pickup = [n.pitch.midi for n in soprano if n.offset < 1]
    last_beat = (notes.track == 0) & (notes.bar == score.n_bars - 1) & (notes.onset >= 36)
    assert notes.pitch[last_beat].tolist() == pickup


def test_load_piece_gives_a_copy_and_refuses_unknown_ids():
    first = load_piece("bach/bwv26.6")
    first.track_info[0].program = 0
    assert load_piece("bach/bwv26.6").track_info[0].program == VOICE_PROGRAMS[0]
    with pytest.raises(PieceError, match="unknown piece 'bach/nope'"):
        load_piece("bach/nope")


# ---- uploads --------------------------------------------------------------------------------------
def _midi_bytes(score: Score) -> bytes:
    buffer = io.BytesIO()
    score.to_midi(buffer)
    return buffer.getvalue()


def test_an_upload_reads_back_a_piece_and_its_summary():
    chorale = load_piece("bach/bwv66.6")
    piece, score = load_midi_file(_midi_bytes(chorale), "/home/me/songs/chorale.mid")
    assert piece.as_dict() == {
        "id": "upload:chorale.mid",
        "title": "chorale.mid",
        "meter": [4, 4],
        "bars": 9,
        "voices": 4,
    }
    assert np.array_equal(score.notes.as_table(), chorale.notes.as_table())


def test_an_upload_in_a_meter_outside_the_vocabulary_is_a_clear_error():
    midi = odd_meter_midi()
    buffer = io.BytesIO()
    midi.save(file=buffer)
    with pytest.raises(PieceError) as caught:
        load_midi_file(buffer.getvalue(), "odd.mid")
    message = str(caught.value)
    assert message.startswith("odd.mid: ")
    assert "5/16" in message and "vocabulary" in message
    assert "skip_unknown" not in message  # the library hint means nothing on the page


@pytest.mark.parametrize("data", [b"not a midi file at all", b"MThd\x00\x00\x00\x06\x00\x01", b""])
def test_a_file_that_is_not_midi_is_a_clear_error(data):
    with pytest.raises(PieceError, match=r"^notes\.txt: not a MIDI file sideman can read"):
        load_midi_file(data, "notes.txt")


def test_an_upload_keeps_its_first_bars_and_voices_after_leading_silence():
    tracks = [TrackInfo(program=p) for p in range(10)]
    rows = [(t, bar, 0, 48, 40 + t, 90) for t in range(10) for bar in range(2, 50)]
    rows.append((0, 49, 24, 48, 60, 90))  # runs past the end of the file's last bar
    score = Score.empty(50, tracks).with_notes(NoteArrays.from_rows(rows))
    piece, loaded = load_midi_file(_midi_bytes(score), "long.mid")
    assert (piece.bars, piece.voices) == (MAX_UPLOAD_BARS, MAX_UPLOAD_VOICES)
    assert loaded.n_bars == MAX_UPLOAD_BARS and loaded.n_tracks == MAX_UPLOAD_VOICES
    assert [t.program for t in loaded.track_info] == list(range(MAX_UPLOAD_VOICES))
    assert loaded.notes.bar.min() == 0  # the two silent bars are gone
    with pytest.raises(PieceError, match="no notes"):
        load_midi_file(_midi_bytes(Score.empty(2, tracks[:1])), "empty.mid")


# ---- the performer against a recording fake --------------------------------------------------------
class FakeDaemon:
    """``call`` that records every message and answers at once; ``refuse`` picks messages to refuse."""

    def __init__(
        self, refuse: Callable[[str, tuple], ProtocolError | None] = lambda a, args: None
    ) -> None:
        self.messages: list[tuple[str, tuple]] = []
        self.times: list[float] = []
        self.refuse = refuse
        self.changed = threading.Condition()

    def call(self, address: str, *args: object) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        error = self.refuse(address, args)
        with self.changed:
            self.messages.append((address, args))
            self.times.append(time.monotonic())
            self.changed.notify_all()
        if error is None:
            future.set_result([])
        else:
            future.set_exception(error)
        return future

    def addresses(self) -> list[str]:
        with self.changed:
            return [address for address, _ in self.messages]

    def wait_for(self, predicate: Callable[[list], bool], timeout: float = WAIT_S) -> None:
        with self.changed:
            met = self.changed.wait_for(lambda: predicate(self.messages), timeout)
            assert met, self.messages[-5:]

    def bar_ends(self) -> list[int]:
        with self.changed:
            return [args[0] for address, args in self.messages if address == "/midigpt/bar/end"]


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def __call__(self, kind: str, payload: dict) -> None:
        with self.lock:
            self.items.append((kind, payload))

    def of(self, kind: str) -> list[dict]:
        with self.lock:
            return [payload for k, payload in self.items if k == kind]


@pytest.fixture
def fake():
    return FakeDaemon()


@pytest.fixture
def events():
    return Events()


@pytest.fixture
def performer(fake, events):
    performer = DemoPerformer(fake.call, events, lead_s=0.02)
    yield performer
    performer.stop()


def bars_closed(count: int) -> Callable[[list], bool]:
    return lambda messages: sum(address == "/midigpt/bar/end" for address, _ in messages) >= count


def test_setup_creates_one_conditioning_track_per_voice_and_the_agent(fake, performer):
    performer.start(load_piece("bach/bwv66.6"), "bach/bwv66.6", FAST_BPM)
    fake.wait_for(bars_closed(1))
    assert fake.messages[:7] == [
        ("/midigpt/session/init", ("demo",)),
        ("/midigpt/track/create", (0, 73, 10, 0)),
        ("/midigpt/track/create", (1, 68, 10, 0)),
        ("/midigpt/track/create", (2, 71, 10, 0)),
        ("/midigpt/track/create", (3, 70, 10, 1)),
        ("/midigpt/tempo", (FAST_BPM,)),
        ("/midigpt/session/start", ()),
    ]


def test_the_agent_can_take_another_voice_and_program(fake, performer):
    performer.start(
        load_piece("bach/bwv66.6"), "bach/bwv66.6", FAST_BPM, agent_voice=0, agent_program=11
    )
    fake.wait_for(bars_closed(1))
    creates = [args for address, args in fake.messages if address == "/midigpt/track/create"]
    assert creates == [(0, 11, 10, 1), (1, 68, 10, 0), (2, 71, 10, 0), (3, 70, 10, 0)]
    assert {args[0] for address, args in fake.messages if address == "/midigpt/note"} == {1, 2, 3}


def test_each_bar_sends_the_piece_notes_then_bar_end_and_bars_keep_rising_across_the_loop(
    fake, performer
):
    score = load_piece("bach/bwv66.6")
    performer.start(score, "bach/bwv66.6", FAST_BPM, bars=3)
    fake.wait_for(bars_closed(7))
    performer.stop()
    assert fake.bar_ends()[:7] == list(range(7))
    per_bar: dict[int, list] = {}
    current: list = []
    for address, args in fake.messages[7:]:
        if address == "/midigpt/note":
            current.append(args)
        elif address == "/midigpt/bar/end":
            assert args[1:] == (4, 4)
            assert all(note[5] == args[0] for note in current)
            per_bar[args[0]] = [note[:5] for note in current]
            current = []
    notes = score.notes
    for bar in range(7):
        in_bar = (notes.bar == bar % 3) & (notes.track != 3)
        expected = {
            (int(t), int(p), int(v), o / 48, d / 48)
            for t, p, v, o, d in zip(notes.track[in_bar], notes.pitch[in_bar], notes.velocity[in_bar],
                                     notes.onset[in_bar], notes.duration[in_bar], strict=True)
        }  # fmt: skip
        assert set(per_bar[bar]) == expected, bar
    assert per_bar[3] == per_bar[0] and per_bar[4] == per_bar[1]


def test_clock_events_carry_each_bars_human_notes_before_its_downbeat(fake, events, performer):
    score = load_piece("bach/bwv269")  # 3/4
    performer.start(score, "bach/bwv269", FAST_BPM, bars=2)
    fake.wait_for(bars_closed(3))
    performer.stop()
    clocks = events.of("clock")
    plan = plan_loop(score, 2, agent_track=3)
    period = 3 * 60 / FAST_BPM
    for clock in clocks[:4]:
        assert clock["meter"] == [3, 4]
        assert clock["period_s"] == pytest.approx(period)
        expected = [{**note, "bar": clock["bar"]} for note in plan[clock["bar"] % 2].human]
        assert clock["human"] == expected and expected
        assert all(
            0 <= n["onset"] < 1 and 0 < n["duration"] <= 1 and n["track"] != 3
            for n in clock["human"]
        )
    assert [c["bar"] for c in clocks[:4]] == [0, 1, 2, 3]
    gaps = np.diff([c["at"] for c in clocks[:4]])
    # ``at`` is the downbeat on the grid, not the moment the event was sent
    assert gaps == pytest.approx([period] * 3, abs=0.02)


def test_clock_notes_stop_at_the_barline_but_the_daemon_gets_the_whole_note(
    fake, events, performer
):
    rows = [(0, 0, 24, 48, 60, 90), (1, 0, 0, 96, 40, 90)]  # both held into bar 1
    score = Score.empty(2, [TrackInfo(0), TrackInfo(32)]).with_notes(NoteArrays.from_rows(rows))
    performer.start(score, "test", FAST_BPM)
    fake.wait_for(bars_closed(1))
    sent = [args for address, args in fake.messages if address == "/midigpt/note"]
    assert sent[0] == (0, 60, 90, 0.5, 1.0, 0)  # onset 1/2, the whole note: one bar
    human = events.of("clock")[0]["human"]
    assert [(n["track"], n["onset"], n["duration"]) for n in human] == [(0, 0.5, 0.5)]


def test_bars_are_sent_on_a_deadline_grid_without_drift(fake, performer):
    performer.start(load_piece("bach/bwv26.6"), "bach/bwv26.6", FAST_BPM)
    fake.wait_for(bars_closed(9))
    ends = [
        t
        for (address, _), t in zip(fake.messages, fake.times, strict=True)
        if address == "/midigpt/bar/end"
    ]
    assert (ends[8] - ends[0]) / 8 == pytest.approx(4 * 60 / FAST_BPM, rel=0.1)


def test_stop_ends_the_thread_and_sends_session_stop(fake, events, performer):
    performer.start(load_piece("bach/bwv66.6"), "bach/bwv66.6", FAST_BPM)
    fake.wait_for(bars_closed(2))
    assert performer.state()["running"] and performer.state()["bar"] is not None
    performer.stop()
    sent = len(fake.messages)
    assert fake.messages[-1] == ("/midigpt/session/stop", ())
    time.sleep(0.3)
    assert len(fake.messages) == sent
    assert not any(t.name == "sideman-demo" and t.is_alive() for t in threading.enumerate())
    state = performer.state()
    assert state == {
        **state,
        "running": False,
        "piece": "bach/bwv66.6",
        "bar": None,
        "message": "stopped",
    }
    assert events.of("demo")[-1] == state
    performer.stop()  # a second stop sends nothing
    assert len(fake.messages) == sent


def test_a_refusal_stops_the_performer_with_its_message(events):
    refused = ProtocolError(ErrorCode.INVALID_STATE, "Message not allowed in state 'STOPPED'")
    fake = FakeDaemon(
        lambda address, args: refused if address == "/midigpt/bar/end" and args[0] == 1 else None
    )
    performer = DemoPerformer(fake.call, events, lead_s=0.02)
    performer.start(load_piece("bach/bwv66.6"), "bach/bwv66.6", FAST_BPM)
    deadline = time.monotonic() + WAIT_S
    while performer.running and time.monotonic() < deadline:
        time.sleep(0.01)
    state = performer.state()
    assert not state["running"]
    assert state["message"] == "demo stopped: Message not allowed in state 'STOPPED' (error 1)"
    assert events.of("demo")[-1] == state
    sent = len(fake.messages)
    assert fake.bar_ends() == [0, 1]
    performer.stop()  # the session may be someone else's now: no /session/stop
    time.sleep(0.1)
    assert len(fake.messages) == sent and "/midigpt/session/stop" not in fake.addresses()
    assert performer.state()["message"] == state["message"]


def test_a_call_that_raises_or_never_answers_stops_the_performer(events):
    def broken(address, *args):
        raise RuntimeError("Event loop is closed")

    performer = DemoPerformer(broken, events)
    performer.start(load_piece("bach/bwv66.6"), "bach/bwv66.6", FAST_BPM)
    performer._run.thread.join(WAIT_S)
    assert performer.state()["message"] == "demo stopped: Event loop is closed"

    silent = DemoPerformer(
        lambda address, *args: concurrent.futures.Future(), events, call_timeout_s=0.05
    )
    silent.start(load_piece("bach/bwv66.6"), "bach/bwv66.6", FAST_BPM)
    silent._run.thread.join(WAIT_S)
    assert (
        silent.state()["message"]
        == "demo stopped: /midigpt/session/init: the daemon did not answer within 0.05 s"
    )
    silent.stop()


def test_starting_while_running_stops_the_old_run_first(fake, events, performer):
    performer.start(load_piece("bach/bwv66.6"), "bach/bwv66.6", FAST_BPM)
    fake.wait_for(bars_closed(2))
    performer.start(load_piece("bach/bwv269"), "bach/bwv269", FAST_BPM)
    fake.wait_for(
        lambda messages: any(args == (0, 3, 4) for a, args in messages if a == "/midigpt/bar/end")
    )
    addresses = fake.addresses()
    stop_at = addresses.index("/midigpt/session/stop")
    assert addresses[stop_at + 1] == "/midigpt/session/init"
    assert addresses.count("/midigpt/session/init") == 2
    after = [args for a, args in fake.messages[stop_at:] if a == "/midigpt/bar/end"]
    assert all(args[1:] == (3, 4) for args in after)  # nothing of the old piece after its stop
    assert sum(t.name == "sideman-demo" and t.is_alive() for t in threading.enumerate()) == 1
    assert performer.state()["piece"] == "bach/bwv269"


def test_a_one_voice_piece_gets_the_agent_as_an_extra_track(fake, performer):
    score = Score.empty(1, [TrackInfo(0)]).with_notes(NoteArrays.from_rows([(0, 0, 0, 12, 60, 90)]))
    performer.start(score, "upload:one.mid", FAST_BPM)
    fake.wait_for(bars_closed(1))
    creates = [args for address, args in fake.messages if address == "/midigpt/track/create"]
    assert creates == [(0, 0, 10, 0), (1, 32, 10, 1)]


def test_a_failing_listener_does_not_stop_the_music(fake):
    def listener(kind, payload):
        raise ValueError("broken page")

    performer = DemoPerformer(fake.call, listener, lead_s=0.02)
    performer.start(load_piece("bach/bwv66.6"), "bach/bwv66.6", FAST_BPM)
    fake.wait_for(bars_closed(3))
    performer.stop()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"bpm": 0}, "bpm"), ({"bpm": float("nan")}, "bpm"), ({"agent_voice": 4}, "agent_voice"),
        ({"agent_program": 128}, "agent_program"), ({"bars": 0}, "bars"),
    ],
)  # fmt: skip
def test_bad_start_arguments_raise_value_error_naming_them(fake, performer, kwargs, field):
    arguments = {"bpm": 100.0, **kwargs}
    with pytest.raises(ValueError, match=f"^{field}: "):
        performer.start(load_piece("bach/bwv66.6"), "bach/bwv66.6", **arguments)
    assert fake.messages == [] and not performer.running


# ---- end to end with the daemon ------------------------------------------------------------------
@pytest.fixture(scope="module")
def daemon(tiny_model, tmp_path_factory):
    server = DaemonThread(tiny_model, tmp_path_factory.mktemp("demo-saves"), buffer_bars=2)
    yield server.daemon
    server.stop()
    assert not server.thread.is_alive()


def test_the_demo_plays_a_chorale_into_the_daemon_and_the_agent_answers(daemon, events):
    recorder = EventRecorder()
    unsubscribe = daemon.bus.subscribe(recorder)
    performer = DemoPerformer(daemon.call, events)
    try:
        performer.start(load_piece("bach/bwv66.6"), "bach/bwv66.6", 400.0)
        done = recorder.wait_for(
            lambda e: e.kind == "job" and e.data.get("status") == "done", timeout=30
        )
        assert done is not None, [e.data for e in recorder.of_kind("job")]
        generated = recorder.wait_for(
            lambda e: e.kind == "generated" and len(e.data["notes"]) > 0, timeout=30
        )
        assert generated is not None, "the agent never sent a bar with notes"
        assert generated.data["track_id"] == 3
        assert (
            recorder.wait_for(lambda e: e.kind == "bar" and e.data["bar_index"] == 3, timeout=30)
            is not None
        )
    finally:
        performer.stop()
        unsubscribe()
    assert performer.state()["message"] == "stopped"
    local = [e.data for e in recorder.of_kind("local")]
    assert [e["error"] for e in local if e["error"]] == []
    assert (
        local[0]["address"] == "/midigpt/session/init"
        and local[-1]["address"] == "/midigpt/session/stop"
    )
    notes_in = recorder.of_kind("note_in")
    assert {e.data["track_id"] for e in notes_in} == {0, 1, 2}
    assert not any(e.data["late"] for e in notes_in)
    bars = [e.data for e in recorder.of_kind("bar")]
    assert [b["bar_index"] for b in bars] == list(range(len(bars))) and len(bars) >= 4
    assert all(tuple(b["meter"]) == (4, 4) for b in bars)
    score = load_piece("bach/bwv66.6")
    first_bar = {
        (e.data["track_id"], e.data["pitch"]) for e in notes_in if e.data["bar_index"] == 0
    }
    expected = (score.notes.bar == 0) & (score.notes.track != 3)
    assert first_bar == set(
        zip(score.notes.track[expected].tolist(), score.notes.pitch[expected].tolist(), strict=True)
    )
    assert recorder.of_kind("session")[-1].data["state"] == "STOPPED"
