"""Units of live input (note-on/note-off pairing, D59), loops (D60), history load (D55) and per-bar
attributes (D61), without a daemon process."""

import numpy as np
import pytest

from sideman.daemon.live_input import LiveInput, LiveInputError
from sideman.daemon.rolling import RollingScore
from sideman.daemon.rolling_types import ScoreWindowError

METERS = [(4, 4), (3, 4), (6, 8), (5, 4)]
PIANO = 0


@pytest.fixture
def score():
    with RollingScore(supported_meters=METERS, retain_bars=16, grace_bars=1) as s:
        s.add_track(PIANO, 0, False, False)
        yield s


def notes_of(score, bar, track=PIANO):
    """(onset, duration, pitch, velocity) rows of one closed bar."""
    snapshot = score.window(bar, bar + 1)
    n = snapshot.notes_of(track, bar)
    return sorted(zip(n.onset.tolist(), n.duration.tolist(), n.pitch.tolist(), n.velocity.tolist(), strict=True))


# ---- pairing --------------------------------------------------------------------------------


def test_note_on_and_off_in_one_bar_is_one_note(score):
    live = LiveInput(score)
    live.note_on(PIANO, 60, 90, 0.25, 0)
    released = live.note_off(PIANO, 60, 0.75, 0)
    assert released.placed == "pending" and released.duration_ticks == 24
    score.end_bar(0, 4, 4)
    assert notes_of(score, 0) == [(12, 24, 60, 90)]


def test_repeated_pitch_pairs_first_in_first_out(score):
    live = LiveInput(score)
    live.note_on(PIANO, 60, 100, 0.0, 0)
    live.note_on(PIANO, 60, 50, 0.5, 0)
    first = live.note_off(PIANO, 60, 0.25, 0)
    second = live.note_off(PIANO, 60, 0.75, 0)
    assert (first.velocity, first.duration_ticks) == (100, 12)
    assert (second.velocity, second.duration_ticks) == (50, 12)


def test_pitches_and_tracks_pair_independently(score):
    score.add_track(1, 33, False, False)
    live = LiveInput(score)
    live.note_on(PIANO, 60, 90, 0.0, 0)
    live.note_on(1, 60, 70, 0.5, 0)
    live.note_on(PIANO, 64, 80, 0.25, 0)
    assert live.note_off(1, 60, 1.0, 0).velocity == 70
    assert live.note_off(PIANO, 64, 0.5, 0).duration_ticks == 12
    assert live.note_off(PIANO, 60, 0.5, 0).duration_ticks == 24


def test_unmatched_note_off_names_the_pitch(score):
    live = LiveInput(score)
    with pytest.raises(LiveInputError, match="pitch 61"):
        live.note_off(PIANO, 61, 0.5, 0)


def test_note_off_before_its_note_on_is_refused_and_the_note_stays_held(score):
    live = LiveInput(score)
    live.note_on(PIANO, 60, 90, 0.5, 2)
    with pytest.raises(LiveInputError, match="before its note-on"):
        live.note_off(PIANO, 60, 0.25, 2)
    assert live.describe()["held_notes"] == 1


def test_held_note_is_stored_continuing_when_its_bar_closes(score):
    live = LiveInput(score)
    live.note_on(PIANO, 48, 90, 0.5, 0)
    score.end_bar(0, 4, 4)
    live.bars_closed(score.playhead)
    assert notes_of(score, 0) == [(24, 24, 48, 90)]  # duration so far: to the barline
    assert score.bar_summary(0)["continuing"] == {PIANO: 1}
    assert score.stats()["continuing_notes"] == 1


def test_note_across_barlines_uses_each_bars_meter(score):
    """On at 4/4 bar 0 + 1/2, held through a 3/4 bar, off at 6/8 bar 2 + 1/3: 24 + 36 + 12 ticks."""
    live = LiveInput(score)
    live.note_on(PIANO, 48, 90, 0.5, 0)
    score.end_bar(0, 4, 4)
    live.bars_closed(score.playhead)
    score.end_bar(1, 3, 4)
    live.bars_closed(score.playhead)
    assert notes_of(score, 0) == [(24, 60, 48, 90)]  # extended at the second barline
    released = live.note_off(PIANO, 48, 1 / 3, 2)
    assert released.placed == "continued" and released.duration_ticks == 24 + 36 + 12
    assert notes_of(score, 0) == [(24, 72, 48, 90)]
    assert score.bar_summary(0)["continuing"] == {}
    assert notes_of(score, 1) == [] and live.describe()["held_notes"] == 0


def test_held_note_is_one_note_in_the_prompt(score):
    live = LiveInput(score)
    live.note_on(PIANO, 48, 90, 0.0, 0)
    for bar in range(3):
        score.end_bar(bar, 4, 4)
        live.bars_closed(score.playhead)
    live.note_off(PIANO, 48, 0.5, 3)
    window = score.window(0, 4)
    assert len(window.notes) == 1 and int(window.notes.duration[0]) == 3 * 48 + 24


