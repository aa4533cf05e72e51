"""MIDI file input and output for the score model (tokens.md §6.2, quantisation path B).

``read_midi`` parses a type 0/1 standard MIDI file and puts its notes straight onto the model grid
(12 ticks per quarter by default) by rounding; ``write_midi`` writes a score back as a type 1 file.
Parsing gives raw per-note arrays (source ticks, pitch, velocity, MIDI track and channel) plus meter,
tempo, program and name events; quantisation and bar assignment are numpy. Two parsers: symusic (C++,
the default) and mido (pure Python, the readable reference). The symusic one proves, with byte
checks on each chunk, that it gives the mido reader's result and otherwise hands the file to mido:
program changes after a channel's first note, a program 0 that may come from another track's change,
two track names in a track, a chunk whose last event is not its only end-of-track, same-tick meter
or tempo events that differ, framing mido rejects. Limit: inside well-framed chunks symusic is more
lenient than mido with corrupt event data (e.g. a data byte above 127 that mido rejects).

Rules that tokens.md leaves open, as sideman settles them:

- **Rounding ties.** A tick exactly halfway between two grid ticks rounds **up** (to the later grid
  tick), the same rule as ``Score.rescaled``.
- **Bar assignment.** A note belongs to the bar containing its *unrounded* onset. If rounding then
  moves its onset onto that bar's end (the note starts less than half a grid tick before the next
  bar line) it is **dropped**, as §6.2 path B says.
- **Meter changes off a bar line.** A time signature is placed at its tick rounded to the grid. If
  that is not on a bar line of the current meter, a new bar starts there; the cut-short bar before it
  is labelled with the meter that matches its real length (a 4/4 bar cut after three beats becomes
  3/4, after 3½ beats 7/8), so the score's bar grid keeps the file's absolute timing. That label is
  checked against the vocabulary like any other bar. A time signature that restates the current
  meter is ignored; one with numerator 0 or a denominator above 64 is corrupt and ignored (logged).
- **Bars** run until the last note end (rounded offset, at least onset + 1); an empty file has one
  bar. Time signatures after the last note end add no bars.
- **Tracks** are one per (MIDI track, channel) with notes, ordered by MIDI track then channel. A
  track keeps its place even if all its notes are later dropped (bar end, skipped meters).
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

import mido
import numpy as np
import symusic

from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.vocab import EncoderConfig

logger = logging.getLogger(__name__)

MidiSource = str | os.PathLike[str] | bytes | bytearray | BinaryIO
MidiTarget = str | os.PathLike[str] | BinaryIO

DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0
DEFAULT_TEMPO = 500_000  # microseconds per quarter (120 bpm)
MELODIC_CHANNELS = tuple(c for c in range(16) if c != DRUM_CHANNEL)
_MAX_METER_DENOMINATOR = 64
# What mido raises on malformed bytes: its own OSError/EOFError, and IndexError/KeyError/ValueError/
# struct.error from decoding short or out-of-range message data.
_PARSE_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, struct.error)


class MidiFileError(ValueError):
    """A MIDI file that cannot be read or written: unreadable, corrupt, type 2, SMPTE timing."""


class TimeSignatureError(MidiFileError):
    """A bar whose meter the vocabulary does not list (or that is no whole number of grid ticks)."""


# ---- reading ------------------------------------------------------------------------------------
@dataclass
class _RawEvents:
    """Everything read_midi needs from the message walk, in source ticks."""

    onset: list[int] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)  # -1 until released
    pitch: list[int] = field(default_factory=list)
    velocity: list[int] = field(default_factory=list)
    source: list[int] = field(default_factory=list)  # midi_track * 16 + channel
    track_end: list[int] = field(default_factory=list)  # per MIDI track: tick of its last message
    track_names: list[str] = field(default_factory=list)
    # (tick, midi_track, channel, program) / (tick, midi_track, numerator, denominator) / (tick, midi_track, tempo)
    programs: list[tuple[int, int, int, int]] = field(default_factory=list)
    meters: list[tuple[int, int, int, int]] = field(default_factory=list)
    tempos: list[tuple[int, int, int]] = field(default_factory=list)
    # Set by the symusic backend: program per score-track key (midi_track * 16 + channel), already
    # resolved by the program rule; None → resolve from ``programs`` (the mido backend).
    program_of: dict[int, int] | None = None


def read_midi(
    path_or_file: MidiSource,
    *,
    skip_unknown_time_signatures: bool = False,
    encoder_config: EncoderConfig | None = None,
    resolution: int | None = None,
    backend: str = "symusic",
) -> Score:
    """Read a type 0 or type 1 MIDI file onto the model grid (tokens.md §6.2 path B).

    Onset and offset ticks are rounded to ``resolution`` ticks per quarter (default: the encoder
    config's, 12 for yellow); exact halves round up. A note is assigned to the bar holding its
    unrounded onset and dropped when rounding puts it on that bar's end. Durations are rounded
    offset − rounded onset, at least 1, and may run past the bar end. Every bar's meter must be in
    the config's time-signature list, otherwise TimeSignatureError, or, with
    ``skip_unknown_time_signatures``, those bars and their notes are removed.

    ``path_or_file`` is a path, the file's bytes, or a binary file object. ``backend`` picks the
    parser: ``"symusic"`` (default, C++) or ``"mido"`` (pure Python, the reference). Both give the
    same Score; the symusic backend hands any file it cannot prove it reads identically (see
    ``_symusic_events``) to the mido one.
    """
    if backend not in ("symusic", "mido"):
        raise ValueError(f"backend must be 'symusic' or 'mido', got {backend!r}")
    config = encoder_config if encoder_config is not None else EncoderConfig.yellow()
    grid = config.resolution if resolution is None else resolution
    if not isinstance(grid, (int, np.integer)) or grid < 1:
        raise ValueError(f"resolution must be a positive number of ticks per quarter, got {grid!r}")
    grid = int(grid)
    name, data = _read_source(path_or_file)
    if backend == "symusic":
        fast = _symusic_events(data)
        if fast is not None:
            raw, ppq = fast
            logger.debug("%s: %d tpq, %d notes (symusic)", name, ppq, len(raw.onset))
            return _build_score(name, raw, ppq, grid, config, skip_unknown_time_signatures)
        logger.debug("%s: read with mido (outside what the symusic reader can match)", name)
    midi = _parse_mido(name, data)
    if midi.type == 2:
        raise MidiFileError(
            f"{name}: type 2 (independent sequences) MIDI file; sideman reads types 0 and 1 - "
            "split its sequences into separate files first"
        )
    ppq = midi.ticks_per_beat
    if ppq <= 0:
        raise MidiFileError(
            f"{name}: SMPTE or zero time division ({ppq}); sideman needs ticks per quarter note - "
            "re-export the file with metrical (PPQ) timing"
        )
    raw = _walk_messages(midi)
    message = "%s: type %d, %d tpq, %d tracks, %d notes"
    logger.debug(message, name, midi.type, ppq, len(midi.tracks), len(raw.onset))
    return _build_score(name, raw, ppq, grid, config, skip_unknown_time_signatures)


def _read_source(path_or_file: MidiSource) -> tuple[str, bytes]:
    """The file's display name and its bytes."""
    if isinstance(path_or_file, (bytes, bytearray)):
        return "<MIDI bytes>", bytes(path_or_file)
    if isinstance(path_or_file, (str, os.PathLike)):
        name = os.fspath(path_or_file)
        try:
            with open(path_or_file, "rb") as handle:
                return name, handle.read()
        except OSError as exc:
            raise MidiFileError(f"cannot read MIDI file {name}: {exc}") from exc
    name = str(getattr(path_or_file, "name", "<MIDI stream>"))
    try:
        return name, path_or_file.read()
    except OSError as exc:
        raise MidiFileError(f"cannot read MIDI file {name}: {exc}") from exc


def _parse_mido(name: str, data: bytes) -> mido.MidiFile:
    """Parse with mido from an in-memory copy (mido reads byte by byte; BytesIO is the fast case)."""
    try:
        midi = mido.MidiFile(file=io.BytesIO(data))
    except _PARSE_ERRORS as exc:
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, EOFError):
            detail = "file ends in the middle of a chunk (truncated)"
        raise MidiFileError(f"{name} is not a readable standard MIDI file: {detail}") from exc
    return midi


