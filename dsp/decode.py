"""Decode kernel: yellow token ids -> columnar notes at model resolution (tokens.md §5).

Robust to any id sequence: ids outside the vocabulary and tokens in places the grammar would not
allow are skipped, never indexed with.
"""

from __future__ import annotations

import numba
import numpy as np

from sideman.dsp.encode import (
    ATTRIBUTE_TOKEN_TYPES,
    BAR,
    BAR_END,
    FILL_IN_END,
    FILL_IN_PLACEHOLDER,
    FILL_IN_START,
    INSTRUMENT,
    MASK_BAR,
    N_ATTRIBUTES,
    NOTE_DURATION,
    NOTE_ONSET,
    TIME_ABSOLUTE_POS,
    TIME_SIGNATURE,
    TRACK,
    TRACK_END,
    VELOCITY_LEVEL,
)

_NO_TYPE = -1


@numba.njit(cache=True)
def resolve_fills(ids, id_type):
    """Replace each FillInPlaceholder by the next fill block; drop everything from the first FillInStart.

    A block runs from FillInStart to its FillInEnd, the next FillInStart or the end of the ids (so a
    block still being generated resolves too). Placeholders without a block are dropped.
    """
    n = ids.shape[0]
    vocab_size = id_type.shape[0]
    block_lo = np.empty(n, dtype=np.int64)
    block_hi = np.empty(n, dtype=np.int64)
    n_blocks = 0
    first_fill = n
    i = 0
    while i < n:
        token = ids[i]
        if 0 <= token < vocab_size and id_type[token] == FILL_IN_START:
            if first_fill == n:
                first_fill = i
            j = i + 1
            while j < n:
                other = ids[j]
                if 0 <= other < vocab_size and (
                    id_type[other] == FILL_IN_END or id_type[other] == FILL_IN_START
                ):
                    break
                j += 1
            block_lo[n_blocks] = i + 1
            block_hi[n_blocks] = j
            n_blocks += 1
            i = j if (j < n and id_type[ids[j]] == FILL_IN_START) else j + 1
        else:
            i += 1

    out = np.empty(n, dtype=np.int32)
    pos = 0
    next_block = 0
    for i in range(first_fill):
        token = ids[i]
        if 0 <= token < vocab_size and id_type[token] == FILL_IN_PLACEHOLDER:
            if next_block < n_blocks:
                for j in range(block_lo[next_block], block_hi[next_block]):
                    out[pos] = ids[j]
                    pos += 1
                next_block += 1
            continue
        out[pos] = token
        pos += 1
    return out[:pos]


