"""MIDI file input/output: path-B quantisation, bar grid, tracks, errors and the round trip.

Every MIDI file here is built with mido inside the test; none is stored in the repository.
"""

from __future__ import annotations

import functools
import io
import random
from pathlib import Path

import mido
import numpy as np
import pytest

from sideman.engine.midi_io import (
    MidiFileError,
    TimeSignatureError,
    _symusic_events,
    read_midi,
    write_midi,
)
from sideman.engine.score import NoteArrays, Score, TrackInfo

BACKENDS = ["symusic", "mido"]


@pytest.fixture(params=BACKENDS)
def read(request):
    """read_midi with each backend: every reading test runs against both."""
    return functools.partial(read_midi, backend=request.param)


# Notes given to the file builders below: (channel, pitch, onset_tick, offset_tick, velocity)


def _note_messages(notes, end_tick=None):
    """Absolute-tick note events → delta-timed messages (offs first at equal ticks)."""
    events = []
    for channel, pitch, on, off, velocity in notes:
        events.append(
            (on, 1, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity))
        )
        events.append((off, 0, mido.Message("note_off", channel=channel, note=pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1]))
    return _delta([(tick, msg) for tick, _, msg in events], end_tick)


def _delta(timed, end_tick=None):
    """(absolute tick, message) pairs in order → a MidiTrack with delta times."""
    track, previous = mido.MidiTrack(), 0
    for tick, msg in timed:
        track.append(msg.copy(time=tick - previous))
        previous = tick
    if end_tick is not None:
        track.append(mido.MetaMessage("end_of_track", time=end_tick - previous))
    return track


def _meter_track(meters=(), tempo=None):
    """Conductor track from (tick, numerator, denominator) triples."""
    timed = [(0, mido.MetaMessage("set_tempo", tempo=tempo))] if tempo else []
    timed += [
        (t, mido.MetaMessage("time_signature", numerator=n, denominator=d)) for t, n, d in meters
    ]
    return _delta(timed)


def _midi_bytes(tracks, *, ticks_per_beat=480, type=1) -> bytes:
    midi = mido.MidiFile(type=type, ticks_per_beat=ticks_per_beat)
    midi.tracks.extend(tracks)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def _rows(score: Score) -> list[tuple[int, ...]]:
    return [tuple(int(x) for x in row) for row in score.notes.as_table()]


# ---- file types, tracks, programs, drums ----------------------------------------------------------
def test_type_0_file_gives_one_track_per_channel_in_channel_order(read):
    track = _note_messages([(3, 64, 0, 480, 80), (0, 60, 0, 480, 90), (9, 36, 480, 500, 100)])
    track.insert(0, mido.MetaMessage("track_name", name="song"))
    track.insert(1, mido.Message("program_change", channel=3, program=40))
    score = read(_midi_bytes([track], type=0))
    assert [(t.program, t.is_drum) for t in score.track_info] == [
        (0, False),
        (40, False),
        (0, True),
    ]
    assert [t.name for t in score.track_info] == ["song"] * 3
    assert _rows(score) == [(0, 0, 0, 12, 60, 90), (1, 0, 0, 12, 64, 80), (2, 0, 12, 1, 36, 100)]


def test_type_1_file_gives_one_track_per_midi_track_and_channel(read, tmp_path: Path):
    piano = _note_messages([(0, 60, 0, 960, 90)])
    piano.insert(0, mido.MetaMessage("track_name", name="Piano"))
    bass = _note_messages([(1, 40, 0, 480, 70), (2, 41, 480, 960, 70)])
    bass.insert(0, mido.MetaMessage("track_name", name="Bass"))
    path = tmp_path / "two_tracks.mid"
    path.write_bytes(_midi_bytes([_meter_track(), piano, bass]))
    score = read(path)
    assert [t.name for t in score.track_info] == ["Piano", "Bass", "Bass"]
    assert _rows(score) == [(0, 0, 0, 24, 60, 90), (1, 0, 0, 12, 40, 70), (2, 0, 12, 12, 41, 70)]