# ---- the symusic backend ------------------------------------------------------------------------
# symusic parses notes in C++ but reports per (MIDI track, channel, program at note-off) tracks with
# no channel number, drops unreleased notes, keeps the last track name (UTF-8, invalid bytes
# stripped) and loses program-change times. So each MTrk chunk is parsed on its own (MIDI track
# index), with events added just before its final end-of-track: a note-off for every pitch of every
# channel that may hold notes (unreleased notes end at the track's end, as in the mido reader), then
# a zero-length pitch-0 "sentinel" note per such channel with velocity channel + 1 (which symusic
# track is which channel, and that channel's final program). Byte checks on the chunk prove the
# rest; a file outside them is read with mido (see _symusic_events).
_EOT = b"\xff\x2f\x00"
_TRACK_NAME = b"\xff\x03"
_OFFS = [b"".join(bytes((0x80 | c, p, 0, 0)) for p in range(128)) for c in range(16)]
_SENTINEL = [bytes((0x90 | c, 0, c + 1, 0, 0x80 | c, 0, 0, 0)) for c in range(16)]
_RELEASE_ROUNDS = (1, 16)  # note-offs per pitch at the end; a second try for stacked notes
_NOTE_ON_STATUS = np.arange(0x90, 0xA0)
_PROGRAM_STATUS = np.arange(0xC0, 0xD0)
_CHANNELS = np.arange(16)


