"""Track attribute analysis for yellow (tokens.md §7.2): polyphony, duration levels, drum density.

Output columns follow the attribute emission order: min_polyphony, max_polyphony,
min_note_duration, max_note_duration, note_density; -1 where an attribute does not apply.
"""

from __future__ import annotations

import numba
import numpy as np

from sideman.dsp.encode import N_ATTRIBUTES

MIN_QUANTILE = 0.15
MAX_QUANTILE = 0.85
POLYPHONY_BINS = 10
DURATION_LEVELS = 6
# Counts above the top bin all bin alike, so one histogram slot holds them.
_POLYPHONY_CAP = POLYPHONY_BINS + 1


@numba.njit(cache=True)
def _percentile_from_histogram(histogram, q):
    """Element ``min(round_half_even(n·q), n − 1)`` of the sorted values a histogram counts; 0 if empty."""
    n = 0
    for count in histogram:
        n += count
    if n == 0:
        return 0
    index = min(int(np.rint(n * q)), n - 1)
    seen = 0
    for value in range(histogram.shape[0]):
        seen += histogram[value]
        if seen > index:
            return value
    return histogram.shape[0] - 1


@numba.njit(cache=True, inline="always")
def duration_level(duration_ticks, resolution):
    """``floor(clamp(log2(quarters) + 3, 0, 5))``: 0 = 32nd … 5 = whole or longer."""
    level = np.log2(duration_ticks / resolution) + 3.0
    if level < 0.0:
        return 0
    if level > DURATION_LEVELS - 1:
        return DURATION_LEVELS - 1
    return int(np.floor(level))


@numba.njit(cache=True)
def density_bin(average_notes, thresholds):
    """First bin whose threshold is ≥ the half-even-rounded average; the last bin past them all."""
    rounded = np.rint(average_notes)
    for b in range(thresholds.shape[0]):
        if rounded <= thresholds[b]:
            return b
    return thresholds.shape[0] - 1


@numba.njit(cache=True)
def compute_attributes_kernel(
    track, bar, onset, duration, bar_ticks, track_is_drum, bar_use, density_thresholds, resolution
):
    """(n_tracks, 5) int32 attribute bins of every track, from notes on the model grid.

    ``bar_ticks`` is the exact length of each bar; ``bar_use[t, b]`` False leaves bar b of track t
    out (bars being regenerated must not leak into the prompt, quirk §14.10). The bar still takes
    its place on the track-long polyphony roll.
    """
    n_tracks = track_is_drum.shape[0]
    n_bars = bar_ticks.shape[0]
    out = np.full((n_tracks, N_ATTRIBUTES), -1, dtype=np.int32)
    bar_start = np.zeros(n_bars + 1, dtype=np.int64)
    for b in range(n_bars):
        bar_start[b + 1] = bar_start[b] + bar_ticks[b]
    max_tick = bar_start[n_bars]

    # Counting sort of note indices by track: no ordering is required of the caller.
    track_count = np.zeros(n_tracks + 1, dtype=np.int64)
    for i in range(track.shape[0]):
        t = track[i]
        b = bar[i]
        if 0 <= t < n_tracks and 0 <= b < n_bars and bar_use[t, b]:
            track_count[t + 1] += 1
    for t in range(n_tracks):
        track_count[t + 1] += track_count[t]
    fill = track_count[:n_tracks].copy()
    by_track = np.empty(track_count[n_tracks], dtype=np.int64)
    for i in range(track.shape[0]):
        t = track[i]
        b = bar[i]
        if 0 <= t < n_tracks and 0 <= b < n_bars and bar_use[t, b]:
            by_track[fill[t]] = i
            fill[t] += 1

    roll = np.zeros(max_tick + 1, dtype=np.int32)
    notes_per_bar = np.zeros(n_bars, dtype=np.int64)
    for t in range(n_tracks):
        lo = track_count[t]
        hi = track_count[t + 1]
        if track_is_drum[t]:
            notes_per_bar[:] = 0
            for k in range(lo, hi):
                notes_per_bar[bar[by_track[k]]] += 1
            non_empty = 0
            for b in range(n_bars):
                if notes_per_bar[b] > 0:
                    non_empty += 1
            average = (hi - lo) / non_empty if non_empty > 0 else 0.0
            out[t, 4] = density_bin(average, density_thresholds)
            continue

        # Polyphony: difference array over the track-long roll; a note covers
        # [start, min(end, max_tick - 1)), so the track's last tick never counts (quirk §14.16).
        roll[:] = 0
        durations = np.zeros(DURATION_LEVELS, dtype=np.int64)
        for k in range(lo, hi):
            i = by_track[k]
            start = bar_start[bar[i]] + onset[i]
            end = min(start + duration[i], max_tick - 1)
            if start < end:
                roll[start] += 1
                roll[end] -= 1
            durations[duration_level(duration[i], resolution)] += 1
        polyphony = np.zeros(_POLYPHONY_CAP + 1, dtype=np.int64)
        sounding = 0
        for tick in range(max_tick):
            sounding += roll[tick]
            if sounding > 0:
                polyphony[min(sounding, _POLYPHONY_CAP)] += 1
        polyphony[0] = 0
        low = _percentile_from_histogram(polyphony, MIN_QUANTILE)
        high = _percentile_from_histogram(polyphony, MAX_QUANTILE)
        out[t, 0] = min(max(low, 1), POLYPHONY_BINS) - 1
        out[t, 1] = min(max(high, 1), POLYPHONY_BINS) - 1
        out[t, 2] = _percentile_from_histogram(durations, MIN_QUANTILE)
        out[t, 3] = _percentile_from_histogram(durations, MAX_QUANTILE)
    return out
