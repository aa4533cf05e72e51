"""The live session's score: complete notes per (track, bar) in ticks, over a bounded window.

Bars are closed by ``/bar/end``; notes for a bar wait as pending until it closes and are then
quantised with that bar's meter, rounding to the nearest tick (osc-protocol §16 D30). Every call
costs O(1) or O(notes in the message / in the bars it touches), never O(session length): bars
older than ``retain_bars`` leave memory for an append-only on-disk journal (D52), and indices
far from the playhead are refused (D7, D12, D18).

Tick rule for long notes (D31): an inbound duration longer than its bar is kept whole in history;
whoever sends notes applies its own output clamp.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sideman.daemon.journal import Journal
from sideman.daemon.rolling_types import (
    BarEnd,
    DuplicateTrackError,
    InvalidNoteError,
    ScoreWindowError,
    TrackMeta,
    UnknownTrackError,
    UnsupportedMeterError,
    WindowSnapshot,
    frozen_note_arrays,
    note_arrays,
    note_rows,
    stack_rows,
    track_name,
)
from sideman.daemon.session_file import mark_session_end
from sideman.engine.score import Score, TrackInfo

logger = logging.getLogger(__name__)

# Columns of one (track, bar) chunk in memory: onset, duration, pitch, velocity (int32 ticks).
_CHUNK_COLUMNS = 4
_EMPTY_CHUNK = np.zeros((0, _CHUNK_COLUMNS), dtype=np.int32)
_EMPTY_CHUNK.flags.writeable = False


@dataclass
class _Bar:
    """One bar in memory: its meter once closed, a note chunk per track, generated track ids."""

    meter: tuple[int, int] | None = None
    chunks: dict[int, np.ndarray] = field(default_factory=dict)
    generated: set[int] = field(default_factory=set)
    # (onset, pitch) per track of notes still held when the bar closed (live note-on, D59)
    continuing: dict[int, list[tuple[int, int]]] = field(default_factory=dict)


class RollingScore:
    """Notes of the live session, bounded in memory; thread-safe (one lock, short holds)."""

    def __init__(
        self,
        *,
        supported_meters: Iterable[tuple[int, int]],
        resolution: int = 12,
        retain_bars: int = 64,
        grace_bars: int = 1,
        max_future_bars: int = 64,
        journal_dir: Path | None = None,
    ) -> None:
        if resolution < 1:
            raise ValueError(
                f"resolution must be a positive number of ticks per quarter, got {resolution}"
            )
        if grace_bars < 0 or max_future_bars < 1:
            raise ValueError(
                f"grace_bars must be >= 0 and max_future_bars >= 1, got {grace_bars}, {max_future_bars}"
            )
        if retain_bars <= grace_bars:
            raise ValueError(
                f"retain_bars ({retain_bars}) must exceed grace_bars ({grace_bars}) so late notes find their bar"
            )
        self.resolution = resolution
        self.retain_bars = retain_bars
        self.grace_bars = grace_bars
        self.max_future_bars = max_future_bars
        self._supported = frozenset((int(n), int(d)) for n, d in supported_meters)
        self._lock = threading.RLock()
        self._tracks: dict[int, TrackMeta] = {}
        self._serials: dict[int, int] = {}
        self._next_serial = 0
        self._bars: dict[int, _Bar] = {}
        self._pending: dict[int, dict[int, list[tuple[float, float, int, int]]]] = {}
        self._announced: dict[int, tuple[int, int]] = {}
        self._loops: dict[int, tuple[int, int]] = {}  # track id -> [start, end) it repeats (D60)
        self._origin: int | None = None
        self._playhead = 0
        self._evicted_until = 0  # bars in [origin, _evicted_until) live only in the journal
        self._last_meter: tuple[int, int] | None = None
        self._expired_notes = 0
        self._late_notes = 0
        self._own_dir = journal_dir is None
        directory = (
            Path(tempfile.mkdtemp(prefix="sideman-journal-"))
            if journal_dir is None
            else Path(journal_dir)
        )
        self._journal = Journal(directory)

    # ---- tracks -----------------------------------------------------------------------------
    def add_track(self, track_id: int, program: int, is_drum: bool, is_agent: bool) -> TrackMeta:
        with self._lock:
            if track_id in self._tracks:
                raise DuplicateTrackError(f"track {track_id} already exists")
            meta = TrackMeta(int(track_id), int(program), bool(is_drum), bool(is_agent))
            self._tracks[meta.track_id] = meta
            self._serials[meta.track_id] = self._next_serial
            self._next_serial += 1
            return meta

    def remove_track(self, track_id: int) -> TrackMeta:
        """Forget a track: its bars in memory, its pending notes, and (for saving) its journal rows."""
        with self._lock:
            meta = self.track(track_id)
            del self._tracks[track_id]
            del self._serials[track_id]
            for bar in self._bars.values():
                bar.chunks.pop(track_id, None)
                bar.generated.discard(track_id)
                bar.continuing.pop(track_id, None)
            self._loops.pop(track_id, None)
            for by_track in self._pending.values():
                by_track.pop(track_id, None)
            return meta

    def track_ids(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(self._tracks)

    def track(self, track_id: int) -> TrackMeta:
        with self._lock:
            meta = self._tracks.get(track_id)
            if meta is None:
                raise UnknownTrackError(
                    f"unknown track {track_id}; known tracks: {sorted(self._tracks)}"
                )
            return meta

    def has_track(self, track_id: int) -> bool:
        with self._lock:
            return track_id in self._tracks

    # ---- bar clock --------------------------------------------------------------------------
    @property
    def origin(self) -> int | None:
        """First bar index ever closed; bars before it are never allocated (None before)."""
        return self._origin

    @property
    def playhead(self) -> int:
        """Bars completed: highest closed bar + 1 (0 before any)."""
        return self._playhead

    def bar_ticks(self, num: int, den: int) -> int:
        return num * 4 * self.resolution // den

    def check_meter(self, num: int, den: int) -> None:
        """Raise UnsupportedMeterError unless (num, den) is a meter of the vocabulary."""
        if den == 0 or (num, den) not in self._supported:
            known = ", ".join(
                f"{n}/{d}" for n, d in sorted(self._supported, key=lambda m: (m[1], m[0]))
            )
            raise UnsupportedMeterError(
                f"time signature {num}/{den} is not supported by the model; supported: {known}"
            )

    def announce_meter(self, bar_index: int, num: int, den: int) -> None:
        """Record the meter of a future bar (D35) so generated bars are sized for it."""
        self.check_meter(num, den)
        with self._lock:
            if self._origin is not None and bar_index < self._playhead:
                raise ScoreWindowError(
                    f"bar {bar_index} has already ended (playhead {self._playhead}); announce only future bars"
                )
            self._check_not_too_far(bar_index, "announce a meter for")
            self._announced[bar_index] = (num, den)

    def meter(self, bar_index: int) -> tuple[int, int]:
        """Recorded meter, else announced, else the last recorded one, else 4/4."""
        with self._lock:
            bar = self._bars.get(bar_index)
            if bar is not None and bar.meter is not None:
                return bar.meter
            if self._origin is not None and self._origin <= bar_index < self._evicted_until:
                return self._journal.meter(bar_index - self._origin)
            if bar_index in self._announced:
                return self._announced[bar_index]
            return self._last_meter if self._last_meter is not None else (4, 4)

    def end_bar(self, bar_index: int, ts_num: int, ts_den: int) -> BarEnd:
        """Close every bar up to ``bar_index`` with this meter; idempotent for closed bars (D19)."""
        self.check_meter(ts_num, ts_den)
        if bar_index < 0:
            raise ScoreWindowError(f"bar index must be >= 0, got {bar_index}")
        with self._lock:
            before = self._playhead
            if self._origin is None:
                self._origin = bar_index
                self._playhead = bar_index
                self._evicted_until = bar_index
                before = bar_index
                self._expire_pending(outside=(bar_index, bar_index + 2 + self.max_future_bars))
            elif bar_index < self._playhead:
                return BarEnd(bar_index, False, before, before, {})
            elif bar_index - self._playhead > self.max_future_bars:
                raise ScoreWindowError(
                    f"bar {bar_index} is more than {self.max_future_bars} bars ahead of the playhead "
                    f"{self._playhead}; send /bar/end for consecutive bars"
                )
            merged: dict[int, int] = {}
            for closing in range(self._playhead, bar_index + 1):
                # A skipped bar keeps a meter announced for it; otherwise it takes this /bar/end's.
                meter = (
                    (ts_num, ts_den)
                    if closing == bar_index
                    else self._announced.get(closing, (ts_num, ts_den))
                )
                self._close(closing, meter, merged)
            self._playhead = bar_index + 1
            self._last_meter = (ts_num, ts_den)
            self._evict()
            return BarEnd(bar_index, True, before, self._playhead, merged)

    # ---- notes ------------------------------------------------------------------------------
    def add_note(
        self,
        track_id: int,
        bar_index: int,
        pitch: int,
        velocity: int,
        onset_frac: float,
        duration_frac: float,
    ) -> str:
        """Hold a note until its bar closes ("pending") or merge it into a bar within grace ("late")."""
        if (
            not (math.isfinite(onset_frac) and math.isfinite(duration_frac))
            or onset_frac < 0
            or duration_frac <= 0
        ):
            raise InvalidNoteError(
                f"note onset must be finite and >= 0 and duration finite and > 0 (bar fractions), got {onset_frac}, {duration_frac}"
            )
        with self._lock:
            self.track(track_id)
            if self.note_bar_status(bar_index) == "pending":
                self._pending.setdefault(bar_index, {}).setdefault(track_id, []).append(
                    (float(onset_frac), float(duration_frac), int(pitch), int(velocity))
                )
                return "pending"
            bar = self._bars[bar_index]
            chunk = self._quantise(
                np.array([[onset_frac, duration_frac, pitch, velocity]], dtype=np.float64),
                bar.meter,
            )
            bar.chunks[track_id] = np.concatenate([bar.chunks.get(track_id, _EMPTY_CHUNK), chunk])
            self._late_notes += 1
            return "late"

    def note_bar_status(self, bar_index: int) -> str:
        """Whether a note for ``bar_index`` would wait for its bar ("pending") or join a closed bar
        within the grace window ("late"); raise ScoreWindowError when the bar takes no notes."""
        if bar_index < 0:
            raise ScoreWindowError(f"bar index must be >= 0, got {bar_index}")
        with self._lock:
            if self._origin is None or bar_index >= self._playhead:
                self._check_not_too_far(bar_index, "add a note to")
                return "pending"
            if bar_index < self._origin:
                raise ScoreWindowError(
                    f"bar {bar_index} is before the session's first bar {self._origin}"
                )
            if bar_index < self._playhead - self.grace_bars:
                raise ScoreWindowError(
                    f"bar {bar_index} ended more than {self.grace_bars} bar(s) ago (playhead {self._playhead}); "
                    "late notes are accepted only within the grace window"
                )
            return "late"

    # ---- held notes (live note-on/note-off, D59) ---------------------------------------------
    def onset_ticks(self, bar_index: int, onset_frac: float) -> int:
        """A bar fraction as an onset tick of that bar, rounded and clamped like ``add_note`` (D30)."""
        ticks = self.bar_ticks(*self.meter(bar_index))
        return int(min(max(math.floor(onset_frac * ticks + 0.5), 0), ticks - 1))

    def ticks_between(
        self, start_bar: int, start_frac: float, end_bar: int, end_frac: float
    ) -> int:
        """Ticks from a position in one bar to a position in a later bar, each bar at its own
        meter (recorded, else announced, else the last one); at least 1."""
        with self._lock:
            end = sum(self.bar_ticks(*self.meter(b)) for b in range(start_bar, end_bar))
            end += math.floor(end_frac * self.bar_ticks(*self.meter(end_bar)) + 0.5)
            return max(1, end - self.onset_ticks(start_bar, start_frac))

    def store_note(
        self,
        track_id: int,
        bar_index: int,
        onset: int,
        duration: int,
        pitch: int,
        velocity: int,
        *,
        continuing: bool,
    ) -> None:
        """Add one note in ticks to a closed bar in memory; ``continuing`` flags a note still held
        (its duration so far), to be finished with ``update_note``."""
        with self._lock:
            self.track(track_id)
            bar = self._closed_bar_in_memory(bar_index)
            row = np.array([[onset, max(1, duration), pitch, velocity]], dtype=np.int32)
            bar.chunks[track_id] = np.concatenate([bar.chunks.get(track_id, _EMPTY_CHUNK), row])
            if continuing:
                bar.continuing.setdefault(track_id, []).append((int(onset), int(pitch)))

    def update_note(
        self,
        track_id: int,
        bar_index: int,
        onset: int,
        pitch: int,
        duration: int,
        *,
        continuing: bool,
    ) -> bool:
        """Set the duration of a continuing note stored by ``store_note``; ``continuing=False``
        clears its flag. False when the note is gone (its bar left memory or its track was removed):
        history then keeps the duration it had."""
        with self._lock:
            bar = self._bars.get(bar_index)
            key = (int(onset), int(pitch))
            if bar is None or key not in bar.continuing.get(track_id, ()):
                return False
            chunk = bar.chunks[track_id].copy()  # snapshots may share the old array
            match = np.flatnonzero((chunk[:, 0] == onset) & (chunk[:, 2] == pitch))
            chunk[match[-1], 1] = max(1, duration)
            bar.chunks[track_id] = chunk
            if not continuing:
                bar.continuing[track_id].remove(key)
            return True

    def set_generated(
        self,
        track_id: int,
        bar_index: int,
        onset: np.ndarray,
        duration: np.ndarray,
        pitch: np.ndarray,
        velocity: np.ndarray,
    ) -> int:
        """Replace one bar of a track with generated notes (ticks); keeps velocity > 0 only (D32).

        Returns the number of notes stored.
        """
        columns = [
            np.asarray(c, dtype=np.int64).reshape(-1) for c in (onset, duration, pitch, velocity)
        ]
        if len({len(c) for c in columns}) != 1:
            raise InvalidNoteError(
                f"generated note columns differ in length: {[len(c) for c in columns]}"
            )
        chunk = np.stack(columns, axis=1).astype(np.int32)
        chunk = chunk[chunk[:, 3] > 0]
        with self._lock:
            self.track(track_id)
            oldest = self._playhead - self.retain_bars
            if self._origin is None or bar_index < max(self._origin, oldest):
                raise ScoreWindowError(
                    f"bar {bar_index} is outside the bars in memory (playhead {self._playhead})"
                )
            self._check_not_too_far(bar_index, "store generated notes in")
            bar = self._bars.setdefault(bar_index, _Bar())
            bar.chunks[track_id] = chunk
            bar.generated.add(track_id)
            return len(chunk)

    def generated_bars(self, track_id: int) -> set[int]:
        with self._lock:
            return {b for b, bar in self._bars.items() if track_id in bar.generated}

    # ---- loops (D60) ------------------------------------------------------------------------
    def set_loop(self, track_id: int, start_bar: int, end_bar: int) -> None:
        """Declare that a track repeats bars [start_bar, end_bar) from ``end_bar`` on: its bars at or
        after the playhead are then known, copied from the loop (see ``window``)."""
        with self._lock:
            self.track(track_id)
            if not 0 <= start_bar < end_bar:
                raise ScoreWindowError(
                    f"loop [{start_bar}, {end_bar}) must be a non-empty range of bars >= 0"
                )
            if self._origin is not None and start_bar < self._origin:
                raise ScoreWindowError(
                    f"loop start {start_bar} is before the session's first bar {self._origin}"
                )
            if end_bar - start_bar > self.retain_bars:
                raise ScoreWindowError(
                    f"a loop of {end_bar - start_bar} bars is longer than the bars kept in memory "
                    f"(retain_bars={self.retain_bars})"
                )
            self._check_not_too_far(end_bar, "end a loop at")
            self._loops[track_id] = (int(start_bar), int(end_bar))

    def clear_loop(self, track_id: int) -> bool:
        """Forget a track's loop; False when it had none."""
        with self._lock:
            self.track(track_id)
            return self._loops.pop(track_id, None) is not None

    def loops(self) -> dict[int, tuple[int, int]]:
        with self._lock:
            return dict(self._loops)

    def load_history(
        self,
        meters: np.ndarray,
        rows: np.ndarray,
        generated_track_ids: Iterable[int] = (),
    ) -> None:
        """Close bars 0..n-1 of an empty score with these meters and notes, as if played (session
        load, D55). ``rows`` are (track id, bar, onset, duration, pitch, velocity) in ticks; the
        bars of ``generated_track_ids`` are marked generated. Old bars go to the journal as usual."""
        meters = np.asarray(meters, dtype=np.int32).reshape(-1, 2)
        rows = np.asarray(rows, dtype=np.int32).reshape(-1, 6)
        for num, den in meters.tolist():
            self.check_meter(num, den)
        generated = frozenset(generated_track_ids)
        with self._lock:
            if self._origin is not None or self._pending:
                raise ScoreWindowError("history can only be loaded into a score with no bars yet")
            for track_id in np.unique(rows[:, 0]).tolist():
                self.track(track_id)
            if len(rows) and not 0 <= rows[:, 1].min() <= rows[:, 1].max() < len(meters):
                raise ScoreWindowError(f"note bars must be in 0..{len(meters) - 1}")
            rows = rows[np.lexsort((rows[:, 0], rows[:, 1]))]
            bounds = np.searchsorted(rows[:, 1], np.arange(len(meters) + 1))
            self._origin = self._playhead = self._evicted_until = 0
            for bar_index, (num, den) in enumerate(meters.tolist()):
                in_bar = rows[bounds[bar_index] : bounds[bar_index + 1]]
                bar = _Bar(meter=(num, den))
                for track_id in self._tracks:
                    chunk = in_bar[in_bar[:, 0] == track_id, 2:]
                    if len(chunk):
                        bar.chunks[track_id] = np.ascontiguousarray(chunk)
                    if track_id in generated:
                        bar.generated.add(track_id)
                self._bars[bar_index] = bar
                self._playhead = bar_index + 1
                self._last_meter = (num, den)
                self._evict()

    # ---- reading ----------------------------------------------------------------------------
    def window(self, start_bar: int, end_bar: int) -> WindowSnapshot:
        """Read-only copy of bars [start_bar, end_bar); bars before the origin read empty."""
        if not 0 <= start_bar < end_bar:
            raise ScoreWindowError(
                f"window [{start_bar}, {end_bar}) must be a non-empty range of bars >= 0"
            )
        if end_bar - start_bar > self.retain_bars + self.max_future_bars:
            raise ScoreWindowError(
                f"window of {end_bar - start_bar} bars exceeds retain_bars + max_future_bars"
            )
        with self._lock:
            if self._origin is not None and max(start_bar, self._origin) < min(
                end_bar, self._evicted_until
            ):
                raise ScoreWindowError(
                    f"bars before {self._evicted_until} have left memory (retain_bars={self.retain_bars}); "
                    f"window [{start_bar}, {end_bar}) cannot be built"
                )
            track_ids = tuple(self._tracks)
            parts = self._memory_rows(track_ids, start_bar, end_bar, first_bar=start_bar)
            looped = self._loop_rows(track_ids, start_bar, end_bar, parts)
            generated = {
                (t, b)
                for b in range(start_bar, end_bar)
                if b in self._bars
                for t in self._bars[b].generated
            }
            meters = np.array(
                [self.meter(b) for b in range(start_bar, end_bar)], dtype=np.int32
            ).reshape(-1, 2)
            tracks = tuple(self._tracks[t] for t in track_ids)
        notes = frozen_note_arrays(parts)
        meters.flags.writeable = False
        return WindowSnapshot(
            start_bar,
            end_bar,
            self.resolution,
            track_ids,
            tracks,
            meters,
            notes,
            frozenset(generated),
            frozenset(looped),
        )

    def save_midi(self, path: str | os.PathLike) -> int:
        """Write the whole session (journal + memory, human and generated) as a MIDI file.

        Bar 0 of the file is the session's origin bar; bars after the playhead appear only when
        they already hold generated notes. Returns the number of notes written.
        """
        with self._lock:
            track_ids = tuple(self._tracks)
            info = [
                TrackInfo(program=m.program, is_drum=m.is_drum, name=track_name(m))
                for m in self._tracks.values()
            ]
            if self._origin is None:
                score = Score(
                    resolution=self.resolution,
                    time_signatures=np.zeros((0, 2), np.int32),
                    track_info=info,
                )
            else:
                score = self._session_score(track_ids, info)
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            score.to_midi(temporary)
            mark_session_end(temporary, score)  # the file would end at its last note otherwise
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        logger.info("saved %d notes over %d bars to %s", len(score.notes), score.n_bars, target)
        return len(score.notes)

    def stats(self) -> dict:
        with self._lock:
            return {
                "origin": self._origin,
                "playhead": self._playhead,
                "bars_in_memory": len(self._bars),
                "notes_in_memory": sum(
                    len(c) for bar in self._bars.values() for c in bar.chunks.values()
                ),
                "journal_bars": self._journal.bars,
                "journal_notes": self._journal.notes,
                "pending_notes": sum(
                    len(n) for by_track in self._pending.values() for n in by_track.values()
                ),
                "expired_notes": self._expired_notes,
                "late_notes": self._late_notes,
                "continuing_notes": sum(
                    len(c) for bar in self._bars.values() for c in bar.continuing.values()
                ),
                "loops": {str(t): list(loop) for t, loop in self._loops.items()},
            }

    def bar_summary(self, bar_index: int) -> dict:
        """Meter and notes per track id of one bar; ``notes`` is None once the bar left memory."""
        with self._lock:
            num, den = self.meter(bar_index)
            bar = self._bars.get(bar_index)
            closed = self._origin is not None and self._origin <= bar_index < self._playhead
            in_memory = not (
                self._origin is not None and self._origin <= bar_index < self._evicted_until
            )
            notes = None
            if in_memory:
                notes = {
                    t: (len(bar.chunks.get(t, _EMPTY_CHUNK)) if bar else 0) for t in self._tracks
                }
            return {
                "bar": bar_index,
                "meter": [num, den],
                "closed": closed,
                "notes": notes,
                "generated": sorted(bar.generated) if bar else [],
                "continuing": {t: len(c) for t, c in bar.continuing.items() if c} if bar else {},
            }

    def close(self) -> None:
        """Delete the journal (and its directory when this score created it)."""
        with self._lock:
            self._journal.close()
            self._journal.remove()
            if self._own_dir:
                shutil.rmtree(self._journal.directory, ignore_errors=True)

    def __enter__(self) -> RollingScore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals --------------------------------------------------------------------------
    def _check_not_too_far(self, bar_index: int, action: str) -> None:
        if self._origin is not None and bar_index - self._playhead > self.max_future_bars:
            raise ScoreWindowError(
                f"cannot {action} bar {bar_index}: more than {self.max_future_bars} bars ahead of the playhead {self._playhead}"
            )

    def _closed_bar_in_memory(self, bar_index: int) -> _Bar:
        if (
            self._origin is None
            or not max(self._origin, self._evicted_until) <= bar_index < self._playhead
        ):
            raise ScoreWindowError(
                f"bar {bar_index} is not a closed bar in memory (playhead {self._playhead})"
            )
        return self._bars[bar_index]

    def _loop_rows(
        self, track_ids: tuple[int, ...], start_bar: int, end_bar: int, parts: list[np.ndarray]
    ) -> set[tuple[int, int]]:
        """Append to ``parts`` the loop content of looped tracks' bars at or after the playhead;
        returns those (track id, bar) pairs. A bar counts as known only when its source bar in the
        loop has closed and is still in memory."""
        looped: set[tuple[int, int]] = set()
        for i, track_id in enumerate(track_ids):
            loop = self._loops.get(track_id)
            if loop is None:
                continue
            loop_start, loop_end = loop
            for b in range(max(start_bar, self._playhead, loop_end), end_bar):
                source = loop_start + (b - loop_start) % (loop_end - loop_start)
                if not self._evicted_until <= source < self._playhead or source not in self._bars:
                    continue
                chunk = self._bars[source].chunks.get(track_id)
                if chunk is not None and len(chunk):
                    parts.append(note_rows(chunk, i, b - start_bar))
                looped.add((track_id, b))
        return looped

    def _quantise(self, rows: np.ndarray, meter: tuple[int, int]) -> np.ndarray:
        """(n, 4) float rows (onset_frac, duration_frac, pitch, velocity) → int32 tick chunk (D30)."""
        ticks = self.bar_ticks(*meter)
        onset = np.clip(np.floor(rows[:, 0] * ticks + 0.5), 0, ticks - 1)
        duration = np.maximum(1, np.floor(rows[:, 1] * ticks + 0.5))
        return np.stack([onset, duration, rows[:, 2], rows[:, 3]], axis=1).astype(np.int32)

    def _close(self, bar_index: int, meter: tuple[int, int], merged: dict[int, int]) -> None:
        bar = self._bars.setdefault(bar_index, _Bar())
        bar.meter = meter
        self._announced.pop(bar_index, None)
        for track_id, notes in self._pending.pop(bar_index, {}).items():
            if not notes:
                continue
            chunk = self._quantise(np.array(notes, dtype=np.float64), meter)
            bar.chunks[track_id] = np.concatenate([bar.chunks.get(track_id, _EMPTY_CHUNK), chunk])
            merged[track_id] = merged.get(track_id, 0) + len(chunk)

    def _expire_pending(self, outside: tuple[int, int]) -> None:
        """Drop pending notes of bars outside [lo, hi) - bars that can never close (D53)."""
        lo, hi = outside
        for bar_index in [b for b in self._pending if not lo <= b < hi]:
            count = sum(len(n) for n in self._pending.pop(bar_index).values())
            self._expired_notes += count
            logger.warning(
                "expired %d pending note(s) for bar %d, outside bars [%d, %d)",
                count,
                bar_index,
                lo,
                hi,
            )
        for bar_index in [b for b in self._announced if not lo <= b < hi]:
            del self._announced[bar_index]

    def _evict(self) -> None:
        """Move closed bars older than the retention window to the journal."""
        keep_from = self._playhead - self.retain_bars
        while self._evicted_until < keep_from:
            bar_index = self._evicted_until
            bar = self._bars.pop(bar_index)
            chunks = [
                note_rows(c, self._serials[t], bar_index) for t, c in bar.chunks.items() if len(c)
            ]
            self._journal.append(bar.meter, stack_rows(chunks))
            self._evicted_until += 1

    def _memory_rows(
        self, track_ids: tuple[int, ...], start_bar: int, end_bar: int, *, first_bar: int
    ) -> list[np.ndarray]:
        """Row blocks of in-memory bars [start_bar, end_bar): track = index in ``track_ids``,
        bar counted from ``first_bar``."""
        parts = []
        for b in range(start_bar, end_bar):
            bar = self._bars.get(b)
            if bar is None:
                continue
            for i, track_id in enumerate(track_ids):
                chunk = bar.chunks.get(track_id)
                if chunk is not None and len(chunk):
                    parts.append(note_rows(chunk, i, b - first_bar))
        return parts

    def _session_score(self, track_ids: tuple[int, ...], info: list[TrackInfo]) -> Score:
        origin = self._origin
        last = self._playhead
        for b, bar in self._bars.items():
            if bar.generated and any(len(c) for c in bar.chunks.values()):
                last = max(last, b + 1)
        meters = np.concatenate(
            [
                self._journal.meters().reshape(-1, 2),
                np.array(
                    [self.meter(b) for b in range(self._evicted_until, last)], dtype=np.int32
                ).reshape(-1, 2),
            ]
        )
        # Journal rows carry the track's serial, so a removed (or removed and re-added) id is left out.
        serials = [self._serials[t] for t in track_ids]
        parts = [
            self._journal.rows_for(serials, first_bar=origin),
            *self._memory_rows(track_ids, self._evicted_until, last, first_bar=origin),
        ]
        notes = note_arrays(parts).sorted()
        return Score(
            resolution=self.resolution, time_signatures=meters, track_info=info, notes=notes
        )