class _Fallback(Exception):
    """The symusic backend cannot prove it matches the mido reader on this file."""


def _symusic_events(data: bytes) -> tuple[_RawEvents, int] | None:
    """Raw events via symusic, or None where the file must go to the mido reader: framing mido
    would reject (so its errors stay the reference's), type 2, SMPTE, or any case below."""
    try:
        return _symusic_walk(data)
    except _Fallback:
        return None


def _symusic_walk(data: bytes) -> tuple[_RawEvents, int]:
    if len(data) < 14 or data[:4] != b"MThd":
        raise _Fallback
    (size,) = struct.unpack_from(">L", data, 4)
    if size < 6 or len(data) < 8 + size:
        raise _Fallback
    midi_type, n_tracks, ppq = struct.unpack_from(">hhh", data, 8)
    if midi_type not in (0, 1) or ppq <= 0:
        raise _Fallback  # the mido path raises the reference's errors
    header = b"MThd\x00\x00\x00\x06\x00\x01\x00\x01" + data[12:14]
    chunks: list[bytes] = []
    pos = 8 + size
    for _ in range(n_tracks):
        if len(data) < pos + 8 or data[pos : pos + 4] != b"MTrk":
            raise _Fallback
        (size,) = struct.unpack_from(">L", data, pos + 4)
        chunk = data[pos + 8 : pos + 8 + size]
        if len(chunk) < size:
            raise _Fallback
        # The end-of-track event must be the chunk's last event (sentinels go in front of it).
        if size < 4 or not chunk.endswith(_EOT) or chunk[-4] >= 0x80 or chunk.count(_EOT) != 1:
            raise _Fallback
        chunks.append(chunk)
        pos += 8 + size
    byte_counts = [
        np.bincount(np.frombuffer(chunk, dtype=np.uint8), minlength=256) for chunk in chunks
    ]
    # Per channel: how many chunks hold a program-change status byte for it.
    program_bytes = (
        sum((counts[_PROGRAM_STATUS] > 0).astype(np.int64) for counts in byte_counts)
        if chunks
        else np.zeros(16, np.int64)
    )

    raw = _RawEvents(program_of={})
    onsets: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    pitches: list[np.ndarray] = []
    velocities: list[np.ndarray] = []
    sources: list[np.ndarray] = []
    for track_index, (chunk, counts) in enumerate(zip(chunks, byte_counts, strict=True)):
        channels = _CHANNELS[counts[_NOTE_ON_STATUS] > 0].tolist()
        for rounds in _RELEASE_ROUNDS:
            score, note_tracks, end_tick = _parse_chunk(header, chunk, channels, rounds)
            if end_tick is not None:
                break
        else:
            raise _Fallback  # more notes left unreleased on one pitch than the rounds release
        symusic_name = ""
        found: dict[int, tuple[int, dict[str, np.ndarray]]] = {}
        for track, notes in note_tracks:
            sentinel = (
                (notes["pitch"] == 0)
                & (notes["duration"] == 0)
                & (notes["time"] == end_tick)
                & (notes["velocity"] >= 1)
                & (notes["velocity"] <= 16)
            )
            hits = np.flatnonzero(sentinel)
            if len(hits) != 1:
                raise _Fallback  # a real note like a sentinel, or a program change mid-channel
            channel = int(notes["velocity"][hits[0]]) - 1
            if (
                channel in found
                or channel not in channels
                or track.is_drum != (channel == DRUM_CHANNEL)
            ):
                raise _Fallback
            keep = ~sentinel
            found[channel] = (track.program, {k: v[keep] for k, v in notes.items()})
            symusic_name = track.name
        if len(found) != len(channels):
            raise _Fallback
        named = False
        for channel in sorted(found):
            program, notes = found[channel]
            if not len(notes["time"]):
                continue
            _check_program(chunk, channel, program, counts, program_bytes)
            named = True
            key = track_index * 16 + channel
            raw.program_of[key] = program
            onset = notes["time"].astype(np.int64)
            onsets.append(onset)
            offsets.append(onset + notes["duration"])
            pitches.append(notes["pitch"].astype(np.int64))
            velocities.append(notes["velocity"].astype(np.int64))
            sources.append(np.full(len(onset), key, dtype=np.int64))
        raw.track_names.append(_track_name(chunk, symusic_name) if named else "")
        raw.track_end.append(end_tick)
        raw.meters += _timed_events(score.time_signatures, track_index, meters=True)
        raw.tempos += _timed_events(score.tempos, track_index, meters=False)
    if onsets:
        raw.onset = np.concatenate(onsets)  # type: ignore[assignment]
        raw.offset = np.concatenate(offsets)  # type: ignore[assignment]
        raw.pitch = np.concatenate(pitches)  # type: ignore[assignment]
        raw.velocity = np.concatenate(velocities)  # type: ignore[assignment]
        raw.source = np.concatenate(sources)  # type: ignore[assignment]
    return raw, ppq


