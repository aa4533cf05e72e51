"""Attribute analysis: polyphony roll, duration levels, drum density (tokens.md §7.2)."""

import numpy as np
import pytest

from sideman.dsp.attributes import compute_attributes_kernel, density_bin, duration_level
from sideman.engine.vocab import EncoderConfig


@pytest.fixture(scope="module")
def drum_row() -> np.ndarray:
    return EncoderConfig.yellow().density_thresholds[128]


def analyse(rows, drum_row, *, bar_ticks=(48,), drums=(False,), bar_use=None):
    """Run the kernel on (track, bar, onset, duration) rows."""
    table = np.asarray(rows, dtype=np.int32).reshape(-1, 4)
    if bar_use is None:
        bar_use = np.ones((len(drums), len(bar_ticks)), dtype=np.bool_)
    return compute_attributes_kernel(
        *(np.ascontiguousarray(table[:, i]) for i in range(4)),
        np.asarray(bar_ticks, dtype=np.int64),
        np.asarray(drums, dtype=np.int8),
        np.asarray(bar_use, dtype=np.bool_),
        drum_row,
        12,
    ).tolist()


def test_worked_check_of_the_spec(drum_row):
    rows = [(0, 0, 0, 12), (0, 0, 0, 12), (0, 0, 24, 6)]
    assert analyse(rows, drum_row) == [[0, 1, 2, 3, -1]]


def test_drum_track_gets_only_note_density(drum_row):
    rows = [(0, 0, 0, 12), (0, 0, 0, 12), (0, 0, 24, 6)]
    assert analyse(rows, drum_row, drums=(True,)) == [[-1, -1, -1, -1, 1]]


@pytest.mark.parametrize(
    ("notes_per_bar", "expected_bin"),
    [(0, 0), (1, 0), (2, 0), (3, 1), (4, 2), (5, 2), (6, 3), (8, 3), (9, 4), (10, 4), (11, 5),
     (12, 5), (13, 6), (15, 6), (16, 7), (18, 7), (19, 8), (26, 8), (27, 9), (300, 9)],
)  # fmt: skip
def test_drum_density_bins_at_every_edge(drum_row, notes_per_bar, expected_bin):
    rows = [(0, 0, i % 48, 1) for i in range(notes_per_bar)]
    assert analyse(rows, drum_row, drums=(True,))[0][4] == expected_bin


def test_drum_density_averages_over_non_empty_bars_with_half_even_rounding(drum_row):
    # 5 notes over 2 non-empty bars (the empty third bar does not count) = 2.5 -> 2 -> bin 0;
    # 7 notes over 2 bars = 3.5 -> 4 -> bin 2.
    five = [(0, 0, 0, 1)] * 3 + [(0, 1, 0, 1)] * 2
    seven = [(0, 0, 0, 1)] * 4 + [(0, 1, 0, 1)] * 3
    assert analyse(five, drum_row, bar_ticks=(48, 48, 48), drums=(True,))[0][4] == 0
    assert analyse(seven, drum_row, bar_ticks=(48, 48, 48), drums=(True,))[0][4] == 2
    assert density_bin(2.5, drum_row) == 0
    assert density_bin(3.5, drum_row) == 2


@pytest.mark.parametrize(
    ("ticks", "level"),
    [
        (1, 0),
        (2, 0),
        (3, 1),
        (5, 1),
        (6, 2),
        (11, 2),
        (12, 3),
        (23, 3),
        (24, 4),
        (47, 4),
        (48, 5),
        (96, 5),
    ],
)
def test_duration_levels(ticks, level):
    assert duration_level(ticks, 12) == level


def test_duration_percentile_rounds_half_to_even(drum_row):
    # ten notes: levels [0, 1, 2 × 8]; 10 · 0.15 = 1.5 rounds to index 2 -> level 2, not 1.
    rows = [(0, 0, 0, 1), (0, 0, 1, 3)] + [(0, 0, 2 + i, 6) for i in range(8)]
    assert analyse(rows, drum_row)[0][2] == 2


def test_last_tick_of_the_track_never_sounds(drum_row):
    # One 1/16 bar (3 ticks): the note on tick 2 is the track's last tick, so it is not counted.
    rows = [(0, 0, 0, 3), (0, 0, 2, 1)]
    assert analyse(rows, drum_row, bar_ticks=(3,))[0][:2] == [0, 0]
    # With a second bar after it, tick 2 is no longer the last one: two voices sound there.
    assert analyse(rows, drum_row, bar_ticks=(3, 3))[0][:2] == [0, 1]


def test_a_note_only_on_the_last_tick_leaves_no_sounding_ticks(drum_row):
    assert analyse([(0, 0, 2, 1)], drum_row, bar_ticks=(3,))[0][:2] == [0, 0]


def test_polyphony_is_laid_end_to_end_over_exact_bar_lengths(drum_row):
    # A 7/8 bar is 42 ticks: a note at bar 1 onset 0 starts at tick 42, overlapping a long note of bar 0.
    rows = [(0, 0, 0, 54), (0, 1, 0, 12)]
    assert analyse(rows, drum_row, bar_ticks=(42, 42))[0][:2] == [0, 1]
    assert analyse(rows, drum_row, bar_ticks=(48, 48))[0][:2] == [0, 0]


def test_high_polyphony_bins_to_the_top(drum_row):
    rows = [(0, 0, 0, 24)] * 14
    assert analyse(rows, drum_row, bar_ticks=(48, 48))[0][:2] == [9, 9]


def test_bar_mask_leaves_regenerated_bars_out(drum_row):
    rows = [(0, 0, 0, 48)] + [(0, 1, 0, 48)] * 3 + [(1, 0, 0, 1)] * 30 + [(1, 1, 0, 1)]
    bar_use = np.array([[True, False], [False, True]])
    everything = analyse(rows, drum_row, bar_ticks=(48, 48), drums=(False, True))
    masked = analyse(rows, drum_row, bar_ticks=(48, 48), drums=(False, True), bar_use=bar_use)
    assert everything == [[0, 2, 5, 5, -1], [-1, -1, -1, -1, 7]]
    assert masked == [[0, 0, 5, 5, -1], [-1, -1, -1, -1, 0]]


def test_empty_tracks_get_the_lowest_bins(drum_row):
    assert analyse([], drum_row, bar_ticks=(48,), drums=(False, True)) == [[0, 0, 0, 0, -1], [-1, -1, -1, -1, 0]]  # fmt: skip
