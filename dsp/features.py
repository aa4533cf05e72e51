"""Per-bar descriptive features sent with every generated bar (osc-protocol §11.10).

Only notes with velocity > 0 count. An empty bar gives all zeros; the caller sends nothing for it.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def bar_features(onset, duration, pitch, velocity, ts_num, bar_ticks):
    """Features of one bar's notes (ticks at the score resolution) in meter ``ts_num``/x.

    Returns (note_density, mean_pitch, mean_velocity, max_polyphony, mean_duration,
    min_polyphony, min_note_duration, max_note_duration):
    note_density is notes per time-signature beat (per eighth in 6/8); polyphony counts notes
    sharing the same onset tick, not sounding together; mean_duration is the mean of
    duration / bar_ticks, unclamped; the two note durations are raw ticks.
    """
    n = 0
    pitch_sum = 0.0
    velocity_sum = 0.0
    duration_sum = 0.0
    min_duration = 0
    max_duration = 0
    for i in range(onset.shape[0]):
        if velocity[i] <= 0:
            continue
        d = duration[i]
        if n == 0 or d < min_duration:
            min_duration = d
        if n == 0 or d > max_duration:
            max_duration = d
        n += 1
        pitch_sum += pitch[i]
        velocity_sum += velocity[i]
        duration_sum += d
    if n == 0:
        return 0.0, 0.0, 0.0, 0, 0.0, 0, 0, 0

    onsets = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(onset.shape[0]):
        if velocity[i] > 0:
            onsets[k] = onset[i]
            k += 1
    onsets.sort()
    max_polyphony = 0
    min_polyphony = n
    run = 1
    for i in range(1, n + 1):
        if i < n and onsets[i] == onsets[i - 1]:
            run += 1
            continue
        max_polyphony = max(max_polyphony, run)
        min_polyphony = min(min_polyphony, run)
        run = 1

    note_density = n / max(ts_num, 1)
    mean_duration = duration_sum / n / bar_ticks if bar_ticks > 0 else 0.0
    return (
        note_density,
        pitch_sum / n,
        velocity_sum / n,
        max_polyphony,
        mean_duration,
        min_polyphony,
        int(min_duration),
        int(max_duration),
    )
