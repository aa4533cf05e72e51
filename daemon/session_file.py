"""Reading a session back from the MIDI file ``/midigpt/session/save`` wrote (osc-protocol D55, D62).

The file's MIDI tracks are named ``track N`` or ``track N (agent)`` (``rolling_types.track_name``);
the name gives the track id and role, the channel (10) the drum flag, the program change the
program. Notes are read with ``Score.from_midi`` onto the checkpoint's grid; bar 0 of the file is
the saved session's first bar. A MIDI file ends at its last note, so the saver adds a marker meta
event at the end of the session's last bar (``mark_session_end``); with it, trailing silent bars and
their meters load back too. A track with no notes comes back from its name alone.

Everything here is pure file reading, safe to run off the loop; the session applies the result.
"""

from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass

import mido
import numpy as np

from sideman.engine.score import Score
from sideman.engine.vocab import EncoderConfig

SESSION_END_MARKER = "sideman session end"
TRACK_NAME = re.compile(r"^track (-?\d+)( \(agent\))?$")
DRUM_CHANNEL = 9  # channel 10, zero-based


class SessionFileError(ValueError):
    """A file that is not a readable session saved by sideman."""


@dataclass(frozen=True)
class SavedTrack:
    track_id: int
    program: int
    is_drum: bool
    is_agent: bool


@dataclass(frozen=True)
class SavedSession:
    """A saved session: tracks in file order, (bars, 2) meters, (notes, 6) rows whose first column
    is the track id (then bar, onset, duration, pitch, velocity in ticks)."""

    tracks: tuple[SavedTrack, ...]
    meters: np.ndarray
    rows: np.ndarray

    @property
    def n_bars(self) -> int:
        return len(self.meters)


def read_session_file(path: str | os.PathLike, encoder_config: EncoderConfig) -> SavedSession:
    """Read a saved session; raises SessionFileError with what is wrong."""
    try:
        midi = mido.MidiFile(os.fspath(path))
    except (OSError, ValueError, EOFError) as exc:
        raise SessionFileError(f"cannot read {os.fspath(path)}: {exc}") from exc
    tracks = _named_tracks(midi, path)
    try:
        score = Score.from_midi(path, encoder_config=encoder_config)
    except (OSError, ValueError) as exc:
        raise SessionFileError(f"cannot read {os.fspath(path)}: {exc}") from exc
    if score.resolution != encoder_config.resolution:
        score = score.rescaled(encoder_config.resolution)
    ids_by_name = {_display_name(t): t.track_id for t in tracks}
    score_ids = []
    for info in score.track_info:
        if info.name not in ids_by_name:
            raise SessionFileError(
                f"{os.fspath(path)}: a track named {info.name!r} has notes; a session saved by "
                "sideman names every track 'track N' or 'track N (agent)'"
            )
        score_ids.append(ids_by_name[info.name])
    notes = score.notes
    rows = np.stack(
        [
            np.asarray(score_ids, dtype=np.int32)[notes.track],
            notes.bar,
            notes.onset,
            notes.duration,
            notes.pitch,
            notes.velocity,
        ],
        axis=1,
    ).astype(np.int32)
    rows = rows[rows[:, 5] > 0]
    meters = np.asarray(score.time_signatures, dtype=np.int32).reshape(-1, 2)
    marked = _marked_meters(midi)
    if len(marked) >= len(meters) and np.array_equal(marked[: len(meters)], meters):
        meters = marked
    return SavedSession(tuple(tracks), meters, rows.reshape(-1, 6))


def _display_name(track: SavedTrack) -> str:
    return f"track {track.track_id}{' (agent)' if track.is_agent else ''}"


def mark_session_end(path: str | os.PathLike, score: Score) -> None:
    """Add the session-end marker to the conductor track of a file ``score.to_midi`` wrote."""
    midi = mido.MidiFile(os.fspath(path))
    end_tick = round(int(score.bar_starts()[-1]) * midi.ticks_per_beat / score.resolution)
    events = [m for m in midi.tracks[0] if m.type != "end_of_track"]
    elapsed = sum(m.time for m in events)
    midi.tracks[0] = mido.MidiTrack(
        [
            *events,
            mido.MetaMessage("marker", text=SESSION_END_MARKER, time=max(0, end_tick - elapsed)),
            mido.MetaMessage("end_of_track", time=0),
        ]
    )
    midi.save(os.fspath(path))


def _marked_meters(midi: mido.MidiFile) -> np.ndarray:
    """(bars, 2) meters up to the session-end marker, walking the conductor's time signatures
    bar by bar; empty when the file has no marker."""
    changes: list[tuple[int, int, int]] = []
    tick, end = 0, None
    for message in midi.tracks[0] if midi.tracks else ():
        tick += message.time
        if message.type == "time_signature":
            changes.append((tick, message.numerator, message.denominator))
        elif message.type == "marker" and message.text == SESSION_END_MARKER:
            end = tick
    meters: list[tuple[int, int]] = []
    if end is None:
        return np.zeros((0, 2), dtype=np.int32)
    meter, bar_start, pending = (4, 4), 0, deque(changes)
    while bar_start < end:
        while pending and pending[0][0] <= bar_start:
            meter = pending.popleft()[1:]
        meters.append(meter)
        bar_start += midi.ticks_per_beat * 4 * meter[0] // meter[1]
    return np.asarray(meters, dtype=np.int32).reshape(-1, 2)


def _named_tracks(midi: mido.MidiFile, path: str | os.PathLike) -> list[SavedTrack]:
    """Every MIDI track named like a sideman track, with its program and drum flag."""
    tracks: list[SavedTrack] = []
    for midi_track in midi.tracks:
        name, program, drum = None, 0, False
        for message in midi_track:
            if message.type == "track_name" and name is None:
                name = message.name
            elif message.type == "program_change":
                program = message.program
            if hasattr(message, "channel"):
                drum = message.channel == DRUM_CHANNEL
        match = TRACK_NAME.match(name or "")
        if match:
            tracks.append(SavedTrack(int(match.group(1)), program, drum, bool(match.group(2))))
    ids = [t.track_id for t in tracks]
    if not tracks:
        raise SessionFileError(
            f"{os.fspath(path)} has no tracks named 'track N'; is it a file /midigpt/session/save wrote?"
        )
    if len(set(ids)) != len(ids):
        raise SessionFileError(f"{os.fspath(path)}: track ids repeat: {ids}")
    return tracks
