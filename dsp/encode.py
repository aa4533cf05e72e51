"""Encode kernel: a window of bars of columnar notes -> yellow token ids (tokens.md §3).

Tables come in as arrays (``offsets``/``sizes`` indexed by token-type enum id, the velocity bin
table); this module knows only the reference's enum numbering, which is part of the format.
"""

from __future__ import annotations

import numba
import numpy as np

from sideman.dsp.token_types import (  # noqa: F401 (re-exported for tests)
    BAR,
    BAR_END,
    FILL_IN_END,
    FILL_IN_PLACEHOLDER,
    FILL_IN_START,
    INSTRUMENT,
    MASK_BAR,
    MAX_NOTE_DURATION,
    MAX_POLYPHONY,
    MIN_NOTE_DURATION,
    MIN_POLYPHONY,
    NOTE_DENSITY,
    NOTE_DURATION,
    NOTE_ONSET,
    NUM_BARS,
    PIECE_START,
    TIME_ABSOLUTE_POS,
    TIME_SIGNATURE,
    TRACK,
    TRACK_END,
    VELOCITY_LEVEL,
)

# Token type of each attribute column, in the fixed emission order (tokens.md §3.1 step 4.3).
ATTRIBUTE_TOKEN_TYPES = np.array(
    [MIN_POLYPHONY, MAX_POLYPHONY, MIN_NOTE_DURATION, MAX_NOTE_DURATION, NOTE_DENSITY],
    dtype=np.int32,
)
N_ATTRIBUTES = 5

# Per-(track, bar) encoding modes.
MODE_NOTES = 0
MODE_FILL = 1  # FillInPlaceholder in place; the notes go to a fill block after all tracks
MODE_MASKED = 2  # empty shell `Bar TimeSig BarEnd`, its token span recorded
MODE_REMOVED = 3  # no tokens at all
MODE_CUT = 4  # the track stops here (partial autoregressive track): no more bars, no TrackEnd
MODE_MASK_TOKEN = 5  # `Bar TimeSig MaskBar BarEnd` (mask mode "token"), no span recorded


@numba.njit(cache=True)
def notes_are_sorted(track, bar, onset, pitch) -> bool:
    """Whether note columns are sorted by (track, bar, onset, pitch)."""
    for i in range(1, len(track)):
        if track[i] != track[i - 1]:
            if track[i] < track[i - 1]:
                return False
            continue
        if bar[i] != bar[i - 1]:
            if bar[i] < bar[i - 1]:
                return False
            continue
        if onset[i] != onset[i - 1]:
            if onset[i] < onset[i - 1]:
                return False
            continue
        if pitch[i] < pitch[i - 1]:
            return False
    return True


@numba.njit(cache=True, inline="always")
def _clamp(value, low, high):
    if value < low:
        return low
    if value > high:
        return high
    return value


@numba.njit(cache=True)
def _emit_bar_notes(
    out,
    pos,
    lo,
    hi,
    is_drum,
    onset,
    duration,
    pitch,
    velocity,
    offsets,
    sizes,
    velocity_to_level,
    max_duration,
):
    """Note events of one bar or fill block (§3.2); velocity stickiness starts afresh here."""
    onset_max = sizes[TIME_ABSOLUTE_POS] - 1
    pitch_max = sizes[NOTE_ONSET] - 1
    level_max = sizes[VELOCITY_LEVEL] - 1
    duration_cap = min(max_duration, sizes[NOTE_DURATION])
    has_velocity = offsets[VELOCITY_LEVEL] >= 0
    time = 0
    last_level = -1
    for i in range(lo, hi):
        note_onset = _clamp(onset[i], 0, onset_max)
        if note_onset != time:
            out[pos] = offsets[TIME_ABSOLUTE_POS] + note_onset
            pos += 1
            time = note_onset
        level = velocity_to_level[_clamp(velocity[i], 0, 127)]
        if level > level_max:
            level = level_max
        if has_velocity and level > 0 and level != last_level:
            out[pos] = offsets[VELOCITY_LEVEL] + level
            pos += 1
            last_level = level
        out[pos] = offsets[NOTE_ONSET] + _clamp(pitch[i], 0, pitch_max)
        pos += 1
        if not is_drum:
            out[pos] = offsets[NOTE_DURATION] + _clamp(duration[i], 1, duration_cap) - 1
            pos += 1
    return pos