def test_program_is_the_last_change_before_the_first_note_of_that_channel(read):
    timed = [
        (0, mido.Message("program_change", channel=0, program=10)),
        (0, mido.Message("program_change", channel=0, program=24)),
        (0, mido.Message("program_change", channel=1, program=56)),
        (240, mido.Message("note_on", channel=0, note=60, velocity=90)),
        (
            480,
            mido.Message("program_change", channel=0, program=99),
        ),  # after the first note: ignored
        (480, mido.Message("note_on", channel=1, note=67, velocity=90)),
        (960, mido.Message("note_off", channel=0, note=60)),
        (960, mido.Message("note_off", channel=1, note=67)),
        (960, mido.Message("note_on", channel=2, note=50, velocity=90)),  # no program change: 0
        (1200, mido.Message("note_off", channel=2, note=50)),
    ]
    score = read(_midi_bytes([_delta(timed)], type=0))
    assert [t.program for t in score.track_info] == [24, 56, 0]


def test_channel_10_is_a_drum_track(read):
    track = _note_messages([(9, 36, 0, 120, 100), (9, 42, 0, 60, 90), (0, 60, 0, 480, 80)])
    score = read(_midi_bytes([track]))
    assert [t.is_drum for t in score.track_info] == [False, True]
    assert _rows(score)[1:] == [(1, 0, 0, 3, 36, 100), (1, 0, 0, 2, 42, 90)]


def test_tempo_is_the_first_set_tempo_or_120_bpm(read):
    notes = _note_messages([(0, 60, 0, 480, 80)])
    assert read(_midi_bytes([_meter_track(tempo=400_000), notes])).tempo == 400_000
    assert read(_midi_bytes([notes])).tempo == 500_000


# ---- note pairing ---------------------------------------------------------------------------------
def test_note_on_with_velocity_0_releases_the_note(read):
    timed = [
        (0, mido.Message("note_on", note=60, velocity=90)),
        (240, mido.Message("note_on", note=60, velocity=0)),
    ]
    assert _rows(read(_midi_bytes([_delta(timed)]))) == [(0, 0, 0, 6, 60, 90)]


def test_same_pitch_overlapping_notes_pair_first_in_first_out(read):
    timed = [
        (0, mido.Message("note_on", note=60, velocity=90)),
        (120, mido.Message("note_on", note=60, velocity=50)),
        (480, mido.Message("note_off", note=60)),
        (960, mido.Message("note_off", note=60)),
    ]
    assert _rows(read(_midi_bytes([_delta(timed)]))) == [
        (0, 0, 0, 12, 60, 90),
        (0, 0, 3, 21, 60, 50),
    ]


def test_note_never_released_ends_at_the_end_of_its_track(read):
    timed = [(0, mido.Message("note_on", note=60, velocity=90))]
    assert _rows(read(_midi_bytes([_delta(timed, end_tick=1440)]))) == [(0, 0, 0, 36, 60, 90)]


def test_zero_length_note_lasts_one_tick(read):
    assert _rows(read(_midi_bytes([_note_messages([(0, 60, 480, 480, 90)])]))) == [
        (0, 0, 12, 1, 60, 90)
    ]


# ---- bars and meters ------------------------------------------------------------------------------
def test_missing_time_signature_is_4_4_and_bars_run_to_the_last_note_end(read):
    score = read(
        _midi_bytes(
            [_note_messages([(0, 60, 0, 480, 90), (0, 62, 1920 * 2 + 480, 1920 * 3 + 30, 90)])]
        )
    )
    assert score.time_signatures.tolist() == [[4, 4]] * 4
    assert score.resolution == 12


def test_note_ending_on_a_bar_line_adds_no_bar(read):
    score = read(_midi_bytes([_note_messages([(0, 60, 0, 1920, 90)])]))
    assert score.n_bars == 1


def test_empty_file_has_one_4_4_bar_and_no_tracks(read):
    score = read(_midi_bytes([mido.MidiTrack()]))
    assert score.time_signatures.tolist() == [[4, 4]]
    assert score.n_tracks == 0 and len(score.notes) == 0


