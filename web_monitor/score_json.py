"""The HTTP API's score JSON (spec/http-api.md) to and from ``sideman.engine.score.Score``.

Shape (times are ticks of ``resolution`` per quarter note; ``start``/``end`` count from the start
of the note's bar, so ``end`` may run past the bar line but ``start`` may not)::

    {"resolution": 480, "tempo": 500000,
     "tracks": [{"instrument": 0, "track_type": "melodic", "name": "",
                 "bars": [{"ts_numerator": 4, "ts_denominator": 4,
                           "notes": [{"pitch": 60, "velocity": 90, "start": 0, "end": 480}]}]}]}

Every track holds the same bar grid (a ``Score`` has one meter per bar, shared by all tracks).
Parsing checks every value at the edge and raises ``ScoreJsonError`` whose ``field`` is the path
of the offending value, e.g. ``score.tracks[0].bars[2].notes[1].pitch``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.vocab import EncoderConfig

TRACK_TYPES = ("melodic", "drum")
MAX_TEMPO = 0xFFFFFF  # a MIDI set-tempo event holds 24 bits of microseconds per quarter
DEFAULT_TEMPO = 500_000
PITCH_RANGE = (0, 127)
VELOCITY_RANGE = (1, 127)  # velocity 0 is a note-off in MIDI, so a sounding note needs >= 1

_SCORE_FIELDS = {"resolution": True, "tempo": False, "tracks": True}  # name -> required
_TRACK_FIELDS = {"instrument": False, "track_type": False, "name": False, "bars": True}
_BAR_FIELDS = {"ts_numerator": True, "ts_denominator": True, "notes": False}
_NOTE_FIELDS = {"pitch": True, "velocity": True, "start": True, "end": True}


class ScoreJsonError(ValueError):
    """Score JSON that cannot become a ``Score``; ``field`` is the path of the offending value."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---- small checks that name the field -------------------------------------------------------------


def _object(value: Any, where: str, known: Mapping[str, bool]) -> Mapping[str, Any]:
    """A JSON object with only ``known`` keys and every required one present."""
    if not isinstance(value, Mapping):
        raise ScoreJsonError(where, f"expected an object, got {_json_type(value)}")
    for key in value:
        if key not in known:
            hint = difflib.get_close_matches(str(key), list(known), n=1)
            suggestion = (
                f" (did you mean {hint[0]!r}?)" if hint else f"; known fields: {list(known)}"
            )
            raise ScoreJsonError(f"{where}.{key}", f"unknown field{suggestion}")
    for key, required in known.items():
        if required and key not in value:
            raise ScoreJsonError(f"{where}.{key}", "missing required field")
    return value