@numba.njit(cache=True)
def encode_window_kernel(
    track,
    bar,
    onset,
    duration,
    pitch,
    velocity,
    bar_timesig,
    track_is_drum,
    track_group,
    track_attributes,
    track_order,
    bar_modes,
    piece_start,
    num_bars_index,
    offsets,
    sizes,
    velocity_to_level,
    max_duration,
):
    """Token ids of one window, and the (k, 2) [start, end) spans of its MASKED bar shells.

    Notes must be sorted by (track, bar, onset, pitch) with window-local bars; notes whose track
    or bar is outside the window are ignored. ``num_bars_index`` < 0 omits NumBars.
    A MODE_MASK_TOKEN bar in a vocabulary without MaskBar comes out as a bare `Bar TimeSig BarEnd`
    (the caller is expected to refuse that request before it gets here).
    """
    n_tracks = track_is_drum.shape[0]
    n_bars = bar_timesig.shape[0]
    n_cells = n_tracks * n_bars
    cell_lo = np.zeros(n_cells, dtype=np.int64)
    cell_hi = np.zeros(n_cells, dtype=np.int64)
    for i in range(track.shape[0]):
        t = track[i]
        b = bar[i]
        if t < 0 or t >= n_tracks or b < 0 or b >= n_bars:
            continue
        cell = t * n_bars + b
        if cell_hi[cell] == 0:
            cell_lo[cell] = i
        cell_hi[cell] = i + 1

    n_order = track_order.shape[0]
    emitted_notes = 0  # counted per listed track, so a repeated track cannot overrun the buffer
    for k in range(n_order):
        t = track_order[k]
        if 0 <= t < n_tracks:
            for b in range(n_bars):
                emitted_notes += cell_hi[t * n_bars + b] - cell_lo[t * n_bars + b]
    capacity = 4 + n_order * (8 + 6 * n_bars) + 4 * emitted_notes
    out = np.empty(capacity, dtype=np.int32)
    spans = np.empty((n_order * n_bars, 2), dtype=np.int32)
    fill_cells = np.empty(n_order * n_bars, dtype=np.int64)
    n_spans = 0
    n_fills = 0
    pos = 0

    if offsets[PIECE_START] >= 0:
        out[pos] = offsets[PIECE_START] + _clamp(piece_start, 0, sizes[PIECE_START] - 1)
        pos += 1
    if num_bars_index >= 0 and offsets[NUM_BARS] >= 0:
        out[pos] = offsets[NUM_BARS] + _clamp(num_bars_index, 0, sizes[NUM_BARS] - 1)
        pos += 1

    for k in range(n_order):
        t = track_order[k]
        if t < 0 or t >= n_tracks:
            continue
        is_drum = track_is_drum[t] != 0
        out[pos] = offsets[TRACK] + (1 if is_drum else 0)
        pos += 1
        out[pos] = offsets[INSTRUMENT] + _clamp(track_group[t], 0, sizes[INSTRUMENT] - 1)
        pos += 1
        for a in range(N_ATTRIBUTES):
            value = track_attributes[t, a]
            token_type = ATTRIBUTE_TOKEN_TYPES[a]
            if value >= 0 and offsets[token_type] >= 0:
                out[pos] = offsets[token_type] + min(value, sizes[token_type] - 1)
                pos += 1
        cut = False
        for b in range(n_bars):
            mode = bar_modes[t, b]
            if mode == MODE_CUT:
                cut = True
                break
            if mode == MODE_REMOVED:
                continue
            bar_start = pos
            out[pos] = offsets[BAR]
            pos += 1
            out[pos] = offsets[TIME_SIGNATURE] + _clamp(
                bar_timesig[b], 0, sizes[TIME_SIGNATURE] - 1
            )
            pos += 1
            cell = t * n_bars + b
            if mode == MODE_FILL:
                out[pos] = offsets[FILL_IN_PLACEHOLDER]
                pos += 1
                fill_cells[n_fills] = cell
                n_fills += 1
            elif mode == MODE_MASK_TOKEN:
                if offsets[MASK_BAR] >= 0:
                    out[pos] = offsets[MASK_BAR]
                    pos += 1
            elif mode != MODE_MASKED:
                pos = _emit_bar_notes(
                    out, pos, cell_lo[cell], cell_hi[cell], is_drum, onset, duration, pitch,
                    velocity, offsets, sizes, velocity_to_level, max_duration,
                )  # fmt: skip
            out[pos] = offsets[BAR_END]
            pos += 1
            if mode == MODE_MASKED:
                spans[n_spans, 0] = bar_start
                spans[n_spans, 1] = pos
                n_spans += 1
        if not cut:
            out[pos] = offsets[TRACK_END]
            pos += 1

    # Fill blocks follow in emission order, which is the order the decoder meets the placeholders.
    for f in range(n_fills):
        cell = fill_cells[f]
        is_drum = track_is_drum[cell // n_bars] != 0
        out[pos] = offsets[FILL_IN_START]
        pos += 1
        pos = _emit_bar_notes(
            out, pos, cell_lo[cell], cell_hi[cell], is_drum, onset, duration, pitch, velocity,
            offsets, sizes, velocity_to_level, max_duration,
        )  # fmt: skip
        out[pos] = offsets[FILL_IN_END]
        pos += 1
    return out[:pos].copy(), spans[:n_spans].copy()
