"""The columnar score model and its object views."""

import numpy as np
import pytest

from sideman.engine.score import NoteArrays, Score, ScoreError, TrackInfo


def two_track_score() -> Score:
    notes = NoteArrays.from_rows(
        [
            (1, 1, 0, 12, 40, 90),
            (0, 0, 12, 6, 64, 80),
            (0, 0, 0, 12, 60, 100),
            (0, 2, 6, 3, 67, 70),
        ]
    )
    ts = np.array([(4, 4), (7, 8), (3, 4)])
    return Score(resolution=12, time_signatures=ts, track_info=[TrackInfo(program=0), TrackInfo(is_drum=True)], notes=notes)


def test_notes_are_sorted_by_track_bar_onset_pitch():
    score = two_track_score()
    assert score.notes.as_table()[:, [0, 1, 2, 4]].tolist() == [[0, 0, 0, 60], [0, 0, 12, 64], [0, 2, 6, 67], [1, 1, 0, 40]]


def test_bar_lengths_are_exact_for_eighth_meters():
    score = two_track_score()
    assert score.bar_ticks().tolist() == [48, 42, 36]
    assert score.bar_starts().tolist() == [0, 48, 90, 126]


def test_slice_bars_shifts_to_bar_zero_and_keeps_meters():
    part = two_track_score().slice_bars(1, 3)
    assert part.n_bars == 2
    assert part.time_signatures.tolist() == [[7, 8], [3, 4]]
    assert sorted(part.notes.bar.tolist()) == [0, 1]


@pytest.mark.parametrize("start, end", [(-1, 2), (2, 2), (0, 4)])
def test_slice_outside_the_score_is_refused(start, end):
    with pytest.raises(ScoreError, match="outside the score's 3 bars"):
        two_track_score().slice_bars(start, end)


def test_rescale_rounds_and_keeps_durations_positive():
    score = two_track_score().rescaled(480)
    assert score.resolution == 480
    assert score.notes.onset.tolist() == [0, 480, 240, 0]
    back = Score(resolution=480, time_signatures=[(4, 4)], track_info=[TrackInfo()],
                 notes=NoteArrays.from_rows([(0, 0, 30, 5, 60, 90)])).rescaled(12)
    assert back.notes.onset.tolist() == [1]  # 30/40 = 0.75 rounds up
    assert back.notes.duration.tolist() == [1]  # never 0


@pytest.mark.parametrize(
    "row, message",
    [
        ((2, 0, 0, 1, 60, 90), "track 2 outside"),
        ((0, 3, 0, 1, 60, 90), "bar 3 outside"),
        ((0, 0, -1, 1, 60, 90), "onset -1 outside"),
        ((0, 0, 0, 0, 60, 90), "duration 0 outside"),
        ((0, 0, 0, 1, 128, 90), "pitch 128 outside"),
        ((0, 0, 0, 1, 60, 300), "velocity 300 outside"),
    ],
)
def test_inconsistent_notes_are_refused_naming_the_column(row, message):
    score = two_track_score()
    with pytest.raises(ScoreError, match=message):
        score.with_notes(NoteArrays.from_rows([row]))


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ScoreError, match="differ in length"):
        NoteArrays(np.zeros(2), np.zeros(2), np.zeros(2), np.ones(2), np.zeros(1), np.zeros(2))


def test_object_views_follow_the_arrays():
    tracks = two_track_score().tracks
    assert len(tracks) == 2 and tracks[1].is_drum
    assert [n.pitch for n in tracks[0].bars[0].notes] == [60, 64]
    assert tracks[0].bars[1].time_signature == (7, 8)
    assert [n.pitch for n in tracks[0].notes] == [60, 64, 67]
