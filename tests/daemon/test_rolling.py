"""The rolling score: quantisation, bar closing, late notes, bounded memory, journal, saving."""

import tracemalloc

import numpy as np
import pytest

from sideman.daemon.rolling import (
    DuplicateTrackError,
    InvalidNoteError,
    RollingScore,
    ScoreWindowError,
    UnknownTrackError,
    UnsupportedMeterError,
)
from sideman.engine.score import Score
from sideman.engine.vocab import EncoderConfig

METERS = EncoderConfig.yellow().time_signatures
HUMAN, AGENT = 7, 3


@pytest.fixture
def score(tmp_path):
    rolling = RollingScore(supported_meters=METERS, journal_dir=tmp_path / "journal")
    rolling.add_track(HUMAN, 0, False, False)
    rolling.add_track(AGENT, 33, False, True)
    yield rolling
    rolling.close()


def ticks_of(rolling, bar_index, track_id=HUMAN):
    """(onset, duration, pitch, velocity) rows of one bar of one track."""
    notes = rolling.window(bar_index, bar_index + 1).notes_of(track_id, bar_index)
    return list(
        zip(
            notes.onset.tolist(),
            notes.duration.tolist(),
            notes.pitch.tolist(),
            notes.velocity.tolist(),
            strict=True,
        )
    )


def note(rolling, bar_index, onset, duration=0.25, pitch=60, velocity=100, track_id=HUMAN):
    return rolling.add_note(track_id, bar_index, pitch, velocity, onset, duration)


# ---- quantisation (D30, D31) ---------------------------------------------------------------
@pytest.mark.parametrize("k", range(48))
def test_every_grid_position_in_four_four_lands_on_its_tick(score, k):
    onset = float(np.float32(k / 48))  # what an OSC float32 carries
    note(score, 0, onset, duration=float(np.float32(max(k, 1) / 48)))
    score.end_bar(0, 4, 4)
    assert ticks_of(score, 0) == [(k, max(k, 1), 60, 100)]


@pytest.mark.parametrize(
    ("onset", "tick"),
    [
        (1 / 3, 16),
        (0.333, 16),
        (2 / 3, 32),
        (0.667, 32),
        (20 / 48, 20),
        (28 / 48, 28),
        (40 / 48, 40),
        (5 / 6, 40),
    ],
)
def test_triplet_positions_round_to_the_nearest_tick(score, onset, tick):
    note(score, 0, float(np.float32(onset)), duration=float(np.float32(onset)))
    score.end_bar(0, 4, 4)
    assert ticks_of(score, 0) == [(tick, tick, 60, 100)]


def test_quantisation_uses_the_closing_bar_meter(score):
    note(score, 0, 1 / 3, duration=1 / 3)
    score.end_bar(0, 3, 4)
    assert ticks_of(score, 0) == [(12, 12, 60, 100)]


def test_onset_just_before_the_barline_is_clamped_into_the_bar(score):
    note(score, 0, 0.999)
    score.end_bar(0, 4, 4)
    assert ticks_of(score, 0)[0][0] == 47


def test_tiny_duration_becomes_one_tick_and_long_duration_is_kept_whole(score):
    note(score, 0, 0.0, duration=0.001, pitch=60)
    note(score, 0, 0.5, duration=2.5, pitch=62)
    score.end_bar(0, 4, 4)
    assert ticks_of(score, 0) == [(0, 1, 60, 100), (24, 120, 62, 100)]


def test_non_finite_or_negative_note_values_are_refused(score):
    for onset, duration in [(float("nan"), 0.25), (0.0, float("inf")), (-0.1, 0.25), (0.0, 0.0)]:
        with pytest.raises(InvalidNoteError):
            note(score, 0, onset, duration)
    assert score.stats()["pending_notes"] == 0


# ---- closing bars (D17-D19, D21, D22) ------------------------------------------------------
def test_pending_notes_wait_for_their_bar_end(score):
    assert note(score, 0, 0.0) == "pending"
    assert score.stats()["pending_notes"] == 1
    result = score.end_bar(0, 4, 4)
    assert (result.new, result.playhead_before, result.playhead, result.merged) == (
        True,
        0,
        1,
        {HUMAN: 1},
    )
    assert score.stats()["pending_notes"] == 0


def test_duplicate_bar_end_changes_nothing(score):
    score.end_bar(0, 4, 4)
    note(score, 1, 0.5)
    again = score.end_bar(0, 3, 4)
    assert (again.new, again.playhead_before, again.playhead, again.merged) == (False, 1, 1, {})
    assert score.meter(0) == (4, 4)
    assert score.stats()["pending_notes"] == 1
    assert ticks_of(score, 0) == []