def _parse_chunk(
    header: bytes, chunk: bytes, channels: list[int], rounds: int
) -> tuple[symusic.Score, list, int | None]:
    """symusic's parse of one chunk with the release events and sentinels before its end of track,
    then, one tick later, one more note-off per pitch: a note that one ends had been left unreleased
    by the ``rounds`` before it, and the end tick comes back None."""
    if channels:
        tail = b"".join(_OFFS[c] * rounds + _SENTINEL[c] for c in channels)
        check = b"".join(_OFFS[c] for c in channels)
        body = tail[:-1] + b"\x01" + check  # the last delta: one tick
    else:
        body = b""
    track_data = chunk[:-3] + body + _EOT
    midi_bytes = header + b"MTrk" + struct.pack(">L", len(track_data)) + track_data
    try:
        score = symusic.Score.from_midi(midi_bytes)
    except Exception as exc:  # symusic raises RuntimeError/range_error/...; mido decides
        raise _Fallback from exc
    note_tracks = []
    for track in score.tracks:
        notes = track.notes.numpy()
        if len(notes["time"]):
            note_tracks.append((track, notes))
    end_tick = max((int(n["time"].max()) for _, n in note_tracks), default=0)
    if any(int((n["time"] + n["duration"]).max()) > end_tick for _, n in note_tracks):
        return score, note_tracks, None
    return score, note_tracks, end_tick


def _check_program(
    chunk: bytes, channel: int, program: int, counts: np.ndarray, program_bytes: np.ndarray
) -> None:
    """Prove symusic's program for ``channel`` (its last program change in the chunk, 0 if none) is
    the mido reader's (the last one at or before the channel's first note, own track first)."""
    status = 0xC0 | channel
    if counts[status]:
        # Every program-change status byte for the channel must come before its first note-on
        # status byte (running-status events follow their status byte; stray data bytes that look
        # like status bytes only make this stricter).
        first_note_on = chunk.find(bytes((0x90 | channel,)))
        if chunk.rfind(bytes((status,))) > first_note_on:
            raise _Fallback
    if program == 0 and program_bytes[channel] - (counts[status] > 0) > 0:
        raise _Fallback  # maybe no own change: the rule would look at the other tracks' changes


def _track_name(chunk: bytes, symusic_name: str) -> str:
    """The first non-empty track name, decoded as latin-1 like mido; symusic keeps the last one."""
    count = chunk.count(_TRACK_NAME)
    if count == 0:
        return ""
    if count > 1:
        raise _Fallback
    pos = chunk.find(_TRACK_NAME) + 2
    length = 0
    while True:
        if pos >= len(chunk):
            raise _Fallback
        byte = chunk[pos]
        pos += 1
        length = (length << 7) | (byte & 0x7F)
        if byte < 0x80:
            break
    if pos + length > len(chunk):
        raise _Fallback
    name = chunk[pos : pos + length].decode("latin-1")
    if name and not symusic_name:
        raise _Fallback  # the bytes were no track-name event, or symusic stripped it all
    return name


