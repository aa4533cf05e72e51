"""Per-bar features of generated bars (osc-protocol §11.10)."""

import numpy as np
import pytest

from sideman.dsp.features import bar_features


def features(rows, ts_num=4, bar_ticks=48):
    """Run the kernel on (pitch, velocity, onset, duration) rows."""
    table = np.asarray(rows, dtype=np.int32).reshape(-1, 4)
    pitch, velocity, onset, duration = (np.ascontiguousarray(table[:, i]) for i in range(4))
    return bar_features(onset, duration, pitch, velocity, ts_num, bar_ticks)


def test_measured_example_of_the_spec_is_reproduced():
    result = features([(64, 90, 0, 12), (64, 70, 24, 60), (67, 70, 24, 6)])
    assert result[0] == pytest.approx(0.75)
    assert result[1] == pytest.approx(65.0)
    assert round(result[2], 2) == 76.67
    assert result[3] == 2
    assert round(result[4], 4) == 0.5417
    assert result[5:] == (1, 6, 60)


def test_empty_bar_gives_zeros():
    assert features([]) == (0.0, 0.0, 0.0, 0, 0.0, 0, 0, 0)


def test_velocity_zero_notes_do_not_count():
    with_silent = features([(60, 100, 0, 12), (90, 0, 0, 96), (30, 0, 12, 1)])
    assert with_silent == features([(60, 100, 0, 12)])


def test_only_silent_notes_read_as_an_empty_bar():
    assert features([(60, 0, 0, 12)]) == (0.0, 0.0, 0.0, 0, 0.0, 0, 0, 0)


def test_density_is_per_time_signature_beat_so_per_eighth_in_six_eight():
    rows = [(60, 100, 6 * i, 6) for i in range(6)]
    assert features(rows, ts_num=6, bar_ticks=36)[0] == pytest.approx(1.0)
    assert features(rows, ts_num=3, bar_ticks=36)[0] == pytest.approx(2.0)


def test_polyphony_counts_shared_onsets_in_any_note_order():
    rows = [
        (60, 100, 24, 12),
        (62, 100, 0, 12),
        (64, 100, 24, 12),
        (65, 100, 12, 12),
        (67, 100, 24, 2),
    ]
    result = features(rows)
    assert result[3] == 3  # tick 24
    assert result[5] == 1  # ticks 0 and 12


def test_sounding_overlap_is_not_polyphony():
    result = features([(60, 100, 0, 48), (64, 100, 12, 36)])
    assert (result[3], result[5]) == (1, 1)


def test_mean_duration_is_not_clamped_to_the_bar():
    result = features([(60, 100, 0, 96)], ts_num=3, bar_ticks=36)
    assert result[4] == pytest.approx(96 / 36)
    assert result[6:] == (96, 96)


def test_note_durations_are_raw_ticks():
    result = features([(60, 100, 0, 1), (60, 100, 1, 7), (60, 100, 8, 40)])
    assert result[6:] == (1, 40)