def test_meter_map_places_bars_and_bar_relative_onsets(read):
    # 3/4 for two bars (1440 ticks each), then 7/8 (1680 ticks).
    conductor = _meter_track([(0, 3, 4), (2880, 7, 8)])
    notes = _note_messages(
        [(0, 60, 1440 + 240, 1440 + 480, 90), (0, 62, 2880 + 1680 + 40, 2880 + 1680 + 80, 90)]
    )
    score = read(_midi_bytes([conductor, notes]))
    assert score.time_signatures.tolist() == [[3, 4], [3, 4], [7, 8], [7, 8]]
    assert _rows(score) == [(0, 1, 6, 6, 60, 90), (0, 3, 1, 1, 62, 90)]


def test_meter_change_off_a_bar_line_cuts_the_bar_and_labels_it_by_its_length(read):
    # 4/4 changes to 6/8 three beats into bar 1: bar 1 becomes a 3/4 bar.
    conductor = _meter_track([(0, 4, 4), (1920 + 1440, 6, 8)])
    notes = _note_messages([(0, 60, 1920 + 1440, 1920 + 1680, 90)])
    score = read(_midi_bytes([conductor, notes]))
    assert score.time_signatures.tolist() == [[4, 4], [3, 4], [6, 8]]
    assert _rows(score) == [(0, 2, 0, 6, 60, 90)]
    np.testing.assert_array_equal(score.bar_starts(), [0, 48, 84, 120])


def test_restated_meter_off_a_bar_line_is_not_a_change(read):
    conductor = _meter_track([(0, 4, 4), (1000, 4, 4)])
    score = read(_midi_bytes([conductor, _note_messages([(0, 60, 1920, 1930, 90)])]))
    assert score.time_signatures.tolist() == [[4, 4], [4, 4]]


def test_unknown_meter_error_names_the_bar_the_meter_and_the_skip_option(read):
    conductor = _meter_track([(0, 4, 4), (3840, 5, 16), (3840 + 600, 4, 4)])
    notes = _note_messages(
        [(0, 60, 0, 480, 90), (0, 62, 3840 + 120, 3840 + 240, 90), (0, 64, 4440, 4920, 90)]
    )
    with pytest.raises(TimeSignatureError) as caught:
        read(_midi_bytes([conductor, notes]))
    message = str(caught.value)
    assert "bar 2 " in message and "5/16" in message and "MIDI tick 3840" in message
    assert "skip_unknown_time_signatures=True" in message and "--skip-unknown-meters" in message


def test_skip_unknown_meters_drops_those_bars_and_their_notes(read):
    conductor = _meter_track([(0, 4, 4), (3840, 5, 16), (3840 + 600, 3, 4)])
    notes = _note_messages(
        [(0, 60, 0, 480, 90), (0, 62, 3840 + 120, 3840 + 240, 90), (0, 64, 4440, 4920, 90)]
    )
    score = read(_midi_bytes([conductor, notes]), skip_unknown_time_signatures=True)
    assert score.time_signatures.tolist() == [[4, 4], [4, 4], [3, 4]]
    assert _rows(score) == [(0, 0, 0, 12, 60, 90), (0, 2, 0, 12, 64, 90)]


def test_skip_with_every_bar_unknown_is_an_error(read):
    data = _midi_bytes([_meter_track([(0, 5, 16)]), _note_messages([(0, 60, 0, 100, 90)])])
    with pytest.raises(TimeSignatureError, match="no bars are left"):
        read(data, skip_unknown_time_signatures=True)


