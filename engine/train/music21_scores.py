"""music21 scores as sideman Scores on the yellow grid (12 ticks per quarter).

Notes are placed by measure: each part's measure k starts where measure k starts in the piece,
and its notes sit at their offset inside it. Some corpus encodings hold overfull measures in one
part (a breve written into a 4/4 bar of the Monteverdi madrigals), which would otherwise push that
part out of step with the others for the rest of the piece. A measure lasts what most parts say
it lasts. Tied notes are merged, chord members are separate notes, grace notes are dropped.

Bars follow the measures: a pickup is padded with rest on the left so downbeats stay on bar
lines, a short last measure is padded on the right, consecutive short measures that add up to
one bar (a measure split at a repeat or fermata: 3 + 1 beats) become that bar, a measure lasting
k bars becomes k bars, and any other measure becomes a bar of the meter of its length (3.25
quarters -> 13/16). A piece left with a bar outside the vocabulary is skipped (``SkipPiece``).

Voicing (General MIDI programs, parts top to bottom) and velocities are described in
``sideman.engine.train.corpus``; this module implements them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.vocab import EncoderConfig

RESOLUTION = 12  # ticks per quarter of the yellow grid
CHORALE_PROGRAMS = (73, 68, 71, 70)  # flute, oboe, clarinet, bassoon (the demo's quartet)
QUARTET_PROGRAMS = (40, 40, 41, 42)  # violin, violin, viola, cello
CHOIR_HIGH, CHOIR_LOW = 52, 53  # choir aahs, voice oohs
VOICINGS = ("chorale", "strings", "choir")
TOP_VELOCITY, INNER_VELOCITY, BASS_VELOCITY = 88, 76, 80
# Dynamics that hold until the next marking; any other (sf, sfz, fp, ...) accents one onset.
_SUSTAINED_DYNAMICS = frozenset({"pppppp", "ppppp", "pppp", "ppp", "pp", "p", "mp", "mf", "f", "ff", "fff", "ffff", "fffff", "ffffff"})  # fmt: skip


class SkipPiece(Exception):
    """A score that makes no training piece; the message is the reason counted in the report."""


@dataclass(frozen=True)
class PartNotes:
    """One part as absolute columns on a tick grid (ties merged, grace notes dropped)."""

    name: str
    onset: np.ndarray  # (n,) int64 ticks from the start of the first measure
    duration: np.ndarray  # (n,) int64 ticks, >= 1
    pitch: np.ndarray  # (n,) int64 MIDI pitch
    dynamic: np.ndarray  # (n,) int64 velocity of the dynamics marking in force, 0 where none


@dataclass(frozen=True)
class _Measures:
    """The piece's measures: where each starts (quarters), how long it lasts, its time signature."""

    starts: list[Fraction]
    lengths: list[Fraction]
    meters: list[tuple[int, int]]
    by_part: list[list[Any]]  # each part's Measure objects, or [] when placed by flat offsets


def music21_parts(work: Any, resolution: int = RESOLUTION) -> list[PartNotes]:
    """Every part of a music21 score as note columns, placed on the common measure grid."""
    measures = _measures(work)
    parts = []
    for index, part in enumerate(work.parts):
        if measures.by_part:
            placed = _placed_by_measure(measures.by_part[index], measures.starts)
        else:
            placed = _placed_flat(part)
        onset, end, pitch, marks = _notes_and_dynamics(placed)
        start_ticks = _to_ticks(np.asarray(onset, dtype=np.float64), resolution)
        end_ticks = _to_ticks(np.asarray(end, dtype=np.float64), resolution)
        parts.append(
            PartNotes(
                name=part.partName or "",
                onset=start_ticks,
                duration=np.maximum(1, end_ticks - start_ticks),
                pitch=np.asarray(pitch, dtype=np.int64),
                dynamic=_dynamics_velocity(np.asarray(onset, dtype=np.float64), marks),
            )
        )
    return parts


def score_from_music21(work: Any, voicing: str, config: EncoderConfig) -> Score:
    """A music21 score as a training Score; SkipPiece when a bar has no vocabulary meter."""
    parts = [p for p in music21_parts(work) if len(p.pitch)]
    starts, meters, shift = _bar_grid(_measures(work), config)
    programs = voice_programs(voicing, len(parts))
    velocities = voice_velocities(len(parts))
    columns: list[NoteArrays] = []
    for voice, part in enumerate(parts):
        onset = part.onset + shift
        keep = (onset >= 0) & (onset < starts[-1])
        bar = np.searchsorted(starts, onset[keep], side="right") - 1
        velocity = np.where(part.dynamic > 0, part.dynamic, velocities[voice])[keep]
        columns.append(
            NoteArrays(
                np.full(len(bar), voice),
                bar,
                onset[keep] - starts[bar],
                part.duration[keep],
                part.pitch[keep],
                velocity,
            )  # fmt: skip
        )
    tracks = [TrackInfo(program=programs[v], name=p.name) for v, p in enumerate(parts)]
    return Score(
        resolution=RESOLUTION,
        time_signatures=meters,
        track_info=tracks,
        notes=NoteArrays.concatenate(columns).sorted(),
    )