def _timed_events(events, track_index: int, *, meters: bool) -> list[tuple]:
    """symusic time signatures / tempos of one chunk as the mido walk's tuples. symusic sorts them
    by time, so two different ones at the same tick (file order decides) go to mido."""
    if not len(events):
        return []
    table = events.numpy()
    times = table["time"].tolist()
    if meters:
        values = list(zip(table["numerator"].tolist(), table["denominator"].tolist(), strict=True))
        if any(d == 0 or d & (d - 1) for _, d in values):
            raise _Fallback  # denominator 2**k past the byte symusic stores it in
    else:
        values = [(v,) for v in table["mspq"].tolist()]
    seen: dict[int, tuple] = {}
    for tick, value in zip(times, values, strict=True):
        if tick < 0 or seen.setdefault(tick, value) != value:
            raise _Fallback
    return [(tick, track_index, *value) for tick, value in zip(times, values, strict=True)]


def _walk_messages(midi: mido.MidiFile) -> _RawEvents:
    """One pass over every message: pair notes FIFO per (channel, pitch), collect meta events."""
    raw = _RawEvents()
    onset, offset, pitch, velocity = raw.onset, raw.offset, raw.pitch, raw.velocity
    source = raw.source
    for track_index, track in enumerate(midi.tracks):
        # Unreleased note indices by channel * 128 + pitch (a list beats a dict per message).
        pending: list[deque[int] | None] = [None] * (16 * 128)
        tick = 0
        track_name = ""
        for msg in track:
            tick += msg.time
            kind = msg.type
            if kind == "note_on" and msg.velocity > 0:
                key = msg.channel * 128 + msg.note
                queue = pending[key]
                if queue is None:
                    queue = pending[key] = deque()
                queue.append(len(onset))
                onset.append(tick)
                offset.append(-1)
                pitch.append(msg.note)
                velocity.append(msg.velocity)
                source.append(track_index * 16 + msg.channel)
            elif kind == "note_off" or kind == "note_on":
                queue = pending[msg.channel * 128 + msg.note]
                if queue:
                    offset[queue.popleft()] = tick
            elif kind == "program_change":
                raw.programs.append((tick, track_index, msg.channel, msg.program))
            elif kind == "time_signature":
                raw.meters.append((tick, track_index, msg.numerator, msg.denominator))
            elif kind == "set_tempo":
                raw.tempos.append((tick, track_index, msg.tempo))
            elif kind == "track_name" and not track_name:
                track_name = msg.name
        raw.track_end.append(tick)
        raw.track_names.append(track_name)
    return raw


def _round_to_grid(ticks: np.ndarray, ppq: int, grid: int) -> np.ndarray:
    """Source ticks → grid ticks, rounding to nearest with exact halves up."""
    return (2 * ticks * grid + ppq) // (2 * ppq)