# ---- path B rounding ------------------------------------------------------------------------------
@pytest.mark.parametrize("ticks_per_beat", [480, 96, 960])
def test_onsets_and_offsets_round_to_the_12_grid_with_halves_up(read, ticks_per_beat):
    per_grid_tick = ticks_per_beat // 12
    half = per_grid_tick // 2
    notes = [
        (0, 60, half, 5 * per_grid_tick + half, 90),  # exact halves: onset 1, offset 6
        (0, 61, half - 1, 5 * per_grid_tick + half - 1, 90),  # just below: onset 0, offset 5
        (
            0,
            62,
            7 * per_grid_tick + half + 1,
            9 * per_grid_tick,
            90,
        ),  # just above: onset 8, offset 9
    ]
    score = read(_midi_bytes([_note_messages(notes)], ticks_per_beat=ticks_per_beat))
    assert _rows(score) == [(0, 0, 0, 5, 61, 90), (0, 0, 1, 5, 60, 90), (0, 0, 8, 1, 62, 90)]


def test_note_rounded_onto_the_bar_end_is_dropped(read):
    # 480 tpq: 40 source ticks per grid tick. 1900 is half a grid tick before the bar line.
    notes = [(0, 60, 1900, 2400, 90), (0, 61, 1899, 2400, 90), (0, 62, 1920, 2400, 90)]
    score = read(_midi_bytes([_note_messages(notes)]))
    assert _rows(score) == [(0, 0, 47, 13, 61, 90), (0, 1, 0, 12, 62, 90)]


def test_durations_run_past_the_bar_end(read):
    score = read(_midi_bytes([_note_messages([(0, 60, 1440, 1920 + 960, 90)])]))
    assert _rows(score) == [(0, 0, 36, 36, 60, 90)]
    assert score.n_bars == 2


def test_resolution_argument_sets_the_grid(read):
    score = read(_midi_bytes([_note_messages([(0, 60, 240, 480, 90)])]), resolution=24)
    assert score.resolution == 24 and _rows(score) == [(0, 0, 12, 12, 60, 90)]


# ---- errors ---------------------------------------------------------------------------------------
def test_non_midi_bytes_raise_midi_file_error_naming_the_file(read, tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not a MIDI file at all")
    with pytest.raises(MidiFileError, match="notes.txt"):
        read(path)


def test_truncated_file_raises_midi_file_error(read, tmp_path: Path):
    data = _midi_bytes([_note_messages([(0, 60, 0, 480, 90), (0, 62, 480, 960, 90)])])
    path = tmp_path / "cut.mid"
    path.write_bytes(data[:-7])
    with pytest.raises(MidiFileError, match="cut.mid.*truncated"):
        read(path)


def test_missing_file_raises_midi_file_error(read, tmp_path: Path):
    with pytest.raises(MidiFileError, match="absent.mid"):
        read(tmp_path / "absent.mid")


def test_type_2_file_is_rejected(read):
    with pytest.raises(MidiFileError, match="type 2"):
        read(_midi_bytes([_note_messages([(0, 60, 0, 480, 90)])], type=2))


# ---- writing --------------------------------------------------------------------------------------
def _score(rows, meters, tracks, resolution=12) -> Score:
    return Score(
        resolution=resolution,
        time_signatures=np.asarray(meters),
        track_info=tracks,
        notes=NoteArrays.from_rows(rows),
        tempo=600_000,
    )


def _written(score: Score, **kwargs) -> mido.MidiFile:
    buffer = io.BytesIO()
    write_midi(score, buffer, **kwargs)
    return mido.MidiFile(file=io.BytesIO(buffer.getvalue()))


def test_write_puts_tempo_and_meter_changes_on_the_conductor_track():
    score = _score([(0, 3, 0, 12, 60, 90)], [[4, 4], [4, 4], [7, 8], [3, 4]], [TrackInfo()])
    midi = _written(score)
    assert midi.type == 1 and len(midi.tracks) == 2
    tick, events = 0, []
    for msg in midi.tracks[0]:
        tick += msg.time
        if msg.type in ("set_tempo", "time_signature"):
            events.append(
                (tick, msg.type, getattr(msg, "tempo", None) or (msg.numerator, msg.denominator))
            )
    assert events == [
        (0, "set_tempo", 600_000),
        (0, "time_signature", (4, 4)),
        (3840, "time_signature", (7, 8)),
        (3840 + 1680, "time_signature", (3, 4)),
    ]


def test_write_assigns_channels_skipping_10_and_wrapping():
    tracks = [TrackInfo(program=p) for p in range(16)] + [
        TrackInfo(program=3, is_drum=True, name="Kit")
    ]
    rows = [(t, 0, 0, 6, 60, 90) for t in range(17)]
    midi = _written(_score(rows, [[4, 4]], tracks))
    channels = [next(m.channel for m in track if m.type == "note_on") for track in midi.tracks[1:]]
    assert channels == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 0, 9]
    drum = midi.tracks[-1]
    assert drum[0].type == "track_name" and drum[0].name == "Kit"
    assert [(m.channel, m.program) for m in drum if m.type == "program_change"] == [(9, 3)]


