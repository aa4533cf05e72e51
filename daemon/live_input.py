"""Live input: ``/midigpt/note/on`` and ``/midigpt/note/off`` paired into complete notes (D59).

A note-on waits, per (track, pitch), in FIFO order, so a repeated pitch releases its oldest
note-on first. A note-off completes it: the duration runs from the note-on's position to the
note-off's, each a fraction of its own bar, counted in ticks across every barline in between with
each bar's meter. The note belongs to the bar it started in (D31): a held note spans barlines as one
note, never a chain of tied pieces, so the prompt sees it once.

When the note-on's bar closes while the note is still held, it is stored in that bar with its
duration so far (to the barline) and flagged *continuing*; every later barline extends it, and its
note-off sets the final duration and clears the flag. A note-on released before its bar closes
simply becomes a pending note, exactly like ``/midigpt/note``.

A note-on never released (a lost note-off) expires once it has been held ``max_hold_bars`` bars
past its own bar plus the score's grace window: it keeps the duration it had, its flag is
cleared, and ``expired`` counts it. A note-off with no held note-on is refused (``LiveInputError``).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from sideman.daemon.rolling import RollingScore
from sideman.daemon.rolling_types import ScoreWindowError

log = logging.getLogger(__name__)

# A note held longer than this past its bar (plus the grace window) is taken as a lost note-off.
MAX_HOLD_BARS = 8


class LiveInputError(ValueError):
    """A note-off that cannot be paired: no held note-on, or it ends before its note-on."""


@dataclass
class HeldNote:
    """A note-on waiting for its note-off; ``onset_ticks`` is set once it is stored continuing."""

    track_id: int
    pitch: int
    velocity: int
    bar_index: int
    onset: float  # fraction of its bar
    onset_ticks: int | None = None

    @property
    def stored(self) -> bool:
        return self.onset_ticks is not None


@dataclass(frozen=True)
class ReleasedNote:
    """A paired note: where it went (``pending``, ``late`` or ``continued``) and its length."""

    track_id: int
    bar_index: int
    pitch: int
    velocity: int
    onset: float
    duration_ticks: int
    placed: str


class LiveInput:
    """Pairs note-on/note-off into the rolling score's notes; owned by the loop like ``Session``."""

    def __init__(self, score: RollingScore, max_hold_bars: int = MAX_HOLD_BARS) -> None:
        if max_hold_bars < 1:
            raise ValueError(f"max_hold_bars must be >= 1, got {max_hold_bars}")
        self.score = score
        self.max_hold_bars = max_hold_bars
        self._held: dict[tuple[int, int], deque[HeldNote]] = {}
        self.released = 0
        self.expired = 0

    def held(self) -> list[HeldNote]:
        return [note for queue in self._held.values() for note in queue]

    def note_on(
        self, track_id: int, pitch: int, velocity: int, onset: float, bar_index: int
    ) -> HeldNote:
        """Hold a note-on. Raises ScoreWindowError for a bar that takes no notes (as ``add_note``)."""
        self.score.track(track_id)
        placed = self.score.note_bar_status(bar_index)
        note = HeldNote(track_id, pitch, velocity, bar_index, onset)
        if placed == "late" and not self._store_continuing(note, self.score.playhead):
            raise ScoreWindowError(f"bar {bar_index} cannot take a held note now")
        self._held.setdefault((track_id, pitch), deque()).append(note)
        return note

    def note_off(self, track_id: int, pitch: int, offset: float, bar_index: int) -> ReleasedNote:
        """Release the oldest held note-on of (track, pitch) and store the complete note."""
        queue = self._held.get((track_id, pitch))
        if not queue:
            raise LiveInputError(
                f"note-off for pitch {pitch} on track {track_id} has no held note-on "
                f"(never sent, already released, or expired after {self.max_hold_bars} bars)"
            )
        note = queue[0]
        if (bar_index, offset) < (note.bar_index, note.onset):
            raise LiveInputError(
                f"note-off for pitch {pitch} on track {track_id} at bar {bar_index} + {offset} is "
                f"before its note-on at bar {note.bar_index} + {note.onset}"
            )
        duration = self.score.ticks_between(note.bar_index, note.onset, bar_index, offset)
        placed = self._finish(note, duration)
        queue.popleft()
        if not queue:
            del self._held[(track_id, pitch)]
        self.released += 1
        return ReleasedNote(
            track_id, note.bar_index, pitch, note.velocity, note.onset, duration, placed
        )

    def bars_closed(self, playhead: int) -> None:
        """After a ``/bar/end``: store or extend held notes whose bar has closed; expire stale ones."""
        limit = self.max_hold_bars + self.score.grace_bars
        for key in list(self._held):
            queue = self._held[key]
            for note in list(queue):
                if note.bar_index >= playhead:
                    continue
                if not self.score.has_track(note.track_id):
                    queue.remove(note)  # its track was removed; nothing to store
                elif note.stored:
                    self._extend(note, playhead, continuing=playhead - note.bar_index <= limit)
                    if playhead - note.bar_index > limit:
                        queue.remove(note)
                        self._expire(note)
                elif not self._store_continuing(note, playhead):
                    queue.remove(note)  # its bar can no longer hold notes
                    self._expire(note)
            if not queue:
                del self._held[key]

    def describe(self) -> dict[str, Any]:
        """The live-input part of ``/midigpt/state``: notes held now, released and expired so far."""
        return {
            "held_notes": sum(len(queue) for queue in self._held.values()),
            "released_notes": self.released,
            "expired_held_notes": self.expired,
            "max_hold_bars": self.max_hold_bars,
        }

    # ---- internals -------------------------------------------------------------------------------
    def _finish(self, note: HeldNote, duration: int) -> str:
        if note.stored:
            self.score.update_note(
                note.track_id, note.bar_index, note.onset_ticks, note.pitch, duration,
                continuing=False,
            )  # fmt: skip
            return "continued"
        # Not stored yet, so its bar is still open: a pending note in fractions of that bar.
        bar_ticks = self.score.bar_ticks(*self.score.meter(note.bar_index))
        return self.score.add_note(
            note.track_id, note.bar_index, note.pitch, note.velocity, note.onset,
            duration / bar_ticks,
        )  # fmt: skip

    def _store_continuing(self, note: HeldNote, playhead: int) -> bool:
        onset_ticks = self.score.onset_ticks(note.bar_index, note.onset)
        so_far = self.score.ticks_between(note.bar_index, note.onset, playhead, 0.0)
        try:
            self.score.store_note(
                note.track_id, note.bar_index, onset_ticks, so_far, note.pitch, note.velocity,
                continuing=True,
            )  # fmt: skip
        except ScoreWindowError as exc:
            log.warning("held note %d on track %d not stored: %s", note.pitch, note.track_id, exc)
            return False
        note.onset_ticks = onset_ticks
        return True

    def _extend(self, note: HeldNote, playhead: int, *, continuing: bool) -> None:
        so_far = self.score.ticks_between(note.bar_index, note.onset, playhead, 0.0)
        self.score.update_note(
            note.track_id, note.bar_index, note.onset_ticks, note.pitch, so_far,
            continuing=continuing,
        )  # fmt: skip

    def _expire(self, note: HeldNote) -> None:
        self.expired += 1
        log.warning(
            "note-on of pitch %d on track %d (bar %d) was never released; it expired after %d bars",
            note.pitch, note.track_id, note.bar_index, self.max_hold_bars,
        )  # fmt: skip