def _list(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise ScoreJsonError(where, f"expected a list, got {_json_type(value)}")
    return value


def _int_in(value: Any, where: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScoreJsonError(where, f"expected an integer, got {_json_type(value)} {value!r:.40}")
    if value < low or (high is not None and value > high):
        limit = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ScoreJsonError(where, f"must be {limit}, got {value}")
    return value


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    if value is None:
        return "null"
    return names.get(type(value), "object" if isinstance(value, Mapping) else type(value).__name__)


# ---- parsing --------------------------------------------------------------------------------------


def score_from_json(data: Any, encoder_config: EncoderConfig, where: str = "score") -> Score:
    """Parse and check score JSON; the meters must be in ``encoder_config``'s vocabulary."""
    data = _object(data, where, _SCORE_FIELDS)
    resolution = _int_in(data["resolution"], f"{where}.resolution", 1, 1 << 15)
    tempo = _int_in(data.get("tempo", DEFAULT_TEMPO), f"{where}.tempo", 1, MAX_TEMPO)
    tracks = _list(data["tracks"], f"{where}.tracks")
    if not tracks:
        raise ScoreJsonError(f"{where}.tracks", "a score needs at least one track")
    infos: list[TrackInfo] = []
    rows: list[tuple[int, int, int, int, int, int]] = []
    meters: list[tuple[int, int]] = []  # the bar grid, set by tracks[0]
    for track_index, raw_track in enumerate(tracks):
        track_where = f"{where}.tracks[{track_index}]"
        info, bars = _parse_track(raw_track, track_where)
        infos.append(info)
        if not bars:
            raise ScoreJsonError(f"{track_where}.bars", "a track needs at least one bar")
        if track_index and len(bars) != len(meters):
            raise ScoreJsonError(
                f"{track_where}.bars",
                f"{len(bars)} bars, but tracks[0] has {len(meters)}; every track needs the same bar grid",
            )
        for bar_index, raw_bar in enumerate(bars):
            bar_where = f"{track_where}.bars[{bar_index}]"
            meter = _parse_meter(raw_bar, bar_where, resolution, encoder_config)
            if not track_index:
                meters.append(meter)
            elif meter != meters[bar_index]:
                raise ScoreJsonError(
                    bar_where,
                    f"meter {meter[0]}/{meter[1]} differs from tracks[0]'s "
                    f"{meters[bar_index][0]}/{meters[bar_index][1]}; every track shares the bar grid",
                )
            bar_ticks = resolution * 4 * meter[0] // meter[1]
            for note_index, raw_note in enumerate(
                _list(raw_bar.get("notes", []), f"{bar_where}.notes")
            ):
                note = _parse_note(raw_note, f"{bar_where}.notes[{note_index}]", bar_ticks)
                rows.append((track_index, bar_index, *note))
    score = Score(
        resolution=resolution,
        time_signatures=np.asarray(meters, dtype=np.int32),
        track_info=infos,
        tempo=tempo,
    )
    return score.with_notes(NoteArrays.from_rows(rows)) if rows else score


def _parse_track(raw: Any, where: str) -> tuple[TrackInfo, Sequence[Any]]:
    track = _object(raw, where, _TRACK_FIELDS)
    instrument = _int_in(track.get("instrument", 0), f"{where}.instrument", 0, 127)
    track_type = track.get("track_type", "melodic")
    if track_type not in TRACK_TYPES:
        raise ScoreJsonError(
            f"{where}.track_type", f"must be one of {list(TRACK_TYPES)}, got {track_type!r:.40}"
        )
    name = track.get("name", "")
    if not isinstance(name, str):
        raise ScoreJsonError(f"{where}.name", f"expected a string, got {_json_type(name)}")
    info = TrackInfo(program=instrument, is_drum=track_type == "drum", name=name)
    return info, _list(track["bars"], f"{where}.bars")


def _parse_meter(
    raw: Any, where: str, resolution: int, encoder_config: EncoderConfig
) -> tuple[int, int]:
    bar = _object(raw, where, _BAR_FIELDS)
    numerator = _int_in(bar["ts_numerator"], f"{where}.ts_numerator", 1)
    denominator = _int_in(bar["ts_denominator"], f"{where}.ts_denominator", 1)
    if encoder_config.time_signature_index(numerator, denominator) < 0:
        raise ScoreJsonError(
            f"{where}.ts_numerator",
            f"meter {numerator}/{denominator} is not in the {encoder_config.name} vocabulary's "
            f"time signatures {[f'{n}/{d}' for n, d in encoder_config.time_signatures]}",
        )
    if (resolution * 4 * numerator) % denominator:
        raise ScoreJsonError(
            f"{where}.ts_denominator",
            f"a {numerator}/{denominator} bar is not a whole number of ticks at resolution "
            f"{resolution}; use a resolution such as 480",
        )
    return numerator, denominator


def _parse_note(raw: Any, where: str, bar_ticks: int) -> tuple[int, int, int, int]:
    """(onset, duration, pitch, velocity) of one note, checked against its bar."""
    note = _object(raw, where, _NOTE_FIELDS)
    pitch = _int_in(note["pitch"], f"{where}.pitch", *PITCH_RANGE)
    velocity = _int_in(note["velocity"], f"{where}.velocity", *VELOCITY_RANGE)
    start = _int_in(note["start"], f"{where}.start", 0, bar_ticks - 1)
    end = _int_in(note["end"], f"{where}.end", 0)
    if end <= start:
        raise ScoreJsonError(f"{where}.end", f"must be > start ({start}), got {end}")
    return start, end - start, pitch, velocity


# ---- writing --------------------------------------------------------------------------------------


def score_to_json(score: Score) -> dict[str, Any]:
    """The JSON shape of ``score`` (notes ordered by start, then pitch, within each bar)."""
    notes = score.notes.sorted()
    per_cell: dict[tuple[int, int], list[dict[str, int]]] = {}
    for track, bar, onset, duration, pitch, velocity in notes.as_table().tolist():
        per_cell.setdefault((track, bar), []).append(
            {"pitch": pitch, "velocity": velocity, "start": onset, "end": onset + duration}
        )
    meters = score.time_signatures.tolist()
    tracks = []
    for track_index, info in enumerate(score.track_info):
        bars = [
            {
                "ts_numerator": numerator,
                "ts_denominator": denominator,
                "notes": per_cell.get((track_index, bar_index), []),
            }
            for bar_index, (numerator, denominator) in enumerate(meters)
        ]
        tracks.append(
            {
                "instrument": int(info.program),
                "track_type": "drum" if info.is_drum else "melodic",
                "name": info.name,
                "bars": bars,
            }
        )
    return {"resolution": int(score.resolution), "tempo": int(score.tempo), "tracks": tracks}


def score_schema() -> dict[str, dict[str, Any]]:
    """JSON Schema (OpenAPI 3.1) components for the score, note and bar shapes above."""
    return {
        "Note": {
            "type": "object",
            "additionalProperties": False,
            "required": list(_NOTE_FIELDS),
            "description": "Times in ticks of the score's resolution from the start of the bar; "
            "start < bar length, end > start (end may pass the bar line).",
            "properties": {
                "pitch": {"type": "integer", "minimum": PITCH_RANGE[0], "maximum": PITCH_RANGE[1]},
                "velocity": {
                    "type": "integer",
                    "minimum": VELOCITY_RANGE[0],
                    "maximum": VELOCITY_RANGE[1],
                },
                "start": {"type": "integer", "minimum": 0},
                "end": {"type": "integer", "minimum": 1},
            },
        },
        "Bar": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ts_numerator", "ts_denominator"],
            "description": "One bar; its meter must be in the model's vocabulary (GET /info) and "
            "the same in every track.",
            "properties": {
                "ts_numerator": {"type": "integer", "minimum": 1},
                "ts_denominator": {"type": "integer", "minimum": 1},
                "notes": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Note"},
                    "default": [],
                },
            },
        },
        "Track": {
            "type": "object",
            "additionalProperties": False,
            "required": ["bars"],
            "properties": {
                "instrument": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 127,
                    "default": 0,
                    "description": "General MIDI program",
                },
                "track_type": {"enum": list(TRACK_TYPES), "default": "melodic"},
                "name": {"type": "string", "default": ""},
                "bars": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": "#/components/schemas/Bar"},
                },
            },
        },
        "Score": {
            "type": "object",
            "additionalProperties": False,
            "required": ["resolution", "tracks"],
            "properties": {
                "resolution": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 1 << 15,
                    "description": "ticks per quarter note of every note time",
                },
                "tempo": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TEMPO,
                    "default": DEFAULT_TEMPO,
                    "description": "microseconds per quarter note (500000 = 120 BPM)",
                },
                "tracks": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": "#/components/schemas/Track"},
                },
            },
        },
    }
