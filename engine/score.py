"""The score model: columnar note arrays with per-bar meters and per-track metadata.

``NoteArrays`` is what hot paths (tokeniser, daemon) work on: six int32 columns sorted by
(track, bar, onset, pitch). ``Score`` adds the bar grid (one time signature per bar, shared by
all tracks) and per-track metadata. ``Track``/``Bar``/``Note`` are read-only convenience views
for library users; they are built on demand and never iterated on the real-time path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

NOTE_COLUMNS = ("track", "bar", "onset", "duration", "pitch", "velocity")


class ScoreError(ValueError):
    """A score whose contents are inconsistent (bad column, bar index, meter, value range)."""


@dataclass(frozen=True)
class NoteArrays:
    """Columns of equal length; ``onset`` is in ticks from the start of ``bar``."""

    track: np.ndarray
    bar: np.ndarray
    onset: np.ndarray
    duration: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray

    def __post_init__(self) -> None:
        lengths = set()
        for name in NOTE_COLUMNS:
            column = np.ascontiguousarray(getattr(self, name), dtype=np.int32)
            if column.ndim != 1:
                raise ScoreError(f"note column {name!r} must be 1-D, got shape {column.shape}")
            object.__setattr__(self, name, column)
            lengths.add(len(column))
        if len(lengths) > 1:
            raise ScoreError(f"note columns differ in length: { {n: len(getattr(self, n)) for n in NOTE_COLUMNS} }")

    @classmethod
    def empty(cls) -> NoteArrays:
        zero = np.zeros(0, dtype=np.int32)
        return cls(zero, zero, zero, zero, zero, zero)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[int]]) -> NoteArrays:
        """Build from (track, bar, onset, duration, pitch, velocity) rows."""
        table = np.asarray(list(rows), dtype=np.int64).reshape(-1, len(NOTE_COLUMNS))
        return cls(*(table[:, i] for i in range(len(NOTE_COLUMNS)))).sorted()

    @classmethod
    def concatenate(cls, parts: Sequence[NoteArrays]) -> NoteArrays:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, n) for p in parts]) for n in NOTE_COLUMNS))

    def __len__(self) -> int:
        return len(self.pitch)

    def sorted(self) -> NoteArrays:
        """Sorted by (track, bar, onset, pitch), the order every kernel expects."""
        order = np.lexsort((self.pitch, self.onset, self.bar, self.track))
        return self.take(order)

    def take(self, index: np.ndarray) -> NoteArrays:
        return NoteArrays(*(getattr(self, n)[index] for n in NOTE_COLUMNS))

    def select(self, mask: np.ndarray) -> NoteArrays:
        return self.take(np.flatnonzero(mask))

    def as_table(self) -> np.ndarray:
        """(n, 6) int32 view-friendly copy in NOTE_COLUMNS order."""
        return np.stack([getattr(self, n) for n in NOTE_COLUMNS], axis=1)


@dataclass
class TrackInfo:
    """Per-track metadata. ``attributes`` maps yellow attribute names to bin values."""

    program: int = 0
    is_drum: bool = False
    name: str = ""
    attributes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Note:
    pitch: int
    velocity: int
    onset: int  # ticks from the start of its bar
    duration: int  # ticks


@dataclass(frozen=True)
class Bar:
    index: int
    time_signature: tuple[int, int]
    notes: tuple[Note, ...]


@dataclass(frozen=True)
class Track:
    index: int
    program: int
    is_drum: bool
    name: str
    attributes: dict[str, int]
    bars: tuple[Bar, ...]

    @property
    def notes(self) -> tuple[Note, ...]:
        return tuple(n for b in self.bars for n in b.notes)


@dataclass
class Score:
    """A multi-track score on a bar grid.

    ``time_signatures`` is an (n_bars, 2) int32 array of (numerator, denominator), one row per bar.
    ``resolution`` is ticks per quarter note of ``notes.onset``/``notes.duration``.
    ``tempo`` is microseconds per quarter note (kept for MIDI output).
    """

    resolution: int
    time_signatures: np.ndarray
    track_info: list[TrackInfo]
    notes: NoteArrays = field(default_factory=NoteArrays.empty)
    tempo: int = 500_000

    def __post_init__(self) -> None:
        ts = np.asarray(self.time_signatures, dtype=np.int32).reshape(-1, 2)
        if np.any(ts[:, 0] < 1) or np.any(ts[:, 1] < 1):
            raise ScoreError("time signatures need a positive numerator and denominator")
        self.time_signatures = ts
        if self.resolution < 1:
            raise ScoreError(f"resolution must be a positive number of ticks per quarter, got {self.resolution}")
        self.validate()

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def empty(
        cls,
        n_bars: int,
        tracks: Sequence[TrackInfo],
        time_signature: tuple[int, int] = (4, 4),
        resolution: int = 12,
    ) -> Score:
        ts = np.tile(np.asarray(time_signature, dtype=np.int32), (n_bars, 1))
        return cls(resolution=resolution, time_signatures=ts, track_info=list(tracks))

    @classmethod
    def from_midi(cls, path, *, skip_unknown_time_signatures: bool = False, encoder_config=None) -> Score:
        """Read a type 0/1 MIDI file onto the 12-tick model grid (rounding; tokens.md §6.2 path B)."""
        from sideman.engine.midi_io import read_midi

        return read_midi(
            path,
            skip_unknown_time_signatures=skip_unknown_time_signatures,
            encoder_config=encoder_config,
        )

    def to_midi(self, path, *, ticks_per_beat: int = 480) -> None:
        """Write a type 1 MIDI file (one MIDI track per score track; drums on channel 10)."""
        from sideman.engine.midi_io import write_midi

        write_midi(self, path, ticks_per_beat=ticks_per_beat)

    # ---- shape -------------------------------------------------------------------------
    @property
    def n_bars(self) -> int:
        return len(self.time_signatures)

    @property
    def n_tracks(self) -> int:
        return len(self.track_info)

    def bar_ticks(self) -> np.ndarray:
        """Exact length of each bar in this score's ticks (resolution·4·n/d); int64."""
        ts = self.time_signatures.astype(np.int64)
        length = self.resolution * 4 * ts[:, 0]
        if np.any(length % ts[:, 1]):
            bad = int(np.flatnonzero(length % ts[:, 1])[0])
            raise ScoreError(
                f"bar {bad}: {ts[bad, 0]}/{ts[bad, 1]} is not a whole number of ticks at resolution {self.resolution}"
            )
        return length // ts[:, 1]

    def bar_starts(self) -> np.ndarray:
        """Absolute tick of each bar's start, plus the end of the last bar; (n_bars + 1,) int64."""
        return np.concatenate([[0], np.cumsum(self.bar_ticks())])

    def bar_duration_quarters(self, bar: int) -> Fraction:
        n, d = self.time_signatures[bar]
        return Fraction(4 * int(n), int(d))

    def validate(self) -> None:
        """Raise ScoreError naming the first inconsistent note column or value."""
        notes = self.notes
        if len(notes) == 0:
            return
        checks = (
            ("track", notes.track, 0, self.n_tracks - 1),
            ("bar", notes.bar, 0, self.n_bars - 1),
            ("onset", notes.onset, 0, None),
            ("duration", notes.duration, 1, None),
            ("pitch", notes.pitch, 0, 127),
            ("velocity", notes.velocity, 0, 127),
        )
        for name, column, low, high in checks:
            if column.min() < low or (high is not None and column.max() > high):
                bad = int(np.flatnonzero((column < low) | ((column > high) if high is not None else False))[0])
                limit = f"[{low}, {high}]" if high is not None else f">= {low}"
                raise ScoreError(f"note {bad}: {name} {int(column[bad])} outside {limit}")

    # ---- editing -----------------------------------------------------------------------
    def copy(self) -> Score:
        return Score(
            resolution=self.resolution,
            time_signatures=self.time_signatures.copy(),
            track_info=[replace(t, attributes=dict(t.attributes)) for t in self.track_info],
            notes=self.notes,
            tempo=self.tempo,
        )

    def with_notes(self, notes: NoteArrays) -> Score:
        out = self.copy()
        out.notes = notes.sorted()
        out.validate()
        return out

    def slice_bars(self, start: int, end: int) -> Score:
        """Bars [start, end) as a new score whose first bar is bar 0."""
        if not 0 <= start < end <= self.n_bars:
            raise ScoreError(f"bar range [{start}, {end}) outside the score's {self.n_bars} bars")
        keep = (self.notes.bar >= start) & (self.notes.bar < end)
        part = self.notes.select(keep)
        part = replace(part, bar=part.bar - start)
        out = self.copy()
        out.time_signatures = self.time_signatures[start:end].copy()
        out.notes = part
        return out

    def rescaled(self, resolution: int) -> Score:
        """The same score at another resolution, onsets and durations rounded (durations ≥ 1)."""
        if resolution == self.resolution:
            return self.copy()
        n = self.notes
        onset = _round_div(n.onset.astype(np.int64) * resolution, self.resolution)
        duration = np.maximum(1, _round_div(n.duration.astype(np.int64) * resolution, self.resolution))
        out = self.copy()
        out.resolution = resolution
        out.notes = NoteArrays(n.track, n.bar, onset, duration, n.pitch, n.velocity)
        return out

    # ---- object views ------------------------------------------------------------------
    @property
    def tracks(self) -> tuple[Track, ...]:
        notes = self.notes
        out = []
        for t, info in enumerate(self.track_info):
            in_track = notes.track == t
            bars = []
            for b in range(self.n_bars):
                idx = np.flatnonzero(in_track & (notes.bar == b))
                bar_notes = tuple(
                    Note(int(notes.pitch[i]), int(notes.velocity[i]), int(notes.onset[i]), int(notes.duration[i]))
                    for i in idx
                )
                n, d = self.time_signatures[b]
                bars.append(Bar(b, (int(n), int(d)), bar_notes))
            out.append(Track(t, info.program, info.is_drum, info.name, dict(info.attributes), tuple(bars)))
        return tuple(out)


def _round_div(numerator: np.ndarray, denominator: int) -> np.ndarray:
    """Round numerator/denominator to the nearest integer, exact halves away from zero (up for ticks)."""
    return (2 * numerator + denominator) // (2 * denominator)