def test_late_note_on_within_grace_is_stored_continuing(score):
    score.end_bar(0, 4, 4)
    live = LiveInput(score)
    live.note_on(PIANO, 60, 90, 0.75, 0)  # bar 0 has closed: within the grace window
    assert notes_of(score, 0) == [(36, 12, 60, 90)]
    live.note_off(PIANO, 60, 0.25, 1)
    assert notes_of(score, 0) == [(36, 24, 60, 90)]


def test_note_on_outside_the_window_is_refused(score):
    score.end_bar(5, 4, 4)
    score.end_bar(6, 4, 4)
    score.end_bar(7, 4, 4)
    live = LiveInput(score)
    with pytest.raises(ScoreWindowError, match="grace"):
        live.note_on(PIANO, 60, 90, 0.0, 5)
    with pytest.raises(ScoreWindowError, match="ahead"):
        live.note_on(PIANO, 60, 90, 0.0, 500)


def test_never_released_note_expires_with_its_duration_so_far(score):
    live = LiveInput(score, max_hold_bars=2)
    live.note_on(PIANO, 40, 90, 0.0, 0)
    for bar in range(5):
        score.end_bar(bar, 4, 4)
        live.bars_closed(score.playhead)
    assert live.describe()["expired_held_notes"] == 1 and live.describe()["held_notes"] == 0
    assert notes_of(score, 0) == [(0, 4 * 48, 40, 90)]  # kept, held through bar 3
    assert score.bar_summary(0)["continuing"] == {}
    with pytest.raises(LiveInputError, match="expired"):
        live.note_off(PIANO, 40, 0.5, 5)


def test_held_note_of_a_removed_track_is_dropped(score):
    score.add_track(1, 33, False, False)
    live = LiveInput(score)
    live.note_on(1, 60, 90, 0.0, 0)
    score.remove_track(1)
    score.end_bar(0, 4, 4)
    live.bars_closed(score.playhead)
    assert live.describe()["held_notes"] == 0


def test_snapshot_is_not_changed_by_a_later_note_off(score):
    live = LiveInput(score)
    live.note_on(PIANO, 48, 90, 0.0, 0)
    score.end_bar(0, 4, 4)
    live.bars_closed(score.playhead)
    before = score.window(0, 1)
    live.note_off(PIANO, 48, 0.5, 1)
    assert int(before.notes.duration[0]) == 48
    assert int(score.window(0, 1).notes.duration[0]) == 72


# ---- loops ----------------------------------------------------------------------------------


def test_loop_fills_future_bars_with_the_loop_content(score):
    for bar in range(4):
        score.add_note(PIANO, bar, 60 + bar, 90, 0.0, 0.25)
        score.end_bar(bar, 4, 4)
    score.set_loop(PIANO, 2, 4)  # bars 2, 3 repeat: bars 4, 5, 6, 7 are 2, 3, 2, 3
    window = score.window(2, 8)
    assert window.looped == frozenset({(PIANO, b) for b in range(4, 8)})
    pitches = {b: notes_of_window(window, b) for b in range(2, 8)}
    assert pitches == {2: [62], 3: [63], 4: [62], 5: [63], 6: [62], 7: [63]}


def notes_of_window(window, bar):
    return window.notes_of(PIANO, bar).pitch.tolist()


def test_loop_bars_not_yet_played_stay_unknown(score):
    score.end_bar(0, 4, 4)
    score.set_loop(PIANO, 0, 3)  # bars 1 and 2 are still to be played once
    window = score.window(0, 6)
    assert window.looped == frozenset({(PIANO, 3)})  # its source, bar 0, has closed


def test_cleared_loop_and_bad_loops(score):
    score.end_bar(0, 4, 4)
    score.set_loop(PIANO, 0, 1)
    assert score.clear_loop(PIANO) and not score.clear_loop(PIANO)
    assert score.window(0, 4).looped == frozenset()
    with pytest.raises(ScoreWindowError):
        score.set_loop(PIANO, 3, 3)
    with pytest.raises(ScoreWindowError, match="retain_bars"):
        score.set_loop(PIANO, 0, 40)


# ---- history load ---------------------------------------------------------------------------


def test_load_history_closes_every_bar_and_continues_after_it(score):
    score.add_track(5, 32, False, True)
    meters = np.array([(4, 4)] * 20 + [(3, 4)], dtype=np.int32)
    rows = np.array([(PIANO, b, 0, 12, 60, 90) for b in range(21)] + [(5, 20, 6, 6, 40, 80)])
    score.load_history(meters, rows, generated_track_ids=[5])
    assert (score.origin, score.playhead) == (0, 21)
    assert score.stats()["journal_bars"] == 21 - 16  # older bars went to the journal
    assert score.meter(20) == (3, 4) and score.generated_bars(5) >= {20}
    assert score.window(20, 21).notes_of(5, 20).pitch.tolist() == [40]
    assert not score.end_bar(20, 3, 4).new  # closed already
    assert score.end_bar(21, 4, 4).playhead == 22