def _build_score(
    name: str, raw: _RawEvents, ppq: int, grid: int, config: EncoderConfig, skip_unknown: bool
) -> Score:
    onset_src = np.asarray(raw.onset, dtype=np.int64)
    offset_src = np.asarray(raw.offset, dtype=np.int64)
    source = np.asarray(raw.source, dtype=np.int64)
    unreleased = offset_src < 0
    if unreleased.any():
        offset_src[unreleased] = np.asarray(raw.track_end, dtype=np.int64)[source[unreleased] // 16]
        logger.debug(
            "%s: %d notes never released end at their track's end", name, int(unreleased.sum())
        )

    onset = _round_to_grid(onset_src, ppq, grid)
    duration = np.maximum(1, _round_to_grid(offset_src, ppq, grid) - onset)
    last_end = int((onset + duration).max()) if len(onset) else 0

    bar_bounds, meters, cut_short = _bar_grid(name, raw.meters, ppq, grid, last_end)
    # Bar of the unrounded onset: compare onset_src/ppq with bound/grid exactly, in integers.
    bar = np.searchsorted(bar_bounds * ppq, onset_src * grid, side="right") - 1
    bar = np.clip(bar, 0, len(meters) - 1)
    onset_in_bar = onset - bar_bounds[bar]
    keep = onset_in_bar < bar_bounds[bar + 1] - bar_bounds[bar]
    if not keep.all():
        logger.debug("%s: dropped %d notes rounded onto a bar end", name, int((~keep).sum()))

    track_keys, track_of_note = np.unique(source, return_inverse=True)
    track_of_note = track_of_note.reshape(-1)
    first_onset = np.full(len(track_keys), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_onset, track_of_note, onset_src)
    track_info = [
        _track_info(int(key), int(first), raw)
        for key, first in zip(track_keys, first_onset, strict=True)
    ]
    bar_usable = _check_meters(name, meters, cut_short, bar_bounds, ppq, grid, config, skip_unknown)
    if not bar_usable.all():
        keep &= bar_usable[bar]
        new_index = np.cumsum(bar_usable) - 1
        bar = new_index[bar]
        meters = meters[bar_usable]

    notes = NoteArrays(
        track_of_note[keep],
        bar[keep],
        onset_in_bar[keep],
        duration[keep],
        np.asarray(raw.pitch, dtype=np.int64)[keep],
        np.asarray(raw.velocity, dtype=np.int64)[keep],
    ).sorted()
    return Score(
        resolution=grid,
        time_signatures=meters,
        track_info=track_info,
        notes=notes,
        tempo=_first_tempo(raw),
    )


def _bar_grid(
    name: str, meter_events: list[tuple[int, int, int, int]], ppq: int, grid: int, last_end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bar bounds in grid ticks ((n_bars + 1,) int64), meters ((n_bars, 2)) up to ``last_end``,
    and which bars a meter change off the bar line cut short ((n_bars,) bool)."""
    changes: dict[int, tuple[int, int]] = {}
    for tick, _, numerator, denominator in sorted(
        meter_events, key=lambda event: (event[0], event[1])
    ):
        if numerator < 1 or denominator > _MAX_METER_DENOMINATOR:
            message = "%s: ignoring corrupt time signature %d/%d at tick %d"
            logger.warning(message, name, numerator, denominator, tick)
            continue
        grid_tick = int(_round_to_grid(np.int64(tick), ppq, grid))
        changes[grid_tick] = (numerator, denominator)  # the last one at a tick wins
    if 0 not in changes:
        changes[0] = (4, 4)
    segments = sorted(changes.items())

    bounds: list[np.ndarray] = []
    labels: list[tuple[int, int]] = []
    cut_short: list[bool] = []
    current: tuple[int, int] | None = None
    for i, (seg_start, meter) in enumerate(segments):
        if meter == current:
            continue  # a restatement, not a change: the bars of the current meter run on
        current = meter
        seg_end = next((tick for tick, m in segments[i + 1 :] if m != meter), None)
        bar_len = Fraction(grid * 4 * meter[0], meter[1])
        last = seg_end is None or seg_end >= last_end
        if last:
            span = max(last_end - seg_start, 1)
            n_bars = -(-span * bar_len.denominator // bar_len.numerator)  # ceil
        else:
            n_bars = int((seg_end - seg_start) // bar_len)
        bounds.append(_bar_starts(seg_start, bar_len, n_bars))
        labels += [meter] * n_bars
        cut_short += [False] * n_bars
        if last:
            end = seg_start + bar_len * n_bars
            break
        partial_start = seg_start + n_bars * bar_len
        if partial_start < seg_end:
            bounds.append(np.asarray([_round_fraction(partial_start)], dtype=np.int64))
            labels.append(_meter_of_length(seg_end - partial_start, grid, meter[1]))
            cut_short.append(True)
        end = Fraction(seg_end)
    bounds.append(np.asarray([_round_fraction(end)], dtype=np.int64))
    meters = np.asarray(labels, dtype=np.int64).reshape(-1, 2)
    return np.concatenate(bounds), meters, np.asarray(cut_short, dtype=bool)


def _bar_starts(seg_start: int, bar_len: Fraction, n_bars: int) -> np.ndarray:
    numerators = seg_start * bar_len.denominator + bar_len.numerator * np.arange(
        n_bars, dtype=np.int64
    )
    return (2 * numerators + bar_len.denominator) // (2 * bar_len.denominator)


def _round_fraction(value: Fraction) -> int:
    return (2 * value.numerator + value.denominator) // (2 * value.denominator)


def _meter_of_length(length: Fraction, grid: int, old_denominator: int) -> tuple[int, int]:
    """The meter n/d whose bar is ``length`` grid ticks, written over ``old_denominator`` if whole."""
    whole_notes = Fraction(length) / (4 * grid)
    if old_denominator % whole_notes.denominator == 0:
        return whole_notes.numerator * (old_denominator // whole_notes.denominator), old_denominator
    return whole_notes.numerator, whole_notes.denominator


def _check_meters(
    name: str,
    meters: np.ndarray,
    cut_short: np.ndarray,
    bar_bounds: np.ndarray,
    ppq: int,
    grid: int,
    config: EncoderConfig,
    skip_unknown: bool,
) -> np.ndarray:
    """Per-bar mask of usable meters; raise TimeSignatureError on the first unusable one unless skipping."""
    distinct, bar_meter = np.unique(meters, axis=0, return_inverse=True)
    usable_meter = np.asarray(
        [config.time_signature_index(n, d) >= 0 and (grid * 4 * n) % d == 0 for n, d in distinct],
        dtype=bool,
    )
    usable = usable_meter[bar_meter.reshape(-1)]
    if usable.all():
        return usable
    unusable = np.flatnonzero(~usable)
    if skip_unknown:
        if len(unusable) == len(usable):
            raise TimeSignatureError(
                f"{name}: every bar has a meter outside the vocabulary; no bars are left to read"
            )
        dropped = sorted({f"{n}/{d}" for n, d in meters[unusable].tolist()})
        message = "%s: dropped %d of %d bars whose meters %s are not in the vocabulary"
        logger.warning(message, name, len(unusable), len(usable), dropped)
        return usable
    first = int(unusable[0])
    n, d = (int(x) for x in meters[first])
    reason = (
        f"is not in the {config.name} vocabulary's time-signature list"
        if config.time_signature_index(n, d) < 0
        else f"is not a whole number of ticks at resolution {grid}"
    )
    start_tick = _round_fraction(Fraction(int(bar_bounds[first]) * ppq, grid))
    others = f" ({len(unusable) - 1} more bars like it)" if len(unusable) > 1 else ""
    if cut_short[first]:
        reason += " (it is a bar cut short by a time-signature change off the bar line)"
    raise TimeSignatureError(
        f"{name}: bar {first} (measure {first + 1}, MIDI tick {start_tick}) has time signature {n}/{d}, which "
        f"{reason}{others}; pass skip_unknown_time_signatures=True (CLI: --skip-unknown-meters) to drop "
        "those bars and their notes"
    )


def _track_info(key: int, first_note: int, raw: _RawEvents) -> TrackInfo:
    midi_track, channel = divmod(key, 16)
    if raw.program_of is not None:
        program = raw.program_of[key]
    else:
        program = _program_at(raw.programs, midi_track, channel, first_note)
    return TrackInfo(
        program=program,
        is_drum=channel == DRUM_CHANNEL,
        name=raw.track_names[midi_track],
    )


def _program_at(
    programs: list[tuple[int, int, int, int]], midi_track: int, channel: int, tick: int
) -> int:
    """Last program change on ``channel`` at or before ``tick``, from the same MIDI track if it has one
    there (files that reuse a channel across tracks), else from any track."""
    earlier = [p for p in programs if p[2] == channel and p[0] <= tick]
    own = [p for p in earlier if p[1] == midi_track]
    chosen = own or sorted(earlier, key=lambda p: p[0])  # stable: file order within a tick
    return chosen[-1][3] if chosen else 0


def _first_tempo(raw: _RawEvents) -> int:
    return min(raw.tempos, key=lambda t: (t[0], t[1]))[2] if raw.tempos else DEFAULT_TEMPO


# ---- writing ------------------------------------------------------------------------------------
def write_midi(score: Score, path_or_file: MidiTarget, *, ticks_per_beat: int = 480) -> None:
    """Write a type 1 MIDI file: a conductor track (tempo, a time signature at every meter change),
    then one track per score track. Drums go on channel 10; melodic tracks take channels 1-16 in
    order, skipping 10, wrapping after 15. Ticks are rescaled from the score's resolution,
    rounding halves up; notes with velocity 0 are left out. OSError from the target propagates.
    """
    if ticks_per_beat < 1 or ticks_per_beat > 0x7FFF:
        raise ValueError(f"ticks_per_beat must be in 1..32767, got {ticks_per_beat}")
    bar_bounds = score.bar_starts()
    midi = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    midi.tracks.append(_conductor_track(score, bar_bounds, ticks_per_beat))

    notes = score.notes
    absolute_onset = bar_bounds[notes.bar] + notes.onset
    note_on = _to_file_ticks(absolute_onset, score.resolution, ticks_per_beat)
    note_off = _to_file_ticks(absolute_onset + notes.duration, score.resolution, ticks_per_beat)
    by_track = np.argsort(notes.track, kind="stable")
    track_bounds = np.searchsorted(notes.track[by_track], np.arange(score.n_tracks + 1))
    melodic_index = 0
    for track_index, info in enumerate(score.track_info):
        if info.is_drum:
            channel = DRUM_CHANNEL
        else:
            channel = MELODIC_CHANNELS[melodic_index % len(MELODIC_CHANNELS)]
            melodic_index += 1
        in_track = by_track[track_bounds[track_index] : track_bounds[track_index + 1]]
        in_track = in_track[notes.velocity[in_track] > 0]
        midi.tracks.append(
            _note_track(
                info,
                channel,
                note_on[in_track],
                note_off[in_track],
                notes.pitch[in_track],
                notes.velocity[in_track],
            )
        )
    if isinstance(path_or_file, (str, os.PathLike)):
        midi.save(filename=os.fspath(path_or_file))
    else:
        midi.save(file=path_or_file)


def _to_file_ticks(ticks: np.ndarray, resolution: int, ticks_per_beat: int) -> np.ndarray:
    """Score ticks → file ticks, rounding to nearest with exact halves up."""
    scaled = 2 * np.asarray(ticks, dtype=np.int64) * ticks_per_beat + resolution
    return scaled // (2 * resolution)


def _conductor_track(score: Score, bar_bounds: np.ndarray, ticks_per_beat: int) -> mido.MidiTrack:
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=int(score.tempo), time=0))
    meters = score.time_signatures
    change_bars = np.flatnonzero(np.any(meters[1:] != meters[:-1], axis=1)) + 1
    if len(meters):
        change_bars = np.concatenate([[0], change_bars])
    change_ticks = _to_file_ticks(bar_bounds[change_bars], score.resolution, ticks_per_beat)
    previous = 0
    for bar_index, tick in zip(change_bars.tolist(), change_ticks.tolist(), strict=True):
        numerator, denominator = (int(x) for x in meters[bar_index])
        if denominator & (denominator - 1) or not 1 <= numerator <= 255:
            raise MidiFileError(
                f"bar {bar_index}: time signature {numerator}/{denominator} cannot be stored in a MIDI file "
                "(the denominator must be a power of two and the numerator 1..255)"
            )
        track.append(
            mido.MetaMessage(
                "time_signature", numerator=numerator, denominator=denominator, time=tick - previous
            )
        )
        previous = tick
    score_end = int(_to_file_ticks(bar_bounds[-1], score.resolution, ticks_per_beat))
    track.append(mido.MetaMessage("end_of_track", time=max(0, score_end - previous)))
    return track


def _note_track(
    info: TrackInfo,
    channel: int,
    on: np.ndarray,
    off: np.ndarray,
    pitch: np.ndarray,
    velocity: np.ndarray,
) -> mido.MidiTrack:
    track = mido.MidiTrack()
    if info.name:
        track.append(mido.MetaMessage("track_name", name=info.name, time=0))
    track.append(mido.Message("program_change", channel=channel, program=int(info.program), time=0))
    n = len(on)
    ticks = np.concatenate([off, on])
    is_on = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    # Offs before ons at the same tick, so a note ending where a same-pitch note starts stays two notes.
    order = np.lexsort((is_on, ticks))
    deltas = np.diff(ticks[order], prepend=0)
    pitches = np.concatenate([pitch, pitch])[order].tolist()
    velocities = np.concatenate([np.zeros(n, np.int64), velocity])[order].tolist()
    for delta, on_flag, note, vel in zip(
        deltas.tolist(), is_on[order].tolist(), pitches, velocities, strict=True
    ):
        kind = "note_on" if on_flag else "note_off"
        track.append(mido.Message(kind, channel=channel, note=note, velocity=vel, time=delta))
    return track
