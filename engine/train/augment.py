"""Score-to-score augmentations of training windows (the reduction, octave registration,
revoicing, texture, diminution and augmentation, re-articulation, held stretches): what
``samples`` applies, and what ``evaluate`` reuses to build its adherence cases. Each takes the stream's ``numpy.random.Generator`` where it
draws, and returns a new window; none changes its input.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sideman.dsp.attributes import DURATION_LEVELS
from sideman.engine.score import NoteArrays, Score, TrackInfo


def melodic_tracks(score: Score) -> np.ndarray:
    """Indices of the score's tracks that are not drums, ascending."""
    return np.array([t for t, info in enumerate(score.track_info) if not info.is_drum], dtype=np.int64)


REDUCTION_PROGRAMS = (0, 4, 19, 48)  # GM acoustic grand, electric piano 1, church organ, strings


def merge_tracks(
    rng: np.random.Generator, window: Score, kept: np.ndarray
) -> tuple[Score, np.ndarray, tuple[int, ...]]:
    """2..all melodic tracks of ``window`` (``draw_reduction``) merged by ``merge_group``; the
    window unchanged and ``()`` if it has fewer than two melodic tracks."""
    group, program = draw_reduction(rng, window)
    if not len(group):
        return window, kept, ()
    return merge_group(window, kept, group, program)


def draw_reduction(rng: np.random.Generator, window: Score) -> tuple[np.ndarray, int]:
    """(2..all of ``window``'s melodic tracks, ascending; a GM program from
    ``REDUCTION_PROGRAMS``), or (no tracks, -1) if it has fewer than two melodic tracks."""
    melodic = melodic_tracks(window)
    if len(melodic) < 2:
        return np.zeros(0, dtype=np.int64), -1
    group = np.sort(rng.choice(melodic, int(rng.integers(2, len(melodic) + 1)), replace=False))
    return group, int(rng.choice(REDUCTION_PROGRAMS))


def merge_group(
    window: Score, kept: np.ndarray, group: np.ndarray, program: int
) -> tuple[Score, np.ndarray, tuple[int, ...]]:
    """The tracks ``group`` of ``window`` as one reduction track played by ``program``, in the
    place of the first of them; unisons (same bar, onset, pitch) kept once with the longer
    duration. Returns the new window, the piece track of each of its tracks (``kept``: the piece
    track of each of ``window``'s), and the piece tracks merged."""
    staying = np.setdiff1d(np.arange(window.n_tracks), group[1:])
    remap = np.full(window.n_tracks, -1, dtype=np.int32)
    remap[staying] = np.arange(len(staying), dtype=np.int32)
    remap[group] = remap[group[0]]
    notes = window.notes
    merged = NoteArrays(
        remap[notes.track], notes.bar, notes.onset, notes.duration, notes.pitch, notes.velocity
    )
    info = [window.track_info[int(t)] for t in staying]
    info[int(remap[group[0]])] = TrackInfo(program=program, is_drum=False, name="reduction")
    reduced = replace(window, track_info=info, notes=_drop_unisons(merged))
    return reduced, kept[staying], tuple(int(t) for t in kept[group])


TIME_SCALES = (0.25, 0.5, 2.0, 4.0)
OCTAVE_SHIFTS = np.array([-12, 12, 24, -24])
_OCTAVE_WEIGHTS = np.array([0.35, 0.35, 0.15, 0.15])


def double_octaves(
    rng: np.random.Generator, window: Score, track: int, chosen: np.ndarray | None = None
) -> tuple[Score, tuple[int, ...]]:
    """``track`` of ``window`` with every note (or the notes of the window where ``chosen`` is
    true) also sounding at one to three octave shifts (an organ registration: 16', 4', 2'
    couplers on the 8'); copies outside 0..127 dropped, unisons kept once. Returns the window and
    the shifts, in semitones, ascending."""
    count = int(rng.integers(1, len(OCTAVE_SHIFTS)))
    shifts = np.sort(rng.choice(OCTAVE_SHIFTS, count, replace=False, p=_OCTAVE_WEIGHTS))
    notes = window.notes
    own = notes.select((notes.track == track) & (True if chosen is None else chosen))
    copies = [notes]
    for shift in shifts:
        pitch = own.pitch + shift
        keep = (pitch >= 0) & (pitch <= 127)
        moved = own.select(keep)
        copies.append(
            NoteArrays(moved.track, moved.bar, moved.onset, moved.duration, pitch[keep], moved.velocity)
        )
    doubled = _drop_unisons(NoteArrays.concatenate(copies))
    return replace(window, notes=doubled), tuple(int(s) for s in shifts)