def test_old_bar_end_is_idempotent(score):
    for bar_index in range(4):
        score.end_bar(bar_index, 4, 4)
    old = score.end_bar(1, 7, 8)
    assert not old.new and old.playhead == 4 and score.meter(1) == (4, 4)


def test_skipped_bars_close_as_silent_bars_and_merge_their_pending_notes(score):
    score.end_bar(0, 4, 4)
    note(score, 2, 0.25)
    score.announce_meter(1, 3, 4)
    result = score.end_bar(3, 4, 4)
    assert (result.playhead_before, result.playhead, result.merged) == (1, 4, {HUMAN: 1})
    assert ticks_of(score, 2) == [(12, 12, 60, 100)]
    assert ticks_of(score, 1) == [] and ticks_of(score, 3) == []
    assert [score.meter(b) for b in range(4)] == [(4, 4), (3, 4), (4, 4), (4, 4)]


def test_first_bar_at_100_sets_the_origin_and_allocates_nothing_before_it(score):
    note(score, 100, 0.0)
    result = score.end_bar(100, 4, 4)
    assert (score.origin, score.playhead, result.playhead_before) == (100, 101, 100)
    stats = score.stats()
    assert stats["bars_in_memory"] == 1 and stats["notes_in_memory"] == 1
    snapshot = score.window(96, 101)
    assert snapshot.bar_note_counts().sum(axis=0).tolist() == [0, 0, 0, 0, 1]


@pytest.mark.parametrize(("num", "den"), [(5, 7), (4, 0), (0, 4), (4, 3)])
def test_unsupported_meter_is_refused_and_nothing_recorded(score, num, den):
    note(score, 0, 0.0)
    with pytest.raises(UnsupportedMeterError, match=f"{num}/{den}"):
        score.end_bar(0, num, den)
    assert (score.origin, score.playhead) == (None, 0)
    assert score.stats()["pending_notes"] == 1 and score.stats()["bars_in_memory"] == 0


def test_unsupported_meter_after_a_valid_bar_leaves_the_last_meter(score):
    score.end_bar(0, 3, 4)
    with pytest.raises(UnsupportedMeterError):
        score.end_bar(1, 5, 0)
    assert score.playhead == 1 and score.meter(1) == (3, 4)


def test_negative_bar_index_is_refused(score):
    with pytest.raises(ScoreWindowError):
        score.end_bar(-1, 4, 4)
    with pytest.raises(ScoreWindowError):
        note(score, -1, 0.0)
    assert score.origin is None


def test_bar_end_far_ahead_of_the_playhead_is_refused(score):
    score.end_bar(0, 4, 4)
    with pytest.raises(ScoreWindowError, match="ahead"):
        score.end_bar(1 + 65, 4, 4)
    assert score.playhead == 1 and score.stats()["bars_in_memory"] == 1
    assert score.end_bar(1 + 64, 4, 4).playhead == 66


def test_note_far_ahead_of_the_playhead_is_refused(score):
    score.end_bar(0, 4, 4)
    with pytest.raises(ScoreWindowError):
        note(score, 1 + 65, 0.0)
    assert note(score, 1 + 64, 0.0) == "pending"


# ---- late notes (D20, D53) -----------------------------------------------------------------
def test_late_note_within_grace_is_merged_with_that_bar_meter(score):
    score.end_bar(0, 3, 4)
    assert note(score, 0, 0.5) == "late"
    assert ticks_of(score, 0) == [(18, 9, 60, 100)]
    assert score.stats()["late_notes"] == 1


def test_late_note_older_than_grace_is_refused(score):
    score.end_bar(0, 4, 4)
    score.end_bar(1, 4, 4)
    with pytest.raises(ScoreWindowError, match="grace"):
        note(score, 0, 0.0)
    assert ticks_of(score, 0) == []


def test_note_before_the_origin_is_refused_after_the_first_bar(tmp_path):
    with RollingScore(supported_meters=METERS, grace_bars=3, journal_dir=tmp_path) as rolling:
        rolling.add_track(HUMAN, 0, False, False)
        rolling.end_bar(10, 4, 4)
        with pytest.raises(ScoreWindowError, match="first bar"):
            note(rolling, 9, 0.0)


def test_pending_notes_for_bars_before_the_origin_expire(score):
    note(score, 5, 0.0)
    note(score, 10, 0.0)
    score.end_bar(10, 4, 4)
    stats = score.stats()
    assert (stats["expired_notes"], stats["pending_notes"], stats["notes_in_memory"]) == (1, 0, 1)


