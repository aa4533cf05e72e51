"""Values and errors of the rolling score: track metadata, bar-end results, window snapshots.

Snapshots are built under the rolling score's lock and then shared across threads (the
generation worker reads them), so every array in them is a private, read-only copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sideman.engine.score import NOTE_COLUMNS, NoteArrays, Score, TrackInfo


class ScoreWindowError(ValueError):
    """A bar index outside what the rolling score accepts (too old, too far ahead, negative)."""


class UnsupportedMeterError(ValueError):
    """A time signature the checkpoint's vocabulary does not have (or a zero denominator)."""


class UnknownTrackError(LookupError):
    """A track id that was never added (or was removed)."""


class DuplicateTrackError(ValueError):
    """``add_track`` with a track id that already exists."""


class InvalidNoteError(ValueError):
    """A note value the score cannot store (non-finite or out-of-range onset or duration)."""


@dataclass(frozen=True)
class BarEnd:
    """Result of ``end_bar``. ``merged`` counts pending notes per track that the call quantised.

    ``playhead - playhead_before`` is the number of bars the call closed; on the very first bar
    end ``playhead_before`` is the origin (the session starts there, D18), not 0.
    """

    bar_index: int
    new: bool
    playhead_before: int
    playhead: int
    merged: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackMeta:
    """One track of the session; ``track_id`` is the client's OSC id."""

    track_id: int
    program: int
    is_drum: bool
    is_agent: bool


@dataclass(frozen=True)
class WindowSnapshot:
    """Immutable copy of bars [start_bar, end_bar) for every track.

    ``notes.track`` is the index into ``track_ids`` (creation order) and ``notes.bar`` is relative
    to ``start_bar``; columns are read-only and sorted by (track, bar, onset, pitch). ``meters`` is
    (n_bars, 2) int32; ``generated`` holds (track_id, absolute bar) pairs of generated material;
    ``looped`` holds (track_id, absolute bar) pairs of future bars filled from a declared loop (D60).
    """

    start_bar: int
    end_bar: int
    resolution: int
    track_ids: tuple[int, ...]
    tracks: tuple[TrackMeta, ...]
    meters: np.ndarray
    notes: NoteArrays
    generated: frozenset[tuple[int, int]] = frozenset()
    looped: frozenset[tuple[int, int]] = frozenset()

    @property
    def n_bars(self) -> int:
        return self.end_bar - self.start_bar

    def bar_note_counts(self) -> np.ndarray:
        """(n_tracks, n_bars) int64 note counts, rows in ``track_ids`` order."""
        counts = np.zeros((len(self.track_ids), self.n_bars), dtype=np.int64)
        np.add.at(counts, (self.notes.track, self.notes.bar), 1)
        return counts

    def notes_of(self, track_id: int, bar_index: int) -> NoteArrays:
        """Notes of one track in one absolute bar (``bar`` column still window-relative)."""
        index = self.track_ids.index(track_id)
        keep = (self.notes.track == index) & (self.notes.bar == bar_index - self.start_bar)
        return self.notes.select(keep)

    def to_score(self) -> Score:
        """Engine Score: bars renumbered from 0, engine track i = ``track_ids[i]``."""
        info = [
            TrackInfo(program=t.program, is_drum=t.is_drum, name=track_name(t)) for t in self.tracks
        ]
        notes = NoteArrays(*(np.array(getattr(self.notes, c)) for c in NOTE_COLUMNS))
        return Score(
            resolution=self.resolution,
            time_signatures=self.meters.copy(),
            track_info=info,
            notes=notes,
        )


def note_rows(chunk: np.ndarray, track: int, bar: int) -> np.ndarray:
    """(n, 6) int32 rows (track, bar, onset, duration, pitch, velocity) from a 4-column chunk."""
    rows = np.empty((len(chunk), 6), dtype=np.int32)
    rows[:, 0] = track
    rows[:, 1] = bar
    rows[:, 2:] = chunk
    return rows


def stack_rows(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, 6), dtype=np.int32)


def note_arrays(parts: list[np.ndarray]) -> NoteArrays:
    table = stack_rows(parts)
    return NoteArrays(*(table[:, i] for i in range(6)))


def track_name(meta: TrackMeta) -> str:
    return f"track {meta.track_id}{' (agent)' if meta.is_agent else ''}"


def frozen_note_arrays(parts: list[np.ndarray]) -> NoteArrays:
    """Sorted NoteArrays of (n, 6) row blocks, every column read-only."""
    notes = note_arrays(parts).sorted()
    for name in NOTE_COLUMNS:
        getattr(notes, name).flags.writeable = False
    return notes