def test_write_puts_offs_before_ons_at_the_same_tick_and_skips_velocity_0():
    rows = [(0, 0, 0, 12, 60, 90), (0, 0, 12, 12, 60, 80), (0, 0, 24, 6, 64, 0)]
    midi = _written(_score(rows, [[4, 4]], [TrackInfo()]), ticks_per_beat=96)
    tick, events = 0, []
    for msg in midi.tracks[1]:
        tick += msg.time
        if msg.type in ("note_on", "note_off"):
            events.append((tick, msg.type, msg.note))
    assert events == [
        (0, "note_on", 60),
        (96, "note_off", 60),
        (96, "note_on", 60),
        (192, "note_off", 60),
    ]


def test_round_trip_keeps_notes_meters_and_tracks(read, tmp_path: Path):
    meters = [[4, 4], [3, 4], [7, 8], [7, 8], [6, 8], [5, 4], [4, 4]]
    tracks = [
        TrackInfo(program=0, name="Piano"),
        TrackInfo(program=33, name="Bass"),
        TrackInfo(program=0, is_drum=True, name="Drums"),
        TrackInfo(program=48, name="Strings"),
    ]
    rows = [
        (0, 0, 0, 12, 60, 90),
        (0, 0, 3, 12, 64, 70),
        (0, 0, 45, 30, 67, 100),  # crosses into the 3/4 bar
        (0, 1, 0, 6, 60, 90),
        (0, 1, 3, 6, 60, 80),  # same pitch, overlapping (first in, first out)
        (0, 2, 41, 1, 72, 90),
        (0, 3, 0, 96, 48, 60),  # 96 ticks runs over two bars
        (1, 0, 0, 24, 36, 100),
        (1, 4, 35, 40, 38, 100),
        (1, 5, 59, 1, 40, 100),
        (2, 0, 0, 1, 36, 120),
        (2, 0, 6, 1, 42, 80),
        (2, 2, 40, 1, 38, 90),
        (2, 6, 47, 1, 49, 127),
        (3, 6, 0, 48, 55, 40),
        (3, 6, 0, 48, 59, 40),
    ]
    score = _score(rows, meters, tracks)
    path = tmp_path / "round_trip.mid"
    write_midi(score, path)
    back = read(path)
    assert back.time_signatures.tolist() == meters
    assert _rows(back) == _rows(score)
    assert [(t.program, t.is_drum, t.name) for t in back.track_info] == [
        (t.program, t.is_drum, t.name) for t in tracks
    ]
    assert back.tempo == 600_000


def test_round_trip_through_score_methods(tmp_path: Path):
    score = _score([(0, 1, 5, 7, 62, 64)], [[6, 8], [6, 8]], [TrackInfo(program=5)])
    score.to_midi(tmp_path / "s.mid", ticks_per_beat=960)
    assert _rows(Score.from_midi(tmp_path / "s.mid")) == _rows(score)