@numba.njit(cache=True)
def decode_kernel(ids, id_type, id_value, level_to_velocity):
    """Decode ids to notes and per-track/per-bar data.

    Returns ``(track, bar, onset, duration, pitch, velocity, track_is_drum, track_group,
    track_attributes, track_bar_offsets, bar_timesig)``: note columns (bar is the track's own bar
    counter, ticks at model resolution); per track its drum flag, instrument group (-1 if none),
    (n, 5) attribute values (-1 if absent) and the slice ``[offsets[t], offsets[t + 1])`` of
    ``bar_timesig`` holding its bars' TimeSig values (-1 if a bar had none).
    """
    tokens = resolve_fills(ids, id_type)
    n = tokens.shape[0]
    vocab_size = id_type.shape[0]
    n_levels = level_to_velocity.shape[0]
    max_tracks = 0
    max_bars = 0
    max_notes = 0
    for i in range(n):
        token = tokens[i]
        if token < 0 or token >= vocab_size:
            continue
        kind = id_type[token]
        if kind == TRACK:
            max_tracks += 1
        elif kind == BAR:
            max_bars += 1
        elif kind == NOTE_ONSET:
            max_notes += 1

    note_track = np.empty(max_notes, dtype=np.int32)
    note_bar = np.empty(max_notes, dtype=np.int32)
    note_onset = np.empty(max_notes, dtype=np.int32)
    note_duration = np.empty(max_notes, dtype=np.int32)
    note_pitch = np.empty(max_notes, dtype=np.int32)
    note_velocity = np.empty(max_notes, dtype=np.int32)
    track_is_drum = np.zeros(max_tracks, dtype=np.int8)
    track_group = np.full(max_tracks, -1, dtype=np.int32)
    track_attributes = np.full((max_tracks, N_ATTRIBUTES), -1, dtype=np.int32)
    track_bar_offsets = np.zeros(max_tracks + 1, dtype=np.int64)
    bar_timesig = np.full(max_bars, -1, dtype=np.int32)

    n_notes = 0
    n_tracks = 0
    n_bars_total = 0
    current = -1  # open track index, -1 when none is open
    is_drum = False
    bars_in_track = 0
    bar_open = False
    time = 0
    level = 0
    prev_kind = _NO_TYPE
    pending_pitch = 0
    for i in range(n):
        token = tokens[i]
        if token < 0 or token >= vocab_size:
            prev_kind = _NO_TYPE
            continue
        kind = id_type[token]
        value = id_value[token]
        if kind == TRACK:
            current = n_tracks
            n_tracks += 1
            is_drum = value == 1
            track_is_drum[current] = 1 if is_drum else 0
            track_bar_offsets[current] = n_bars_total
            bars_in_track = 0
            bar_open = False
            time = 0
            level = 0
        elif current < 0:
            pass  # nothing outside a track means anything to the score
        elif kind == TRACK_END:
            track_bar_offsets[current + 1] = n_bars_total
            current = -1
            bar_open = False
        elif kind == BAR:
            n_bars_total += 1
            bars_in_track += 1
            track_bar_offsets[current + 1] = n_bars_total
            bar_open = True
            time = 0
        elif kind == BAR_END:
            bar_open = False
        elif kind == MASK_BAR:
            # A masked bar stands for hidden content: the bar (already counted, meter kept)
            # decodes as empty, dropping any notes a malformed sequence put before or after it.
            if bar_open:
                while (
                    n_notes > 0
                    and note_track[n_notes - 1] == current
                    and note_bar[n_notes - 1] == bars_in_track - 1
                ):
                    n_notes -= 1
                bar_open = False
        elif kind == INSTRUMENT:
            track_group[current] = value
        elif kind == TIME_SIGNATURE:
            if bar_open:
                bar_timesig[n_bars_total - 1] = value
        elif kind == TIME_ABSOLUTE_POS:
            time = value
        elif kind == VELOCITY_LEVEL:
            level = value
        elif kind == NOTE_ONSET:
            if bar_open:
                if is_drum:
                    n_notes = _add_note(
                        note_track, note_bar, note_onset, note_duration, note_pitch, note_velocity,
                        n_notes, current, bars_in_track - 1, time, 1, value,
                        _velocity(level, level_to_velocity, n_levels),
                    )  # fmt: skip
                else:
                    pending_pitch = value
        elif kind == NOTE_DURATION:
            if bar_open and prev_kind == NOTE_ONSET and not is_drum:
                n_notes = _add_note(
                    note_track, note_bar, note_onset, note_duration, note_pitch, note_velocity,
                    n_notes, current, bars_in_track - 1, time, value + 1, pending_pitch,
                    _velocity(level, level_to_velocity, n_levels),
                )  # fmt: skip
            # Before the first Bar it is a note_duration_dist attribute, which yellow does not use.
        else:
            for a in range(N_ATTRIBUTES):
                if kind == ATTRIBUTE_TOKEN_TYPES[a]:
                    track_attributes[current, a] = value
        prev_kind = kind
    if current >= 0:
        track_bar_offsets[current + 1] = n_bars_total

    return (
        note_track[:n_notes].copy(),
        note_bar[:n_notes].copy(),
        note_onset[:n_notes].copy(),
        note_duration[:n_notes].copy(),
        note_pitch[:n_notes].copy(),
        note_velocity[:n_notes].copy(),
        track_is_drum[:n_tracks].copy(),
        track_group[:n_tracks].copy(),
        track_attributes[:n_tracks].copy(),
        track_bar_offsets[: n_tracks + 1].copy(),
        bar_timesig[:n_bars_total].copy(),
    )


@numba.njit(cache=True, inline="always")
def _velocity(level, level_to_velocity, n_levels):
    if level <= 0 or level >= n_levels:
        return 100
    return level_to_velocity[level]


@numba.njit(cache=True, inline="always")
def _add_note(
    note_track, note_bar, note_onset, note_duration, note_pitch, note_velocity,
    n_notes, track, bar, onset, duration, pitch, velocity,
):  # fmt: skip
    note_track[n_notes] = track
    note_bar[n_notes] = bar
    note_onset[n_notes] = onset
    note_duration[n_notes] = duration
    note_pitch[n_notes] = pitch
    note_velocity[n_notes] = velocity
    return n_notes + 1
