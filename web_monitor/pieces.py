"""What the demo performer plays: curated Bach chorales and user-uploaded MIDI files, as Scores.

The chorales come from the corpus inside the installed music21 wheel (read offline). Each is built
straight onto the 12-tick grid of the yellow vocabulary: one track per voice, one meter, and the
pickup (anacrusis) moved to the end, where it completes the last bar, so the piece starts on its
first full downbeat and loops seamlessly (a last bar left short is padded with rest).

Voices are a woodwind quartet, General MIDI programs that keep four close voices audible and apart
(and instruments the model has seen in ensembles): soprano flute (73), alto oboe (68), tenor
clarinet (71), bass bassoon (70). The agent replaces the bass by default and keeps the bassoon
unless the caller names another program.

Uploads go through ``Score.from_midi``: any type 0/1 file whose meters the vocabulary lists, its
leading silent bars dropped, at most ``MAX_UPLOAD_BARS`` bars and ``MAX_UPLOAD_VOICES`` tracks.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any, BinaryIO

import numpy as np

from sideman.engine.midi_io import MidiFileError, TimeSignatureError, read_midi
from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.train.music21_scores import CHORALE_PROGRAMS, music21_parts

RESOLUTION = 12  # ticks per quarter of the yellow vocabulary
VOICE_NAMES = ("Soprano", "Alto", "Tenor", "Bass")
VOICE_PROGRAMS = CHORALE_PROGRAMS  # flute, oboe, clarinet, bassoon (training voices them alike)
VOICE_VELOCITIES = (88, 76, 76, 80)  # the melody a little forward, the bass under it
MAX_UPLOAD_BARS = 32
MAX_UPLOAD_VOICES = 8
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
DEFAULT_PIECE = "bach/bwv66.6"


class PieceError(ValueError):
    """A piece the demo cannot play: unknown id, unreadable or unsuitable MIDI file."""


@dataclass(frozen=True)
class Piece:
    """A playable piece as the monitor lists it (``info.demo.pieces`` of socket_events.md)."""

    id: str
    title: str
    meter: tuple[int, int]  # the first bar's
    bars: int  # bars in the loop
    voices: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "meter": list(self.meter),
            "bars": self.bars,
            "voices": self.voices,
        }


# Four-part chorales of the corpus (id, title, meter, bars after the pickup is moved to the end).
# tests/web_monitor/test_demo.py checks each loads offline into exactly this shape.
CHORALES: tuple[Piece, ...] = (
    Piece("bach/bwv66.6", "Chorale BWV 66.6 (Cantata 66, Erfreut euch, ihr Herzen)", (4, 4), 9, 4),
    Piece("bach/bwv26.6", "Chorale BWV 26.6 (Cantata 26, Ach wie flüchtig, ach wie nichtig)", (4, 4), 10, 4),
    Piece("bach/bwv4.8", "Chorale BWV 4.8 (Cantata 4, Christ lag in Todesbanden)", (4, 4), 12, 4),
    Piece("bach/bwv80.8", "Chorale BWV 80.8 (Cantata 80, Ein feste Burg ist unser Gott)", (4, 4), 12, 4),
    Piece("bach/bwv140.7", "Chorale BWV 140.7 (Cantata 140, Wachet auf, ruft uns die Stimme)", (4, 4), 17, 4),
    Piece("bach/bwv248.12-2", "Chorale BWV 248.12 (Christmas Oratorio)", (4, 4), 12, 4),
    Piece("bach/bwv269", "Chorale BWV 269 (four-part chorale)", (3, 4), 21, 4),
    Piece("bach/bwv57.8", "Chorale BWV 57.8 (Cantata 57, Selig ist der Mann)", (3, 4), 13, 4),
)  # fmt: skip
_BY_ID = {piece.id: piece for piece in CHORALES}


def list_pieces() -> list[Piece]:
    """The curated chorales, default first."""
    return list(CHORALES)


def piece_info(piece_id: str) -> Piece:
    try:
        return _BY_ID[piece_id]
    except KeyError:
        known = ", ".join(_BY_ID)
        raise PieceError(f"unknown piece {piece_id!r}; the demo plays: {known}") from None


def load_piece(piece_id: str) -> Score:
    """The chorale ``piece_id`` as a Score (a copy: callers may edit it)."""
    piece_info(piece_id)
    return _chorale_score(piece_id).copy()


@functools.lru_cache(maxsize=len(CHORALES))
def _chorale_score(piece_id: str) -> Score:
    from music21 import corpus, meter  # imported on first use: music21 takes a second to import

    work = corpus.parse(piece_id)
    meters = {
        (ts.numerator, ts.denominator)
        for ts in work.recurse().getElementsByClass(meter.TimeSignature)
    }
    if len(meters) != 1:
        raise PieceError(f"{piece_id}: expected one meter, found {sorted(meters)}")
    ((numerator, denominator),) = meters
    bar_ticks = RESOLUTION * 4 * numerator // denominator
    first_measure = work.parts[0].getElementsByClass("Measure").first()
    pickup = _ticks(first_measure.duration.quarterLength)
    pickup = pickup if pickup < bar_ticks else 0
    loop_ticks = -(-_ticks(work.highestTime) // bar_ticks) * bar_ticks  # whole bars

    columns = []
    for voice, part in enumerate(music21_parts(work, RESOLUTION)):
        start = part.onset - pickup
        start = np.where(start < 0, start + loop_ticks, start)  # the pickup leads into bar 0
        duration = np.minimum(part.duration, loop_ticks - start)
        velocity = VOICE_VELOCITIES[min(voice, len(VOICE_VELOCITIES) - 1)]
        columns.append(
            NoteArrays(
                np.full(len(start), voice),
                start // bar_ticks,
                start % bar_ticks,
                duration,
                part.pitch,
                np.full(len(start), velocity),
            )
        )
    tracks = [
        TrackInfo(program=VOICE_PROGRAMS[voice % 4], name=part.partName or VOICE_NAMES[voice % 4])
        for voice, part in enumerate(work.parts)
    ]
    n_bars = loop_ticks // bar_ticks
    return Score(
        resolution=RESOLUTION,
        time_signatures=np.tile(np.asarray((numerator, denominator), dtype=np.int32), (n_bars, 1)),
        track_info=tracks,
        notes=NoteArrays.concatenate(columns).sorted(),
    )


def _ticks(quarter_length: Any) -> int:
    return round(float(quarter_length) * RESOLUTION)


# ---- uploads --------------------------------------------------------------------------------------
def load_midi_file(
    source: bytes | str | os.PathLike[str] | BinaryIO, name: str
) -> tuple[Piece, Score]:
    """A user's MIDI file as a playable piece ``upload:<name>``, or PieceError saying what is wrong."""
    label = upload_label(name)
    if isinstance(source, (bytes, bytearray)) and len(source) > MAX_UPLOAD_BYTES:
        raise PieceError(f"{label}: larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    try:
        score = read_midi(source)
    except TimeSignatureError as exc:
        # read_midi's advice (skip_unknown_time_signatures) is for library callers, not for the page
        reason = str(exc).split(": ", 1)[-1].split("; pass skip_unknown", 1)[0]
        raise PieceError(
            f"{label}: {reason}. The demo plays meters of the model's vocabulary (e.g. 4/4, 3/4, 6/8, 12/8)"
        ) from None
    except MidiFileError as exc:
        reason = str(exc).replace("<MIDI bytes>", "the file")
        raise PieceError(f"{label}: not a MIDI file sideman can read ({reason})") from None
    score = _trimmed_upload(score, label)
    numerator, denominator = (int(x) for x in score.time_signatures[0])
    piece = Piece(f"upload:{label}", label, (numerator, denominator), score.n_bars, score.n_tracks)
    return piece, score


def upload_label(name: str) -> str:
    """The file's base name, printable and at most 64 characters (the id is ``upload:<label>``)."""
    base = PurePath(str(name).replace("\\", "/")).name
    label = "".join(c for c in base if c.isprintable()).strip()[:64]
    return label or "upload.mid"


def _trimmed_upload(score: Score, label: str) -> Score:
    """Leading silence dropped, then the first MAX_UPLOAD_BARS bars of the first MAX_UPLOAD_VOICES
    tracks that have notes; durations cut at the loop's end."""
    notes = score.notes.select(score.notes.velocity > 0)  # velocity 0 is a note-off, never sent
    if len(notes) == 0:
        raise PieceError(f"{label}: the file has no notes to play")
    first_bar = int(notes.bar.min())
    end_bar = min(score.n_bars, first_bar + MAX_UPLOAD_BARS)
    score = score.with_notes(notes).slice_bars(first_bar, end_bar)
    notes = score.notes
    kept_tracks = np.unique(notes.track)[:MAX_UPLOAD_VOICES]
    notes = notes.select(np.isin(notes.track, kept_tracks))
    if len(notes) == 0:
        raise PieceError(f"{label}: no notes in its first {MAX_UPLOAD_BARS} bars")
    bar_starts = score.bar_starts()
    start = bar_starts[notes.bar] + notes.onset
    duration = np.minimum(notes.duration, bar_starts[-1] - start)
    notes = replace(notes, track=np.searchsorted(kept_tracks, notes.track), duration=duration)
    return Score(
        resolution=score.resolution,
        time_signatures=score.time_signatures,
        track_info=[score.track_info[int(t)] for t in kept_tracks],
        notes=notes.sorted(),
        tempo=score.tempo,
    )