TEXTURE_SHARES = (0.3, 0.6)  # of a part's beats played thinner or thicker


def vary_texture(rng: np.random.Generator, window: Score, track: int) -> tuple[Score, str]:
    """``track`` of ``window`` (a reduction) played thinner or thicker on 30% or 60% of its beats
    (``TEXTURE_SHARES``, each beat drawn on its own), the other tracks untouched.

    *Thin* (half the time): each onset in those beats keeps only its highest note, or only its
    lowest (a melody or a bass line between the chords). *Thick*: the notes starting in those
    beats also sound at one to three octave shifts (``double_octaves`` on some beats only).
    Reductions and doublings move a part's lowest and highest polyphony together; this gives the
    parts whose polyphony attributes differ (one note at times, four at others), which a request
    for one of them with the other left as it is asks for. Returns the window and "thin" or
    "thick"; ``(window, "")`` when no note of the track starts in a chosen beat.
    """
    notes = window.notes
    starts = window.bar_starts()
    absolute = starts[notes.bar] + notes.onset
    beats = absolute // window.resolution
    chosen_beats = rng.random(-(-int(starts[-1]) // window.resolution)) < rng.choice(TEXTURE_SHARES)
    chosen = (notes.track == track) & chosen_beats[beats]
    if not chosen.any():
        return window, ""
    if rng.random() < 0.5:
        return double_octaves(rng, window, track, chosen)[0], "thick"
    sign = 1 if rng.random() < 0.5 else -1  # keep the highest (1) or the lowest (-1) note
    index = np.flatnonzero(chosen)
    index = index[np.lexsort((sign * notes.pitch[index], absolute[index]))]
    last = np.ones(len(index), dtype=bool)  # the last of each onset in (onset, sign*pitch) order
    last[:-1] = absolute[index[1:]] != absolute[index[:-1]]
    dropped = np.zeros(len(notes), dtype=bool)
    dropped[index[~last]] = True
    return replace(window, notes=notes.select(~dropped)), "thin"


VOICING_SHARES = (0.3, 0.6, 1.0)  # of a reduction's beats revoiced


def revoice(rng: np.random.Generator, window: Score, voices: np.ndarray) -> tuple[Score, str]:
    """The tracks ``voices`` of ``window`` (the parts a reduction is about to merge) with fewer or
    more of them sounding in 30%, 60% or all of the beats (``VOICING_SHARES``, each beat drawn on
    its own), before ``merge_group`` makes them one track.

    *Fewer* (half the time): 1..all-but-one of the voices, drawn, keep their notes starting in
    those beats; the others fall silent there. *More*: the 1..all highest voices (by mean pitch)
    also sound an octave higher in those beats, or the lowest an octave lower. Doubling and
    ``vary_texture`` move a reduction between one line, its chords and their octave registrations;
    this moves it by a drawn number of voices (two, three, five, six, seven where it had four), in
    places or throughout: the polyphony pairs (lowest, highest) that a request for one bound, the
    other left as it is, asks for. Returns the window and what was done ("keep 2 of 4", "add 3
    above"); ``(window, "")`` when no note of the voices starts in a chosen beat."""
    notes = window.notes
    starts = window.bar_starts()
    beats = (starts[notes.bar] + notes.onset) // window.resolution
    chosen_beats = rng.random(-(-int(starts[-1]) // window.resolution)) < rng.choice(VOICING_SHARES)
    chosen = np.isin(notes.track, voices) & chosen_beats[beats]
    if not chosen.any():
        return window, ""
    if rng.random() < 0.5:
        count = int(rng.integers(1, len(voices)))
        silent = rng.choice(voices, len(voices) - count, replace=False)
        revoiced = notes.select(~(chosen & np.isin(notes.track, silent)))
        return replace(window, notes=revoiced), f"keep {count} of {len(voices)}"
    count = int(rng.integers(1, len(voices) + 1))
    above = rng.random() < 0.5
    means = np.array([notes.pitch[notes.track == v].mean() if (notes.track == v).any() else 0 for v in voices])
    order = np.asarray(voices)[np.argsort(-means if above else means, kind="stable")]
    own = notes.select(chosen & np.isin(notes.track, order[:count]))
    pitch = own.pitch + (12 if above else -12)
    fits = (pitch >= 0) & (pitch <= 127)
    moved = own.select(fits)
    copies = NoteArrays(moved.track, moved.bar, moved.onset, moved.duration, pitch[fits], moved.velocity)
    added = _drop_unisons(NoteArrays.concatenate([notes, copies]))
    return replace(window, notes=added), f"add {count} {'above' if above else 'below'}"


def span_bars(size: int, scale: float) -> int:
    """Piece bars that make ``size`` window bars written at ``scale``."""
    return max(1, round(size / scale))


def can_rescale(score: Score, start: int, span: int, scale: float) -> bool:
    """Whether bars [start, start + span) share one meter that divides into ``1/scale`` parts."""
    meters = score.time_signatures[start : start + span]
    divisor = round(1 / scale) if scale < 1 else 1
    return bool(np.all(meters == meters[0])) and int(score.bar_ticks()[start]) % divisor == 0


def rescale(window: Score, scale: float) -> Score:
    """``window`` (one meter) written with durations ``scale`` times the original: 0.5 puts
    bars 2k and 2k+1 into bar k at double speed, 2 spreads each bar over two. Onsets and durations
    are rounded down, durations to at least one tick (the tokenizer caps them at 8 beats)."""
    notes = window.notes
    bar_ticks = int(window.bar_ticks()[0])
    absolute = notes.bar.astype(np.int64) * bar_ticks + notes.onset
    onset = (absolute * scale).astype(np.int64)
    duration = np.maximum((notes.duration * scale).astype(np.int64), 1)
    n_bars = span_bars(window.n_bars, 1 / scale)
    fast = NoteArrays(
        notes.track, onset // bar_ticks, onset % bar_ticks, duration, notes.pitch, notes.velocity
    )
    meters = np.repeat(window.time_signatures[:1], n_bars, axis=0)
    return replace(window, time_signatures=meters, notes=_drop_unisons(fast))


SPLIT_SHARES = (0.3, 0.6, 1.0)  # of a part's notes that repeated notes replace


def grid_ticks(resolution: int, level: int) -> int:
    """The note length of duration level ``level`` (0 = 32nd .. 5 = whole) at ``resolution``
    ticks per quarter, at least one tick (12 per quarter: 2, 3, 6, 12, 24, 48)."""
    return max(1, round(resolution * 2.0 ** (level - 3)))


def rearticulate(
    rng: np.random.Generator, window: Score, track: int, level: int | None = None
) -> tuple[Score, int]:
    """``track`` of ``window`` played in notes of one length, the others untouched: a part
    re-articulated as an accompanist would, so its note durations differ from the context's.

    A note-duration level is drawn (``DURATION_LEVELS``, equally likely) unless ``level`` is
    given, and ``grid_ticks`` gives its length. Shorter than the part's median note: *repeated
    notes* — 30%, 60% or all of the notes longer than the grid (``SPLIT_SHARES``) become
    repetitions of their pitch every grid length over their span (the last one cut at the
    original end). Otherwise: *held notes* — at each grid point of every bar the pitches sounding
    there are held to the next grid point or the barline (notes that start and end between two
    points are left out). Returns the window and the grid length in ticks; ``(window, 0)`` when
    the track would be left without notes.
    """
    notes = window.notes
    own = notes.track == track
    part = notes.select(own)
    if not len(part):
        return window, 0
    starts = window.bar_starts()
    absolute = starts[part.bar] + part.onset
    if level is None:
        level = int(rng.integers(0, DURATION_LEVELS))
    grid = grid_ticks(window.resolution, level)
    if grid < np.median(part.duration):
        chosen = (rng.random(len(part)) < rng.choice(SPLIT_SHARES)) & (part.duration > grid)
        counts = np.where(chosen, -(-part.duration // grid), 1)
        source = np.repeat(np.arange(len(part)), counts)
        repeat = np.arange(len(source)) - np.repeat(np.cumsum(counts) - counts, counts)
        onset = absolute[source] + repeat * grid
        end = absolute[source] + part.duration[source]
        duration = np.where(chosen[source], np.minimum(grid, end - onset), part.duration[source])
        inside = onset < starts[-1]  # a note held past the window's end repeats only inside it
        source, onset, duration = source[inside], onset[inside], duration[inside]
    else:
        points, ends = _grid_points(window, grid)
        source, onset, duration = _held(absolute, part.duration, points, ends)
    if not len(source):
        return window, 0
    return _rewrite(window, track, part, source, onset, duration), grid


HOLD_LEVELS = (4, 5)  # half notes or whole bars


def hold_some(rng: np.random.Generator, window: Score, track: int) -> tuple[Score, int]:
    """``track`` of ``window`` held in long notes over some of its stretches, played as written
    over the others: a pad that sustains a chord now and then moves with the part.

    The track's bars are cut at every half note or at every barline (``HOLD_LEVELS``, equally
    likely); 1..all-but-one of those stretches are drawn, and in each the pitches sounding at
    its start are held to its end (the part's notes starting inside it are left out, and notes
    sounding into it end at its start). ``rearticulate`` holds every stretch, so its long notes are
    all the part has; this gives parts with short and long notes side by side (lowest duration an
    eighth, highest a whole), as a request for a longer highest duration asks. Returns the window
    and the number of stretches held; ``(window, 0)`` when the track has no notes or fewer than two
    stretches."""
    notes = window.notes
    part = notes.select(notes.track == track)
    points, ends = _grid_points(window, grid_ticks(window.resolution, int(rng.choice(HOLD_LEVELS))))
    if not len(part) or len(points) < 2:
        return window, 0
    count = int(rng.integers(1, len(points)))
    held = np.sort(rng.choice(len(points), count, replace=False))
    points, ends = points[held], ends[held]
    starts = window.bar_starts()
    absolute = starts[part.bar] + part.onset
    stretch = np.searchsorted(points, absolute, side="right") - 1
    inside = (stretch >= 0) & (absolute < ends[np.maximum(stretch, 0)])
    following = np.searchsorted(points, absolute, side="right")
    next_start = np.append(points, np.iinfo(np.int64).max)[following]
    kept = np.flatnonzero(~inside)
    source, onset, duration = _held(absolute, part.duration, points, ends)
    source = np.concatenate([kept, source])
    onset = np.concatenate([absolute[kept], onset])
    duration = np.concatenate(
        [np.minimum(part.duration[kept], next_start[kept] - absolute[kept]), duration]
    )
    return _rewrite(window, track, part, source, onset, duration), count


def _grid_points(window: Score, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) ticks of the window's stretches of ``grid`` ticks, each bar cut from its
    barline, the last stretch of a bar ending at the next barline."""
    starts = window.bar_starts()
    points = np.concatenate([np.arange(starts[b], starts[b + 1], grid) for b in range(window.n_bars)])
    ends = np.minimum(points + grid, starts[np.searchsorted(starts, points, side="right")])
    return points, ends


def _held(
    absolute: np.ndarray, duration: np.ndarray, points: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(note index, onset, duration) of the notes sounding at each point, held to its end."""
    sounding = (absolute[None, :] <= points[:, None]) & (
        points[:, None] < (absolute + duration)[None, :]
    )
    at, source = np.nonzero(sounding)
    return source, points[at], ends[at] - points[at]


def _rewrite(
    window: Score, track: int, part: NoteArrays, source: np.ndarray, onset: np.ndarray,
    duration: np.ndarray,
) -> Score:
    """``window`` with ``track`` replaced by ``part``'s notes ``source`` at the absolute ticks
    ``onset``, lasting ``duration``."""
    starts = window.bar_starts()
    bar = np.searchsorted(starts, onset, side="right") - 1
    played = NoteArrays(
        np.full(len(source), track), bar, onset - starts[bar], duration,
        part.pitch[source], part.velocity[source],
    )  # fmt: skip
    notes = window.notes
    rewritten = _drop_unisons(NoteArrays.concatenate([notes.select(notes.track != track), played]))
    return replace(window, notes=rewritten)


def _drop_unisons(notes: NoteArrays) -> NoteArrays:
    """``notes`` sorted, one note per (track, bar, onset, pitch): the longest."""
    order = np.lexsort((-notes.duration, notes.pitch, notes.onset, notes.bar, notes.track))
    notes = notes.take(order)
    keys = np.stack([notes.track, notes.bar, notes.onset, notes.pitch], axis=1)
    first = np.ones(len(notes), dtype=bool)
    first[1:] = np.any(keys[1:] != keys[:-1], axis=1)
    return notes.select(first).sorted()