def test_bar_cut_to_an_unknown_length_says_it_was_cut_short(read):
    # 4/4 changed to 3/4 one and a quarter beats into bar 1: the cut bar is 5/16, not in the list.
    conductor = _meter_track([(0, 4, 4), (1920 + 600, 3, 4)])
    notes = _note_messages([(0, 60, 0, 480, 90), (0, 62, 1920 + 600, 1920 + 1080, 90)])
    with pytest.raises(TimeSignatureError, match=r"bar 1 .*5/16.*cut short"):
        read(_midi_bytes([conductor, notes]))
    score = read(_midi_bytes([conductor, notes]), skip_unknown_time_signatures=True)
    assert score.time_signatures.tolist() == [[4, 4], [3, 4]]
    assert _rows(score) == [(0, 0, 0, 12, 60, 90), (0, 1, 0, 12, 62, 90)]


# ---- the symusic backend against the mido reference -----------------------------------------------
def _outcome(data: bytes, backend: str, **kwargs):
    """Everything a Score holds, or the error read_midi raised."""
    try:
        score = read_midi(data, backend=backend, **kwargs)
    except MidiFileError as exc:
        return (type(exc).__name__, str(exc))
    return (
        _rows(score),
        score.time_signatures.tolist(),
        [(t.program, t.is_drum, t.name) for t in score.track_info],
        int(score.tempo),
        score.resolution,
    )