def voice_programs(voicing: str, n_voices: int) -> list[int]:
    """GM program of each voice, top to bottom."""
    if voicing == "chorale":
        return [CHORALE_PROGRAMS[min(v, 3)] for v in range(n_voices)]
    if voicing == "strings":
        return [QUARTET_PROGRAMS[min(v, 3)] for v in range(n_voices)]
    if voicing == "choir":
        upper = -(-n_voices // 2)
        return [CHOIR_HIGH if v < upper else CHOIR_LOW for v in range(n_voices)]
    raise ValueError(f"unknown voicing {voicing!r}; expected one of {', '.join(VOICINGS)}")


def voice_velocities(n_voices: int) -> list[int]:
    """Velocity of each voice without dynamics: the melody a little forward, the bass under it."""
    return [
        TOP_VELOCITY if v == 0 else BASS_VELOCITY if v == n_voices - 1 else INNER_VELOCITY
        for v in range(n_voices)
    ]


# ---- measures -------------------------------------------------------------------------------------
def _measures(work: Any) -> _Measures:
    """The common measure grid; parts with different measure counts fall back to flat offsets."""
    from music21 import stream

    by_part = [list(part.getElementsByClass(stream.Measure)) for part in work.parts]
    counts = {len(measures) for measures in by_part}
    if len(counts) != 1 or 0 in counts:
        return _flat_grid(work)
    meters, lengths = [], []
    nominal = (4, 4)
    for index, first_part_measure in enumerate(by_part[0]):
        signature = first_part_measure.timeSignature
        if signature is not None:
            nominal = (signature.numerator, signature.denominator)
        meters.append(nominal)
        lengths.append(_common_length([m[index] for m in by_part]))
    starts = [Fraction(0)]
    for length in lengths:
        starts.append(starts[-1] + length)
    return _Measures(starts, lengths, meters, by_part)


def _common_length(measures: list[Any]) -> Fraction:
    """What most parts say the measure lasts (the shorter on a tie); empty measures abstain."""
    votes = Counter(Fraction(m.duration.quarterLength) for m in measures)
    votes.pop(Fraction(0), None)
    if not votes:
        return Fraction(0)
    best = max(votes.values())
    return min(length for length, n in votes.items() if n == best)


def _flat_grid(work: Any) -> _Measures:
    """One bar of the first time signature after another, over music21's own timeline."""
    from music21 import meter

    found = work.recurse().getElementsByClass(meter.TimeSignature).first()
    nominal = (found.numerator, found.denominator) if found is not None else (4, 4)
    bar = Fraction(4 * nominal[0], nominal[1])
    n_bars = max(1, -(-Fraction(work.highestTime) // bar))
    starts = [bar * i for i in range(n_bars + 1)]
    return _Measures(starts, [bar] * n_bars, [nominal] * n_bars, [])


def _bar_grid(measures: _Measures, config: EncoderConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """(bar starts (n + 1,) int64 ticks, meters (n, 2), pickup shift in ticks) from the measures;
    SkipPiece when a bar is left without a vocabulary meter."""

    def known(meter: tuple[int, int]) -> bool:
        return config.time_signature_index(*meter) >= 0

    lengths: list[Fraction] = []
    meters: list[tuple[int, int]] = []
    split: list[Fraction] = []  # consecutive short measures that may add up to one bar
    last = len(measures.lengths) - 1
    shift = Fraction(0)

    def close_split(nominal: tuple[int, int]) -> None:
        for part_length in split:
            _append_bars(lengths, meters, part_length, nominal, known)
        split.clear()

    for index, (length, nominal) in enumerate(zip(measures.lengths, measures.meters, strict=True)):
        if split and nominal != measures.meters[index - 1]:
            close_split(measures.meters[index - 1])
        full = Fraction(4 * nominal[0], nominal[1])
        if length <= 0:
            continue
        if 0 < index < last and length < full:
            split.append(length)
            if sum(split) == full:
                split.clear()
                lengths.append(full)
                meters.append(nominal)
            elif sum(split) > full:
                close_split(nominal)
            continue
        close_split(nominal)
        if index == 0 and length < full:
            shift = full - length  # a pickup: the rest before it completes the first bar
        if index in (0, last) and length <= full:
            lengths.append(full)
            meters.append(nominal)
        elif index == last:
            n_bars = -(-length // full)  # an overfull last measure: whole bars of its meter
            lengths += [full] * n_bars
            meters += [nominal] * n_bars
        else:
            _append_bars(lengths, meters, length, nominal, known)
    if split:
        close_split(measures.meters[-1])
    if not all(known(meter) for meter in meters):
        raise SkipPiece("meter outside the vocabulary")
    bounds = [Fraction(0)]
    for length in lengths:
        bounds.append(bounds[-1] + length)
    starts = np.asarray([_ticks(b, RESOLUTION) for b in bounds], dtype=np.int64)
    return starts, np.asarray(meters, dtype=np.int64).reshape(-1, 2), _ticks(shift, RESOLUTION)


def _append_bars(
    lengths: list[Fraction],
    meters: list[tuple[int, int]],
    length: Fraction,
    nominal: tuple[int, int],
    known: Callable[[tuple[int, int]], bool],
) -> None:
    """Bars for one measure of ``length`` quarters: one bar of its own meter when the vocabulary
    has it, else whole bars of the nominal meter plus a bar for the rest when that one is known,
    else its own (unknown) meter, which skips the piece."""
    own = _meter_of_length(length, nominal[1])
    full = Fraction(4 * nominal[0], nominal[1])
    whole, rest = divmod(length, full)
    if not known(own) and whole >= 1 and (rest == 0 or known(_meter_of_length(rest, nominal[1]))):
        lengths += [full] * int(whole)
        meters += [nominal] * int(whole)
        if rest:
            lengths.append(rest)
            meters.append(_meter_of_length(rest, nominal[1]))
        return
    lengths.append(length)
    meters.append(own)


def _meter_of_length(quarters: Fraction, denominator: int) -> tuple[int, int]:
    """The meter whose bar lasts ``quarters``, over ``denominator`` when that is exact."""
    whole = Fraction(quarters) / 4
    if denominator % whole.denominator == 0:
        return whole.numerator * (denominator // whole.denominator), denominator
    return whole.numerator, whole.denominator


# ---- notes ------------------------------------------------------------------------------------
def _placed_by_measure(measures: list[Any], starts: list[Fraction]) -> Iterable[tuple[float, Any]]:
    """(absolute offset in quarters, element) of each element, by its measure's common start."""
    for measure, start in zip(measures, starts, strict=False):
        base = float(start)
        for element in measure.flatten():
            yield base + float(element.offset), element


def _placed_flat(part: Any) -> Iterable[tuple[float, Any]]:
    for element in part.flatten():
        yield float(element.offset), element


def _notes_and_dynamics(
    placed: Iterable[tuple[float, Any]],
) -> tuple[list[float], list[float], list[int], list[tuple[float, bool, int]]]:
    """(onset, end, pitch) of every sounding note, tied notes merged, and the dynamics marks
    (offset, sustained, velocity), in one pass.

    Linear in the notes (music21's ``stripTies`` re-sorts the stream per tie: 80 s on a long
    quartet movement). A note extends the tied-over note of its pitch that ends where it starts,
    whatever its own tie says (some encodings mark only the tie's start).
    """
    from music21 import dynamics, note

    onset: list[float] = []
    end: list[float] = []
    pitch: list[int] = []
    marks: list[tuple[float, bool, int]] = []
    open_notes: dict[int, int] = {}  # MIDI pitch -> index of the note a tie may extend
    for start, element in placed:
        if isinstance(element, dynamics.Dynamic):
            if element.volumeScalar is not None:
                marks.append(
                    (start, element.value in _SUSTAINED_DYNAMICS, round(127 * element.volumeScalar))
                )
            continue
        if not isinstance(element, note.NotRest):
            continue
        length = float(element.duration.quarterLength)
        if length <= 0:
            continue  # a grace note
        members = element.notes if element.isChord else (element,)
        for member in members:
            if not hasattr(member, "pitch"):
                continue  # unpitched percussion
            midi = member.pitch.midi
            tie = member.tie if member.tie is not None else getattr(element, "tie", None)
            kind = tie.type if tie is not None else None
            held = open_notes.pop(midi, None)
            if held is not None and abs(end[held] - start) < 1e-6:
                end[held] = start + length
                if kind in ("start", "continue"):
                    open_notes[midi] = held
                continue
            onset.append(start)
            end.append(start + length)
            pitch.append(midi)
            if kind in ("start", "continue"):
                open_notes[midi] = len(pitch) - 1
    return onset, end, pitch, marks


def _dynamics_velocity(onset: np.ndarray, marks: list[tuple[float, bool, int]]) -> np.ndarray:
    """Velocity of the sustained marking in force at each onset, an accent's at its own onset."""
    out = np.zeros(len(onset), dtype=np.int64)
    sustained = sorted((at, velocity) for at, keeps, velocity in marks if keeps)
    if sustained:
        times = np.asarray([at for at, _ in sustained])
        values = np.asarray([velocity for _, velocity in sustained], dtype=np.int64)
        index = np.searchsorted(times, onset + 1e-9, side="right") - 1
        out = np.where(index >= 0, values[np.maximum(index, 0)], 0)
    for at, keeps, velocity in marks:
        if not keeps:
            out[np.abs(onset - at) < 1e-6] = velocity
    return np.clip(out, 0, 127)


def _to_ticks(quarters: np.ndarray, resolution: int) -> np.ndarray:
    """Quarter lengths to grid ticks, exact halves rounded up (as midi_io rounds)."""
    return np.floor(quarters * resolution + 0.5).astype(np.int64)


def _ticks(quarters: Fraction, resolution: int) -> int:
    value = Fraction(quarters) * resolution
    return int((2 * value.numerator + value.denominator) // (2 * value.denominator))