def test_unknown_track_and_duplicate_track_are_refused(score):
    with pytest.raises(UnknownTrackError):
        note(score, 0, 0.0, track_id=99)
    with pytest.raises(DuplicateTrackError):
        score.add_track(HUMAN, 0, False, False)


# ---- meters (D35) --------------------------------------------------------------------------
def test_meter_falls_back_from_recorded_to_announced_to_last_recorded(score):
    assert score.meter(3) == (4, 4)
    score.end_bar(0, 6, 8)
    score.announce_meter(2, 7, 8)
    assert [score.meter(b) for b in range(4)] == [(6, 8), (6, 8), (7, 8), (6, 8)]
    score.end_bar(2, 5, 4)
    assert score.meter(2) == (5, 4)
    with pytest.raises(ScoreWindowError):
        score.announce_meter(1, 3, 4)
    with pytest.raises(UnsupportedMeterError):
        score.announce_meter(5, 4, 0)


# ---- generated material (D32) --------------------------------------------------------------
def test_generated_bar_replaces_the_track_bar_and_is_listed(score):
    score.end_bar(0, 4, 4)
    score.set_generated(AGENT, 1, [0, 12], [12, 12], [40, 43], [90, 0])
    score.set_generated(AGENT, 1, [24], [6], [45], [80])
    score.end_bar(1, 4, 4)
    assert ticks_of(score, 1, AGENT) == [(24, 6, 45, 80)]
    assert score.generated_bars(AGENT) == {1} and score.generated_bars(HUMAN) == set()


def test_generated_bar_outside_memory_is_refused(tmp_path):
    with RollingScore(supported_meters=METERS, retain_bars=2, journal_dir=tmp_path) as rolling:
        rolling.add_track(AGENT, 0, False, True)
        for bar_index in range(5):
            rolling.end_bar(bar_index, 4, 4)
        with pytest.raises(ScoreWindowError):
            rolling.set_generated(AGENT, 2, [0], [12], [60], [100])
        with pytest.raises(ScoreWindowError):
            rolling.set_generated(AGENT, 5 + 65, [0], [12], [60], [100])
        assert rolling.set_generated(AGENT, 3, [0], [12], [60], [100]) == 1


# ---- snapshots -----------------------------------------------------------------------------
def test_window_is_an_immutable_copy(score):
    note(score, 0, 0.0)
    score.end_bar(0, 4, 4)
    snapshot = score.window(0, 2)
    note(score, 0, 0.5)
    score.remove_track(HUMAN)
    assert len(snapshot.notes) == 1 and snapshot.track_ids == (HUMAN, AGENT)
    with pytest.raises(ValueError):
        snapshot.notes.pitch[0] = 1
    with pytest.raises(ValueError):
        snapshot.meters[0, 0] = 3


def test_snapshot_to_score_renumbers_bars_and_orders_tracks_by_creation(score):
    for bar_index in range(4):
        note(score, bar_index, 0.25, pitch=60 + bar_index)
        score.end_bar(bar_index, 4, 4)
    score.set_generated(AGENT, 4, [0], [12], [40], [90])
    score.announce_meter(5, 3, 4)
    engine_score = score.window(2, 6).to_score()
    assert engine_score.n_bars == 4 and engine_score.time_signatures.tolist()[-1] == [3, 4]
    assert [t.program for t in engine_score.track_info] == [0, 33]
    assert engine_score.notes.as_table().tolist() == [
        [0, 0, 12, 12, 62, 100],
        [0, 1, 12, 12, 63, 100],
        [1, 2, 0, 12, 40, 90],
    ]


def test_window_over_bars_that_left_memory_is_refused(tmp_path):
    with RollingScore(supported_meters=METERS, retain_bars=4, journal_dir=tmp_path) as rolling:
        rolling.add_track(HUMAN, 0, False, False)
        for bar_index in range(10):
            rolling.end_bar(bar_index, 4, 4)
        with pytest.raises(ScoreWindowError, match="left memory"):
            rolling.window(5, 10)
        assert rolling.window(6, 10).n_bars == 4


def test_remove_track_drops_its_bars_and_pending_notes(score):
    note(score, 0, 0.0)
    score.end_bar(0, 4, 4)
    note(score, 1, 0.0)
    score.remove_track(HUMAN)
    assert not score.has_track(HUMAN) and score.track_ids() == (AGENT,)
    assert score.stats()["notes_in_memory"] == 0 and score.stats()["pending_notes"] == 0
    score.add_track(HUMAN, 5, True, False)
    assert score.end_bar(1, 4, 4).merged == {}
    assert score.track(HUMAN).is_drum and ticks_of(score, 0) == []