def test_load_history_refuses_a_score_that_has_bars(score):
    score.end_bar(0, 4, 4)
    with pytest.raises(ScoreWindowError):
        score.load_history(np.array([(4, 4)]), np.zeros((0, 6)))


# ---- loops and per-bar attributes in the job ------------------------------------------------


def looped_job(loop):
    from .test_jobs import COND, make_job, params, session

    score, tracks = session(10)  # playhead 10, a note per bar
    if loop:
        score.set_loop(COND, 8, 10)
    return make_job(score, tracks, target=11, params=params(mask_mode="remove")), COND


def test_a_looped_track_gives_its_future_bars_as_context():
    from .test_jobs import prompt_of

    job, cond = looped_job(loop=True)
    assert prompt_of(job, cond).mask_bars == ()
    assert job.prompt_state["tracks"][0]["states"] == list("CCCCCCCC")
    future = job.snapshot.notes_of(cond, 11).pitch.tolist()
    assert future == [60 + 9]  # bar 11 repeats bar 9


def test_without_a_loop_the_future_stays_masked():
    from .test_jobs import prompt_of

    job, cond = looped_job(loop=False)
    assert prompt_of(job, cond).mask_bars == (6, 7)


def test_bar_attributes_go_to_the_agent_for_the_job_bars():
    """build_request passes them through; the engine's validation (yellow refuses any) is separate."""
    from sideman.daemon.jobs import build_request

    from .test_jobs import AGENT, params, session

    score, tracks = session(10)
    snapshot = score.window(5, 13)
    request = build_request(
        snapshot, window_start=5, bars=(11, 12), playhead=10, tracks=tracks, params=params(),
        attributes={}, seed=1, bar_attributes={11: {"note_density": 3}, 30: {"note_density": 9}},
    )  # fmt: skip
    agent = request.tracks[snapshot.track_ids.index(AGENT)]
    assert agent.bars == (6, 7) and agent.bar_attributes == {6: {"note_density": 3}}


def test_set_bar_is_refused_without_bar_level_tokens_and_stored_with_them():
    from sideman.daemon.bar_attributes import BarAttributes, bar_attribute_names
    from sideman.daemon.protocol import ProtocolError
    from sideman.engine.vocab import EncoderConfig

    yellow = EncoderConfig.yellow()
    assert bar_attribute_names(yellow) == ()
    with pytest.raises(ProtocolError, match="no bar-level attribute tokens") as refused:
        BarAttributes(yellow).set(8, "note_density", 3, playhead=4)
    assert refused.value.code == 4
    bars = BarAttributes(yellow, names=("note_density",))  # as a checkpoint that had them
    bars.set(8, "note_density", 3, playhead=4)
    assert bars.levels() == {8: {"note_density": 3}}
    with pytest.raises(ProtocolError, match="not played yet"):
        bars.set(2, "note_density", 3, playhead=4)
    with pytest.raises(ProtocolError, match="level must be in"):
        bars.set(9, "note_density", 99, playhead=4)
    bars.set(8, "note_density", -1, playhead=4)
    assert bars.levels() == {}


# ---- the session file -----------------------------------------------------------------------


def test_saved_session_reads_back_with_silent_tracks_and_trailing_bars(score, tmp_path):
    from sideman.daemon.session_file import SavedTrack, read_session_file
    from sideman.engine.vocab import EncoderConfig

    score.add_track(9, 0, True, False)  # never plays
    score.add_track(5, 32, False, True)
    score.add_note(PIANO, 0, 60, 90, 0.5, 0.25)
    score.end_bar(0, 4, 4)
    score.end_bar(1, 3, 4)
    score.end_bar(2, 3, 4)  # two silent bars at the end
    path = tmp_path / "set.mid"
    assert score.save_midi(path) == 1
    saved = read_session_file(path, EncoderConfig.yellow())
    assert saved.tracks == (
        SavedTrack(PIANO, 0, False, False), SavedTrack(9, 0, True, False), SavedTrack(5, 32, False, True),
    )  # fmt: skip
    assert saved.meters.tolist() == [[4, 4], [3, 4], [3, 4]]
    assert saved.rows.tolist() == [[PIANO, 0, 24, 12, 60, 90]]


def test_a_file_without_sideman_track_names_is_refused(tmp_path):
    import mido

    from sideman.daemon.session_file import SessionFileError, read_session_file
    from sideman.engine.vocab import EncoderConfig

    midi = mido.MidiFile()
    midi.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="Piano")]))
    midi.save(tmp_path / "other.mid")
    with pytest.raises(SessionFileError, match="track N"):
        read_session_file(tmp_path / "other.mid", EncoderConfig.yellow())