def _random_track(rng: random.Random, channels, length: int, *, unusual: bool):
    """Random messages for one MIDI track: overlapping same-pitch notes, velocity-0 offs, notes
    never released, program changes (before the notes, or with ``unusual`` anywhere), names."""
    timed = []
    if rng.random() < 0.7:
        timed.append((0, mido.MetaMessage("track_name", name=rng.choice(["Piano", "Bass", ""]))))
    if unusual and rng.random() < 0.3:
        timed.append((rng.randrange(length), mido.MetaMessage("track_name", name="Gr\u00fcn")))
    for channel in channels:
        if rng.random() < 0.8:
            timed.append(
                (0, mido.Message("program_change", channel=channel, program=rng.randrange(128)))
            )
        if unusual and rng.random() < 0.4:
            tick = rng.randrange(length)
            timed.append(
                (tick, mido.Message("program_change", channel=channel, program=rng.randrange(128)))
            )
        pitches = rng.sample(range(30, 90), 4)
        for _ in range(rng.randrange(1, 25)):
            on = rng.randrange(length)
            pitch, velocity = rng.choice(pitches), rng.randrange(1, 128)
            timed.append(
                (on, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity))
            )
            if rng.random() < 0.93:  # else never released
                off = on + rng.choice([0, 1, rng.randrange(length // 4 + 1)])
                kind = rng.choice(["note_off", "note_on"])  # note_on velocity 0 is an off
                timed.append((off, mido.Message(kind, channel=channel, note=pitch, velocity=0)))
    timed.sort(key=lambda event: event[0])  # stable: same-tick events keep their order
    last = max([length] + [tick for tick, _ in timed])
    return _delta(timed, end_tick=last + rng.choice([0, 0, 37]))


def _random_conductor(rng: random.Random, ticks_per_beat: int, length: int):
    meters = [(4, 4), (3, 4), (6, 8), (2, 4), (7, 8), (5, 4), (12, 8)]
    timed = []
    if rng.random() < 0.8:
        timed.append((0, mido.MetaMessage("set_tempo", tempo=rng.randrange(300_000, 900_000))))
    if rng.random() < 0.3:
        tick = rng.randrange(length)
        timed.append((tick, mido.MetaMessage("set_tempo", tempo=rng.randrange(300_000, 900_000))))
    for _ in range(rng.randrange(3)):
        n, d = rng.choice(meters)
        bar = ticks_per_beat * 4 * n // d
        tick = rng.choice([0, bar * rng.randrange(1, 4), rng.randrange(length)])
        timed.append((tick, mido.MetaMessage("time_signature", numerator=n, denominator=d)))
    timed.sort(key=lambda event: event[0])
    return _delta(timed)


def _random_midi(seed: int) -> bytes:
    rng = random.Random(seed)
    ticks_per_beat = rng.choice([96, 120, 192, 384, 480, 960, 1000, 17])
    length = ticks_per_beat * rng.randrange(2, 24)
    unusual = rng.random() < 0.4
    every_channel = list(range(16))
    if rng.random() < 0.3:  # type 0: one track, several channels
        channels = rng.sample(every_channel, rng.randrange(1, 6))
        track = _random_track(rng, channels, length, unusual=unusual)
        conductor = _random_conductor(rng, ticks_per_beat, length)
        merged = mido.merge_tracks([conductor, track])
        return _midi_bytes([merged], ticks_per_beat=ticks_per_beat, type=0)
    tracks = [_random_conductor(rng, ticks_per_beat, length)]
    for _ in range(rng.randrange(1, 5)):
        # Usually one channel a track; sometimes several, sometimes a channel another track uses.
        n_channels = 1 if rng.random() < 0.6 else rng.randrange(2, 4)
        channels = rng.sample([0, 1, 2, 9] if unusual else every_channel, n_channels)
        tracks.append(_random_track(rng, channels, length, unusual=unusual))
    return _midi_bytes(tracks, ticks_per_beat=ticks_per_beat)


def test_symusic_backend_matches_mido_on_random_files():
    fast = 0
    for seed in range(400):
        data = _random_midi(seed)
        for skip in (False, True):
            expected = _outcome(data, "mido", skip_unknown_time_signatures=skip)
            assert _outcome(data, "symusic", skip_unknown_time_signatures=skip) == expected, seed
        fast += _symusic_events(data) is not None
    assert fast >= 150  # most of these files take the symusic path, not the mido fallback


def _typical_file(tracks_channels=((0,), (1,), (9,)), unreleased=False):
    conductor = _meter_track([(0, 3, 4), (1440 * 2, 4, 4)], tempo=450_000)
    tracks = [conductor]
    for i, channels in enumerate(tracks_channels):
        timed = [(0, mido.MetaMessage("track_name", name=f"T{i}"))]
        timed += [
            (0, mido.Message("program_change", channel=c, program=5 * i + c)) for c in channels
        ]
        for c in channels:
            for k in range(20):
                timed.append(
                    (k * 240, mido.Message("note_on", channel=c, note=60 + k % 3, velocity=90))
                )
                timed.append(
                    (k * 240 + 300, mido.Message("note_on", channel=c, note=60 + k % 3, velocity=0))
                )
        if unreleased:
            timed.append((5000, mido.Message("note_on", channel=channels[0], note=70, velocity=80)))
        timed.sort(key=lambda event: event[0])
        tracks.append(_delta(timed, end_tick=6000))
    return _midi_bytes(tracks)


def _type_0(data: bytes) -> bytes:
    """A type 1 file merged into one track that keeps only the first track name."""
    merged = mido.merge_tracks(mido.MidiFile(file=io.BytesIO(data)).tracks)
    names = [i for i, msg in enumerate(merged) if msg.type == "track_name"]
    for i in reversed(names[1:]):
        if i + 1 < len(merged):
            merged[i + 1] = merged[i + 1].copy(time=merged[i + 1].time + merged[i].time)
        del merged[i]
    return _midi_bytes([merged], type=0)


@pytest.mark.parametrize(
    "data",
    [
        _typical_file(),
        _typical_file(((0, 3, 9), (4,)), unreleased=True),
        _type_0(_typical_file(((0, 3, 9), (4, 5)))),
    ],
    ids=["type1", "several-channels-unreleased", "type0"],
)
def test_symusic_backend_reads_ordinary_files_without_the_mido_fallback(data):
    assert _symusic_events(data) is not None
    assert _outcome(data, "symusic") == _outcome(data, "mido")


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        read_midi(_midi_bytes([mido.MidiTrack()]), backend="pretty_midi")


@pytest.mark.parametrize("cut", [1, 5, 13, 14, 20, 30, 40, 60])
def test_truncated_and_damaged_files_fail_the_same_way_with_both_backends(cut):
    data = _typical_file()
    for damaged in (data[:cut], data[:cut] + bytes(7), data[:cut] + b"\xf4" + data[cut + 1 :]):
        assert _outcome(damaged, "symusic") == _outcome(damaged, "mido")