# ---- retention and journal (D52) -----------------------------------------------------------
def test_ten_thousand_bars_keep_memory_flat(tmp_path):
    with RollingScore(supported_meters=METERS, retain_bars=16, journal_dir=tmp_path) as rolling:
        rolling.add_track(HUMAN, 0, False, False)
        rolling.add_track(AGENT, 0, False, True)
        agent = np.array([0, 24], dtype=np.int32)
        tracemalloc.start()
        try:
            for bar_index in range(10_000):
                for onset in (0.0, 0.25, 0.5, 0.75):
                    note(rolling, bar_index, onset)
                rolling.end_bar(bar_index, 4, 4)
                rolling.set_generated(
                    AGENT, bar_index + 1, agent, agent + 12, agent + 40, agent + 80
                )
                if bar_index == 1_000:
                    early, _ = tracemalloc.get_traced_memory()
            late, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        stats = rolling.stats()
        assert stats["bars_in_memory"] <= 16 + 1
        assert stats["notes_in_memory"] <= 17 * 6
        assert stats["journal_bars"] == 10_000 - 16
        assert stats["journal_notes"] + stats["notes_in_memory"] == 10_000 * 6
        assert late - early < 64 * 1024


def test_save_midi_holds_every_human_and_generated_note_including_the_journal(tmp_path):
    with RollingScore(
        supported_meters=METERS, retain_bars=3, journal_dir=tmp_path / "j"
    ) as rolling:
        rolling.add_track(HUMAN, 0, False, False)
        rolling.add_track(AGENT, 33, False, True)
        expected = []
        for bar_index in range(20, 32):
            meter = (3, 4) if bar_index % 4 == 0 else (4, 4)
            note(rolling, bar_index, 0.25, pitch=50 + bar_index - 20)
            rolling.end_bar(bar_index, *meter)
            expected.append((0, bar_index - 20, 12 if meter == (4, 4) else 9, 60 + bar_index - 20))
            rolling.set_generated(AGENT, bar_index + 1, [6], [6], [70 + bar_index - 20], [90])
            expected.append((1, bar_index + 1 - 20, 6, 80 + bar_index - 20))
        path = tmp_path / "session.mid"
        assert rolling.save_midi(path) == len(expected)
        written = rolling.stats()
    assert written["journal_notes"] > 0
    loaded = Score.from_midi(path)
    table = loaded.notes.as_table()
    got = sorted(
        zip(
            table[:, 0].tolist(),
            table[:, 1].tolist(),
            table[:, 2].tolist(),
            (table[:, 4] + 10).tolist(),
            strict=True,
        )
    )
    assert got == sorted(expected)
    assert [t.program for t in loaded.track_info] == [0, 33]
    assert loaded.time_signatures.tolist()[:2] == [[3, 4], [4, 4]]
    assert loaded.n_bars == 13


def test_save_midi_leaves_out_a_removed_track_even_from_the_journal(tmp_path):
    with RollingScore(
        supported_meters=METERS, retain_bars=2, journal_dir=tmp_path / "j"
    ) as rolling:
        rolling.add_track(HUMAN, 0, False, False)
        rolling.add_track(AGENT, 0, False, True)
        for bar_index in range(6):
            note(rolling, bar_index, 0.0)
            note(rolling, bar_index, 0.0, track_id=AGENT)
            rolling.end_bar(bar_index, 4, 4)
        rolling.remove_track(HUMAN)
        rolling.add_track(HUMAN, 0, False, False)
        assert rolling.save_midi(tmp_path / "out.mid") == 6


def test_save_midi_before_any_bar_writes_an_empty_file(score, tmp_path):
    assert score.save_midi(tmp_path / "empty.mid") == 0
    assert (tmp_path / "empty.mid").exists()


def test_close_removes_the_journal(tmp_path):
    rolling = RollingScore(supported_meters=METERS, retain_bars=2, journal_dir=tmp_path)
    rolling.add_track(HUMAN, 0, False, False)
    for bar_index in range(5):
        rolling.end_bar(bar_index, 4, 4)
    assert any(tmp_path.iterdir())
    rolling.close()
    assert not any(tmp_path.iterdir())


def test_journal_meters_answer_for_bars_that_left_memory(tmp_path):
    with RollingScore(supported_meters=METERS, retain_bars=2, journal_dir=tmp_path) as rolling:
        for bar_index, meter in enumerate([(3, 4), (7, 8), (4, 4), (4, 4), (4, 4)]):
            rolling.end_bar(bar_index, *meter)
        assert rolling.stats()["journal_bars"] == 3
        assert [rolling.meter(b) for b in range(3)] == [(3, 4), (7, 8), (4, 4)]
        assert rolling.bar_summary(0)["notes"] is None and rolling.bar_summary(4)["meter"] == [4, 4]
