"""Training samples: windows of a hand-built piece come back from the decoder as the window's notes.

The piece has a melodic track and a drum track over 8 bars (six of 4/4, two of 3/4), with pitches
and velocities that name their bar, so a decoded sample says which window and transposition it
came from.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sideman.dsp.attributes import duration_level
from sideman.engine.sampler import Constraints, Grammar
from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.tokenizer import BarMode, Tokenizer
from sideman.engine.train.augment import (
    TIME_SCALES,
    double_octaves,
    grid_ticks,
    hold_some,
    merge_group,
    rearticulate,
    rescale,
    revoice,
    vary_texture,
)
from sideman.engine.train.corpus import Piece
from sideman.engine.train.samples import (
    Sample,
    SampleConfig,
    SampleConfigError,
    SampleError,
    SampleStream,
    validation_set,
)
from sideman.engine.vocab import ATTRIBUTE_NAMES, EncoderConfig, TokenType

YELLOW = EncoderConfig.yellow()
TOKENIZER = Tokenizer(YELLOW)
VOCAB = YELLOW.vocabulary
PLACEHOLDER, FILL_START, FILL_END = (
    VOCAB.encode(TokenType.FILL_IN_PLACEHOLDER),
    VOCAB.encode(TokenType.FILL_IN_START),
    VOCAB.encode(TokenType.FILL_IN_END),
)
PLAIN = SampleConfig(
    infill_probability=0, ar_probability=0, rescale_probability=0, rearticulate_probability=0,
    hold_probability=0,
)
INFILL = SampleConfig(infill_probability=1, ar_probability=0)
AUTOREGRESSIVE = SampleConfig(infill_probability=0, ar_probability=1)


def two_track_piece(top_pitch: int = 72) -> Piece:
    """Melody: four notes a bar (pitch top_pitch - 12 + bar, velocity 60 + 5·bar, a long note in
    bar 2); drums: kick and snare each bar."""
    meters = [(4, 4)] * 6 + [(3, 4)] * 2
    rows = []
    for bar, (numerator, _) in enumerate(meters):
        for beat in range(numerator):
            duration = 120 if (bar, beat) == (2, 0) else 12  # longer than NoteDuration's 96
            rows.append((0, bar, 12 * beat, duration, top_pitch - 12 + bar, 60 + 5 * bar))
        rows.append((1, bar, 0, 1, 36, 100))
        rows.append((1, bar, 24, 1, 38, 90))
    score = Score(
        resolution=12,
        time_signatures=meters,
        track_info=[TrackInfo(program=73, name="flute"), TrackInfo(program=0, is_drum=True)],
        notes=NoteArrays.from_rows(rows),
    )
    return Piece("test/two-tracks", "test", score)


def expected_notes(sample: Sample, cells: np.ndarray | None = None) -> np.ndarray:
    """The window's notes as the decoder gives them back, tracks in emitted order; ``cells``
    (n_tracks, n_bars) bool keeps only those bars."""
    notes = sample.window.notes
    keep = np.ones(len(notes), dtype=bool) if cells is None else cells[notes.track, notes.bar]
    position = np.argsort(sample.track_order)  # window track -> decoded track
    is_drum = np.array([t.is_drum for t in sample.window.track_info])[notes.track]
    duration = np.where(is_drum, 1, np.minimum(notes.duration, YELLOW.max_duration_ticks))
    velocity = YELLOW.level_to_velocity[YELLOW.velocity_to_level[notes.velocity]]
    rows = NoteArrays(
        position[notes.track], notes.bar, notes.onset, duration, notes.pitch, velocity
    )
    return rows.select(keep).sorted().as_table()


def window_from_piece(sample: Sample, piece: Piece) -> np.ndarray:
    """The piece's own notes of the sample's window, transposed by hand (drums unmoved)."""
    notes = piece.score.notes
    end = sample.start_bar + sample.window.n_bars
    keep = (
        (notes.bar >= sample.start_bar)
        & (notes.bar < end)
        & np.isin(notes.track, sample.source_tracks)
    )
    part = notes.select(keep)
    drum = np.array([t.is_drum for t in piece.score.track_info])[part.track]
    track = np.searchsorted(np.asarray(sample.source_tracks), part.track)
    pitch = np.where(drum, part.pitch, part.pitch + sample.transpose)
    rows = NoteArrays(
        track, part.bar - sample.start_bar, part.onset, part.duration, pitch, part.velocity
    )
    return rows.sorted().as_table()


def assert_valid_sequence(sample: Sample, max_len: int = 1024) -> None:
    """A complete yellow sequence under the engine's grammar, within the length limit."""
    assert sample.ids.dtype == np.int64
    assert 2 <= len(sample.ids) <= max_len
    meters = sample.window.time_signatures
    bar_ticks = [
        int(YELLOW.bar_ticks[YELLOW.time_signature_index(*meters[b])])
        for _, b in sample.fill_targets
    ]
    constraints = Constraints(
        max_tracks=len(sample.track_order),
        require_notes=False,
        n_fill_targets=len(sample.fill_targets),
        fill_block_is_drum=tuple(
            sample.window.track_info[t].is_drum for t, _ in sample.fill_targets
        ),
        fill_block_bar_ticks=tuple(bar_ticks),
    )
    grammar = Grammar(YELLOW, constraints)
    states = grammar.new_states(1)
    grammar.advance(states, sample.ids, strict=True)
    assert grammar.complete(states)[0], "the sequence stops mid-grammar"


AUGMENTATIONS_OFF = {
    f"{share}_probability": 0.0
    for share in ("merge", "double", "voicing", "texture", "rescale", "rearticulate", "hold")
}


def only(**shares: float) -> SampleConfig:
    """Plain samples (no infill, no autoregression) with every augmentation off but ``shares``."""
    return SampleConfig(infill_probability=0, ar_probability=0, **{**AUGMENTATIONS_OFF, **shares})


def assert_decode_to_their_windows(samples: list[Sample]) -> None:
    for sample in samples:
        decoded = TOKENIZER.decode(sample.ids)
        assert np.array_equal(decoded.notes.as_table(), expected_notes(sample))
        assert_valid_sequence(sample)


def draw(
    config: SampleConfig, n: int = 40, seed: int = 0, piece: Piece | None = None
) -> list[Sample]:
    stream = SampleStream([piece or two_track_piece()], YELLOW, config, seed=seed)
    return [stream.next_sample() for _ in range(n)]


# ---- plain samples ------------------------------------------------------------------------------
def test_a_plain_sample_decodes_to_exactly_the_window_transposed():
    piece = two_track_piece()
    samples = draw(PLAIN, piece=piece)
    assert {s.kind for s in samples} == {"plain"}
    assert {s.window.n_bars for s in samples} == {4, 8}
    assert len({s.transpose for s in samples}) > 3
    for sample in samples:
        assert np.array_equal(sample.window.notes.as_table(), window_from_piece(sample, piece))
        decoded = TOKENIZER.decode(sample.ids)
        assert np.array_equal(decoded.notes.as_table(), expected_notes(sample))
        assert sample.ids[0] == VOCAB.encode(TokenType.PIECE_START, 0)
        assert sample.ids[1] == VOCAB.encode(
            TokenType.NUM_BARS, list(YELLOW.num_bars_map).index(sample.window.n_bars)
        )
        window_meters = piece.score.time_signatures[
            sample.start_bar : sample.start_bar + sample.window.n_bars
        ]
        assert np.array_equal(decoded.time_signatures, window_meters)
        assert [t.program for t in decoded.track_info] == [73, 0]
        assert [t.is_drum for t in decoded.track_info] == [False, True]


def test_drums_are_never_transposed_and_pitches_stay_in_range():
    piece = two_track_piece(top_pitch=125)  # melody 113 + bar: bar 7 allows no more than +7
    config = SampleConfig(
        transpose=(-5, 6), rescale_probability=0, rearticulate_probability=0, hold_probability=0
    )
    for sample in draw(config, n=60, piece=piece):
        window = sample.window
        drums = np.array([t.is_drum for t in window.track_info])[window.notes.track]
        assert set(window.notes.pitch[drums].tolist()) <= {36, 38}
        assert window.notes.pitch.max() <= 127
        assert -5 <= sample.transpose <= 127 - (125 - 12 + sample.start_bar + window.n_bars - 1)


# ---- infill, autoregressive and masked samples ---------------------------------------------------
def test_infill_samples_have_a_fill_block_per_placeholder_and_decode_whole():
    samples = draw(INFILL)
    assert {s.kind for s in samples} == {"infill"}
    assert any(len({t for t, _ in s.fill_targets}) == 2 for s in samples)  # both tracks at once
    for sample in samples:
        ids = sample.ids.tolist()
        n_targets = len(sample.fill_targets)
        assert n_targets >= 1
        assert ids[0] == VOCAB.encode(TokenType.PIECE_START, 1)
        assert ids.count(PLACEHOLDER) == ids.count(FILL_START) == ids.count(FILL_END) == n_targets
        assert sample.fill_targets == tuple(sorted(sample.fill_targets))
        filled = sample.bar_modes == BarMode.FILL
        assert filled.sum() == n_targets
        has_notes = np.zeros(filled.shape, dtype=bool)
        has_notes[sample.window.notes.track, sample.window.notes.bar] = True
        assert not (filled & ~has_notes).any(), "an empty bar was made a fill target"
        kept = sample.bar_modes != BarMode.MASKED
        assert np.array_equal(
            TOKENIZER.decode(sample.ids).notes.as_table(), expected_notes(sample, kept)
        )


def test_autoregressive_samples_put_the_generating_tracks_last():
    piece = two_track_piece()
    samples = draw(AUTOREGRESSIVE, piece=piece)
    orders = {s.track_order for s in samples}
    assert orders == {(0, 1), (1, 0)}  # the drum track, then the melody, generated last
    for sample in samples:
        decoded = TOKENIZER.decode(sample.ids)
        kept = sample.bar_modes != BarMode.MASKED
        assert np.array_equal(decoded.notes.as_table(), expected_notes(sample, kept))
        assert [t.is_drum for t in decoded.track_info] == [
            sample.window.track_info[t].is_drum for t in sample.track_order
        ]
        assert FILL_START not in sample.ids


def test_masked_bars_are_empty_shells_from_a_bar_to_the_window_end():
    config = SampleConfig(infill_probability=0.5, ar_probability=0.5, mask_probability=1.0)
    masked_samples = [s for s in draw(config, n=60) if (s.bar_modes == BarMode.MASKED).any()]
    assert len(masked_samples) > 20
    for sample in masked_samples:
        modes = sample.bar_modes
        for track in np.flatnonzero((modes == BarMode.MASKED).any(axis=1)):
            first = int(np.flatnonzero(modes[track] == BarMode.MASKED)[0])
            assert set(modes[track, first:].tolist()) <= {BarMode.MASKED, BarMode.FILL}
        if sample.kind == "autoregressive":
            generating = sample.track_order[-1]
            assert not (modes[generating] == BarMode.MASKED).any()
        decoded = TOKENIZER.decode(sample.ids)
        assert np.array_equal(
            decoded.notes.as_table(), expected_notes(sample, modes != BarMode.MASKED)
        )
        assert decoded.n_bars == sample.window.n_bars  # the shells keep every Bar token


# ---- attributes, grammar, length -----------------------------------------------------------------
def test_attribute_tokens_are_the_tokenizers_values_for_the_window():
    samples = draw(SampleConfig(attribute_probability=0.5), n=60)
    with_and_without = set()
    for sample in samples:
        computed = TOKENIZER.compute_attributes(sample.window)
        decoded = TOKENIZER.decode(sample.ids)
        for position, track in enumerate(sample.track_order):
            emitted = decoded.track_info[position].attributes
            if sample.attributes[track, 0] < 0 and sample.attributes[track, 4] < 0:
                assert emitted == {}
                with_and_without.add(False)
                continue
            with_and_without.add(True)
            names = (
                "min_polyphony",
                "max_polyphony",
                "min_note_duration",
                "max_note_duration",
                "note_density",
            )
            assert emitted == {
                n: int(v) for n, v in zip(names, computed[track], strict=True) if v >= 0
            }
    assert with_and_without == {True, False}


def test_every_sample_is_a_complete_yellow_sequence():
    for sample in draw(SampleConfig(mask_probability=0.5), n=80):
        assert_valid_sequence(sample)


def test_a_long_window_is_shortened_then_thinned_never_cut():
    # Unlimited, an 8-bar window of both tracks takes 180-230 tokens, a 4-bar one about 100.
    shorter = draw(SampleConfig(max_len=150, hold_probability=0), n=40)
    thinner = draw(SampleConfig(max_len=90, hold_probability=0), n=40)  # held notes are fewer
    for max_len, samples in ((150, shorter), (90, thinner)):
        for sample in samples:
            assert_valid_sequence(sample, max_len=max_len)
    assert sum(s.window.n_bars == 4 and s.window.n_tracks == 2 for s in shorter) > 30
    assert all(s.window.n_bars == 4 for s in thinner)
    assert sum(s.window.n_tracks == 1 for s in thinner) > 30
    with pytest.raises(SampleError, match="max_len=20"):
        draw(SampleConfig(max_len=20), n=1)


# ---- reproducibility and errors ------------------------------------------------------------------
def test_the_same_seed_gives_the_same_samples_and_another_seed_others():
    first = [s.ids for s in draw(SampleConfig(), n=30, seed=7)]
    again = [s.ids for s in draw(SampleConfig(), n=30, seed=7)]
    other = [s.ids for s in draw(SampleConfig(), n=30, seed=8)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(
        len(a) == len(b) and np.array_equal(a, b) for a, b in zip(first, other, strict=True)
    )
    stream = SampleStream([two_track_piece()], YELLOW, seed=7)
    assert iter(stream) is stream
    assert np.array_equal(next(stream), first[0])


def test_the_validation_set_is_fixed_for_a_seed():
    pieces = [two_track_piece()]
    one = validation_set(pieces, YELLOW, 12, seed=3)
    two = validation_set(pieces, YELLOW, 12, seed=3)
    assert len(one) == 12
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))


@pytest.mark.parametrize(
    "settings, field",
    [
        (
            {"infill_probability": 0.8, "ar_probability": 0.3},
            "infill_probability \\+ ar_probability",
        ),
        ({"mask_probability": 1.5}, "mask_probability"),
        ({"double_probability": -0.1}, "double_probability"),
        ({"rescale_probability": 2}, "rescale_probability"),
        ({"texture_probability": 1.5}, "texture_probability"),
        ({"voicing_probability": -1}, "voicing_probability"),
        ({"hold_probability": 1.01}, "hold_probability"),
        ({"transpose": (3, -3)}, "transpose"),
        ({"max_len": 1}, "max_len"),
    ],
)
def test_a_setting_out_of_range_names_its_field(settings, field):
    with pytest.raises(SampleConfigError, match=field):
        SampleConfig(**settings)


def test_pieces_shorter_than_the_shortest_window_give_a_clear_error():
    short = two_track_piece()
    short = Piece("test/short", "test", short.score.slice_bars(0, 3))
    with pytest.raises(SampleError, match="at least 4 bars"):
        SampleStream([short], YELLOW)


# ---- reductions ---------------------------------------------------------------------------------
def three_voice_piece() -> Piece:
    """Three melodic voices in whole notes over 4 bars (a chord per bar) and a drum track; the
    middle voice doubles the top voice in bar 1 (a unison, shorter)."""
    rows = []
    for bar in range(4):
        rows.append((0, bar, 0, 48, 72 + bar, 80))
        rows.append((1, bar, 0, 24 if bar == 1 else 48, 72 + bar if bar == 1 else 67 + bar, 70))
        rows.append((2, bar, 0, 48, 48 + bar, 60))
        rows.append((3, bar, 0, 1, 36, 100))
    score = Score(
        resolution=12,
        time_signatures=[(4, 4)] * 4,
        track_info=[
            TrackInfo(program=73, name="soprano"),
            TrackInfo(program=68, name="alto"),
            TrackInfo(program=70, name="bass"),
            TrackInfo(program=0, is_drum=True),
        ],
        notes=NoteArrays.from_rows(rows),
    )
    return Piece("test/three-voices", "test", score)


def test_a_reduction_merges_melodic_voices_into_one_chordal_track():
    piece = three_voice_piece()
    config = SampleConfig(
        infill_probability=0, ar_probability=0, merge_probability=1.0, double_probability=0,
        rescale_probability=0, rearticulate_probability=0, texture_probability=0,
        voicing_probability=0, hold_probability=0,
    )  # fmt: skip
    samples = draw(config, n=40, piece=piece)
    assert {len(s.merged_tracks) for s in samples} == {2, 3}
    for sample in samples:
        merged = np.asarray(sample.merged_tracks)
        assert 3 not in merged  # drums never merge
        window = sample.window
        assert window.n_tracks == 4 - (len(merged) - 1)
        reduction = int(np.searchsorted(sample.source_tracks, merged[0]))
        assert sample.source_tracks[reduction] == merged[0]
        info = window.track_info[reduction]
        assert info.name == "reduction" and info.program in (0, 4, 19, 48)
        # the reduction holds each merged voice's notes once per (bar, onset, pitch)
        original = piece.score.notes.select(np.isin(piece.score.notes.track, merged))
        keys = {(int(b), int(o), int(p) + sample.transpose) for b, o, p in zip(original.bar, original.onset, original.pitch, strict=True)}
        notes = window.notes.select(window.notes.track == reduction)
        assert len(notes) == len(keys)
        assert {(int(b), int(o), int(p)) for b, o, p in zip(notes.bar, notes.onset, notes.pitch, strict=True)} == keys
        unison = notes.select((notes.bar == 1) & (notes.pitch == 73 + sample.transpose))
        if {0, 1} <= set(merged.tolist()):
            assert unison.duration.tolist() == [48]  # the longer of the two unison notes
        levels = TOKENIZER.compute_attributes(window)
        max_polyphony = levels[reduction, ATTRIBUTE_NAMES.index("max_polyphony")]
        assert max_polyphony == len(merged) - 1  # level = notes sounding together - 1
        decoded = TOKENIZER.decode(sample.ids)
        assert np.array_equal(decoded.notes.as_table(), expected_notes(sample))
        assert_valid_sequence(sample)


def test_merge_probability_zero_keeps_every_voice_apart():
    samples = draw(SampleConfig(merge_probability=0.0), n=20, piece=three_voice_piece())
    assert all(s.merged_tracks == () and s.window.n_tracks == 4 for s in samples)


def test_octave_doublings_add_each_note_at_every_shift_within_midi_range():
    window = three_voice_piece().score
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(30):
        doubled, shifts = double_octaves(rng, window, 0)
        seen.update(shifts)
        assert 1 <= len(shifts) <= 3 and list(shifts) == sorted(set(shifts))
        assert set(shifts) <= {-24, -12, 12, 24}
        others = doubled.notes.select(doubled.notes.track != 0)
        assert np.array_equal(others.as_table(), window.notes.select(window.notes.track != 0).as_table())
        own = window.notes.select(window.notes.track == 0)
        expected = {
            (int(b), int(o), int(p) + s)
            for b, o, p in zip(own.bar, own.onset, own.pitch, strict=True)
            for s in (0, *shifts)
            if 0 <= int(p) + s <= 127
        }
        notes = doubled.notes.select(doubled.notes.track == 0)
        assert len(notes) == len(expected)
        assert {(int(b), int(o), int(p)) for b, o, p in zip(notes.bar, notes.onset, notes.pitch, strict=True)} == expected
    assert seen == {-24, -12, 12, 24}
    high = Score(
        resolution=12, time_signatures=[(4, 4)], track_info=[TrackInfo(program=0)],
        notes=NoteArrays.from_rows([(0, 0, 0, 12, 120, 80)]),
    )  # fmt: skip
    for _ in range(10):
        doubled, shifts = double_octaves(rng, high, 0)
        assert doubled.notes.pitch.max() <= 127
        assert len(doubled.notes) == 1 + sum(1 for s in shifts if s < 0)


def test_rescaling_writes_the_music_faster_or_slower_in_whole_bars():
    rows = [(0, 0, 0, 12, 60, 80), (0, 0, 12, 6, 62, 80), (0, 1, 0, 48, 64, 80), (0, 1, 36, 1, 65, 80)]
    window = Score(
        resolution=12, time_signatures=[(4, 4)] * 2, track_info=[TrackInfo(program=0)],
        notes=NoteArrays.from_rows(rows),
    )  # fmt: skip
    faster = rescale(window, 0.5)
    assert faster.n_bars == 1
    assert faster.notes.as_table()[:, 1:4].tolist() == [[0, 0, 6], [0, 6, 3], [0, 24, 24], [0, 42, 1]]
    slower = rescale(window, 2.0)
    assert slower.n_bars == 4 and slower.time_signatures.tolist() == [[4, 4]] * 4
    assert slower.notes.as_table()[:, 1:4].tolist() == [[0, 0, 24], [0, 24, 12], [2, 0, 96], [3, 24, 2]]
    assert np.array_equal(slower.notes.pitch, window.notes.pitch)
    levels = TOKENIZER.compute_attributes(slower)[0, ATTRIBUTE_NAMES.index("max_note_duration")]
    assert levels == 5  # a whole note and longer


def long_chorale_piece(n_bars: int) -> Piece:
    """Four voices in quarter notes, 4/4 throughout: every time scale fits."""
    rows = [
        (voice, bar, 12 * beat, 12, 72 - 7 * voice + (bar + beat) % 5, 80)
        for voice in range(4)
        for bar in range(n_bars)
        for beat in range(4)
    ]
    score = Score(
        resolution=12, time_signatures=[(4, 4)] * n_bars,
        track_info=[TrackInfo(program=52, name=f"voice {v}") for v in range(4)],
        notes=NoteArrays.from_rows(rows),
    )  # fmt: skip
    return Piece("test/long-chorale", "test", score)


def test_rescaled_samples_decode_to_their_window_with_scaled_note_lengths():
    config = SampleConfig(
        infill_probability=0, ar_probability=0, rescale_probability=1.0, merge_probability=0,
        rearticulate_probability=0, hold_probability=0,
    )  # fmt: skip
    samples = draw(config, n=60, piece=long_chorale_piece(32))  # 8 bars at 1/4 need 32
    assert {s.time_scale for s in samples} == set(TIME_SCALES)
    for sample in samples:
        assert sample.window.n_bars in (4, 8)
        durations = set(sample.window.notes.duration.tolist())
        assert durations == {max(1, int(12 * sample.time_scale))}  # quarters, rescaled
        decoded = TOKENIZER.decode(sample.ids)
        assert np.array_equal(decoded.notes.as_table(), expected_notes(sample))
        assert_valid_sequence(sample)


def test_a_window_across_a_meter_change_is_never_rescaled():
    config = SampleConfig(rescale_probability=1.0)
    samples = draw(config, n=60, piece=two_track_piece())  # 4/4 for six bars, then 3/4
    for sample in samples:
        if sample.time_scale != 1:
            assert len({tuple(m) for m in sample.window.time_signatures.tolist()}) == 1
        assert_valid_sequence(sample)


def test_doubled_reductions_reach_the_upper_polyphony_levels():
    config = SampleConfig(merge_probability=1.0, double_probability=1.0, rescale_probability=0, texture_probability=0)
    samples = draw(config, n=60, piece=long_chorale_piece(8))
    assert all(s.octave_shifts for s in samples if s.merged_tracks)
    top = max(
        int(s.attributes[int(np.searchsorted(s.source_tracks, s.merged_tracks[0])), ATTRIBUTE_NAMES.index("max_polyphony")])
        for s in samples
    )
    assert top >= 7  # eight or more notes at once; the voices alone never exceed four
    for sample in samples:
        assert_valid_sequence(sample)


# ---- texture -----------------------------------------------------------------------------------------
def four_part_chords() -> Score:
    """Four 4/4 bars: track 0 a reduction in four-note quarter chords (root 48 + beat), track 1 a
    line of eighths."""
    rows = [
        (0, bar, beat * 12, 12, 48 + beat + step, 80)
        for bar in range(4) for beat in range(4) for step in (0, 7, 12, 16)
    ]  # fmt: skip
    rows += [(1, bar, k * 6, 6, 72 + k, 70) for bar in range(4) for k in range(8)]
    return Score(
        resolution=12, time_signatures=np.array([[4, 4]] * 4, dtype=np.int32),
        track_info=[TrackInfo(program=0, name="reduction"), TrackInfo(program=73)],
        notes=NoteArrays.from_rows(rows),
    )  # fmt: skip


def chords_by_beat(notes: NoteArrays) -> dict[int, list[int]]:
    """Sorted pitches of each beat's notes (absolute quarter -> pitches) in 4/4 at 12 per quarter."""
    beats: dict[int, list[int]] = {}
    for bar, onset, pitch in zip(notes.bar.tolist(), notes.onset.tolist(), notes.pitch.tolist(), strict=True):
        beats.setdefault(bar * 4 + onset // 12, []).append(pitch)
    return {beat: sorted(pitches) for beat, pitches in beats.items()}


def texture_outcomes(mode: str) -> list[tuple[Score, Score]]:
    """(window, varied window) for the seeds in 0..39 whose draw gave ``mode``."""
    window = four_part_chords()
    outs = [vary_texture(np.random.default_rng(seed), window, 0) for seed in range(40)]
    return [(window, out) for out, drawn in outs if drawn == mode]


def test_thinned_beats_keep_one_note_per_onset_the_highest_or_the_lowest():
    outcomes = texture_outcomes("thin")
    assert len(outcomes) >= 5
    kinds = set()
    for window, out in outcomes:
        before, after = (chords_by_beat(w.notes.select(w.notes.track == 0)) for w in (window, out))
        assert before.keys() == after.keys()  # every onset keeps a note
        thinned = [beat for beat in before if after[beat] != before[beat]]
        assert 0 < len(thinned) < len(before)
        for beat in thinned:
            assert len(after[beat]) == 1 and after[beat][0] in (before[beat][0], before[beat][-1])
        kinds |= {after[beat][0] == before[beat][-1] for beat in thinned}
        assert len({after[beat][0] == before[beat][-1] for beat in thinned}) == 1  # one line per window
        line = out.notes.select(out.notes.track == 1).as_table()
        assert np.array_equal(line, window.notes.select(window.notes.track == 1).as_table())
    assert kinds == {True, False}  # both the top line and the bass line occur


def test_thickened_beats_add_octaves_to_the_notes_that_start_in_them():
    outcomes = texture_outcomes("thick")
    assert len(outcomes) >= 5
    for window, out in outcomes:
        before, after = (chords_by_beat(w.notes.select(w.notes.track == 0)) for w in (window, out))
        thickened = [beat for beat in before if after[beat] != before[beat]]
        assert 0 < len(thickened) < len(before)
        shifts = {p - q for beat in thickened for p in after[beat] for q in before[beat]}
        for beat in thickened:
            assert set(before[beat]) < set(after[beat])
            added = set(after[beat]) - set(before[beat])
            assert all(any((p - q) % 12 == 0 and p != q for q in before[beat]) for p in added)
        assert shifts & {-24, -12, 12, 24}
        line = out.notes.select(out.notes.track == 1).as_table()
        assert np.array_equal(line, window.notes.select(window.notes.track == 1).as_table())


def test_a_varied_texture_separates_the_lowest_and_highest_polyphony():
    """Four-note chords throughout have min = max polyphony (level 3). With a quarter to three
    quarters of the beats thinned, the minimum (15% quantile) falls to one note while the maximum
    (85%) stays; thickened, the maximum rises while the minimum stays."""
    low, high = ATTRIBUTE_NAMES.index("min_polyphony"), ATTRIBUTE_NAMES.index("max_polyphony")
    assert TOKENIZER.compute_attributes(four_part_chords())[0, [low, high]].tolist() == [3, 3]
    checked = {"thin": 0, "thick": 0}
    for mode in checked:
        for window, out in texture_outcomes(mode):
            before, after = (chords_by_beat(w.notes.select(w.notes.track == 0)) for w in (window, out))
            share = sum(after[beat] != before[beat] for beat in before) / len(before)
            if not 0.25 <= share <= 0.75:
                continue
            levels = TOKENIZER.compute_attributes(out)[0, [low, high]].tolist()
            assert levels == [0, 3] if mode == "thin" else (levels[0] == 3 and levels[1] > 3)
            checked[mode] += 1
    assert min(checked.values()) >= 5


def test_textured_samples_decode_to_their_window():
    config = only(merge_probability=1.0, texture_probability=1.0)
    samples = draw(config, n=40, piece=long_chorale_piece(8))
    assert {s.texture for s in samples if s.merged_tracks} >= {"thin", "thick"}
    assert_decode_to_their_windows(samples)
    plain = draw(replace(config, texture_probability=0), n=5, piece=long_chorale_piece(8))
    assert all(s.texture == "" for s in plain)


# ---- revoicing ----------------------------------------------------------------------------------
def revoice_outcomes(kind: str) -> list[tuple[Score, Score, str]]:
    """(four voices in quarters, revoiced window, what was done) for the seeds in 0..59 whose draw
    was ``kind`` ("keep" or "add")."""
    window = long_chorale_piece(4).score
    voices = np.arange(4)
    outs = [revoice(np.random.default_rng(seed), window, voices) for seed in range(60)]
    return [(window, out, done) for out, done in outs if done.startswith(kind)]


def notes_by_beat(notes: NoteArrays) -> dict[int, dict[int, list[int]]]:
    """beat -> track -> sorted pitches of the notes starting in it (4/4 at 12 per quarter)."""
    out: dict[int, dict[int, list[int]]] = {}
    for track, bar, onset, pitch in zip(notes.track.tolist(), notes.bar.tolist(), notes.onset.tolist(), notes.pitch.tolist(), strict=True):
        out.setdefault(bar * 4 + onset // 12, {}).setdefault(track, []).append(pitch)
    return {beat: {t: sorted(p) for t, p in tracks.items()} for beat, tracks in out.items()}


def test_revoiced_beats_keep_some_voices_and_silence_the_others():
    outcomes = revoice_outcomes("keep")
    assert len(outcomes) >= 10
    counts = set()
    for window, out, done in outcomes:
        count = int(done.split()[1])
        counts.add(count)
        before, after = notes_by_beat(window.notes), notes_by_beat(out.notes)
        changed = [beat for beat in before if after.get(beat) != before[beat]]
        assert changed
        for beat in before:
            if beat in changed:
                assert len(after[beat]) == count  # voices still playing
                assert all(after[beat][t] == before[beat][t] for t in after[beat])
            else:
                assert len(after[beat]) == 4
    assert counts == {1, 2, 3}


def test_added_voices_double_the_highest_or_lowest_voices_an_octave_out():
    outcomes = revoice_outcomes("add")
    assert len(outcomes) >= 10
    sides = set()
    for window, out, done in outcomes:
        _, count, side = done.split()
        count = int(count)
        sides.add(side)
        doubled = list(range(count)) if side == "above" else list(range(3, 3 - count, -1))
        shift = 12 if side == "above" else -12  # voice 0 is the highest, voice 3 the lowest
        before, after = notes_by_beat(window.notes), notes_by_beat(out.notes)
        changed = [beat for beat in before if after[beat] != before[beat]]
        assert changed
        for beat in changed:
            for track, pitches in before[beat].items():
                expected = pitches + [p + shift for p in pitches] if track in doubled else pitches
                assert after[beat][track] == sorted(expected)
    assert sides == {"above", "below"}


def test_revoicing_everywhere_moves_the_reductions_polyphony_by_the_count():
    """Four voices in quarters merge into a reduction of polyphony level 3 (four notes); revoiced
    on every beat, with k voices kept or added, it has k or 4 + k notes throughout."""
    window = long_chorale_piece(4).score
    low, high = ATTRIBUTE_NAMES.index("min_polyphony"), ATTRIBUTE_NAMES.index("max_polyphony")
    group, kept = np.arange(4), np.arange(4)
    reduced, _, _ = merge_group(window, kept, group, 0)
    assert TOKENIZER.compute_attributes(reduced)[0, [low, high]].tolist() == [3, 3]
    seen = set()
    for seed in range(80):
        out, done = revoice(np.random.default_rng(seed), window, group)
        kind, count = done.split()[0], int(done.split()[1])
        if len(notes_by_beat(out.notes)) and all(
            notes_by_beat(out.notes)[b] != notes_by_beat(window.notes)[b] for b in range(16)
        ):
            merged, _, _ = merge_group(out, kept, group, 0)
            voices = count if kind == "keep" else 4 + count
            levels = TOKENIZER.compute_attributes(merged)[0, [low, high]].tolist()
            assert levels == [voices - 1, voices - 1]
            seen.add(voices)
    assert len(seen) >= 4


def test_revoiced_samples_decode_to_their_window():
    config = only(merge_probability=1.0, voicing_probability=1.0)
    samples = draw(config, n=40, piece=long_chorale_piece(8))
    assert {s.voicing.split(" ")[0] for s in samples if s.merged_tracks} == {"keep", "add"}
    assert_decode_to_their_windows(samples)
    doubled = draw(replace(config, double_probability=1.0), n=10, piece=long_chorale_piece(8))
    assert all(s.voicing == "" for s in doubled)  # a doubled reduction is not also revoiced


# ---- re-articulation --------------------------------------------------------------------------------
def quarters_and_eighths() -> Score:
    """Two 4/4 bars: track 0 in quarters (pitches 60..67), track 1 in eighths; the last quarter is
    tied over the end of the window."""
    rows = [(0, bar, beat * 12, 12, 60 + 4 * bar + beat, 80) for bar in range(2) for beat in range(4)]
    rows[-1] = (0, 1, 36, 30, 67, 80)
    rows += [(1, bar, k * 6, 6, 48 + k, 70) for bar in range(2) for k in range(8)]
    return Score(
        resolution=12, time_signatures=np.array([[4, 4], [4, 4]], dtype=np.int32),
        track_info=[TrackInfo(program=0), TrackInfo(program=32)],
        notes=NoteArrays.from_rows(rows),
    )  # fmt: skip


def test_grid_lengths_are_the_note_duration_levels():
    durations = [grid_ticks(12, level) for level in range(6)]
    assert durations == [2, 3, 6, 12, 24, 48]
    levels = [duration_level(d, 12) for d in durations]  # the attribute analysis's own bins
    assert levels == list(range(6))


def test_repeated_notes_cover_each_chosen_note_and_leave_the_others():
    window = quarters_and_eighths()
    for seed in range(20):
        out, grid = rearticulate(np.random.default_rng(seed), window, 0, level=1)
        assert grid == 3
        notes = out.notes
        assert np.array_equal(notes.select(notes.track == 1).as_table(), window.notes.select(window.notes.track == 1).as_table())
        mine = notes.select(notes.track == 0)
        starts = out.bar_starts()
        for note in window.notes.select(window.notes.track == 0).as_table():
            _, bar, onset, duration, pitch, velocity = note.tolist()
            begin, end = starts[bar] + onset, min(starts[bar] + onset + duration, starts[-1])
            same = mine.select(mine.pitch == pitch)
            absolute = starts[same.bar] + same.onset
            assert set(same.velocity.tolist()) == {velocity}
            if len(same) == 1:  # left as it was
                assert (absolute[0], same.duration[0]) == (begin, duration)
            else:  # every grid length from its onset, the last cut at its end, none past the window
                assert absolute.tolist() == list(range(begin, end, 3))
                assert same.duration.tolist() == [min(3, begin + duration - a) for a in absolute]


def test_a_part_in_repeated_notes_gets_the_asked_duration_levels():
    window = quarters_and_eighths()
    names = [ATTRIBUTE_NAMES.index(a) for a in ("min_note_duration", "max_note_duration")]
    for seed in range(10):
        out, _ = rearticulate(np.random.default_rng(seed), window, 0, level=0)
        split = out.notes.select(out.notes.track == 0)
        if split.duration.max() == 2:  # every quarter re-articulated (a share of 1)
            assert TOKENIZER.compute_attributes(out)[0, names].tolist() == [0, 0]
            break
    else:
        pytest.fail("no seed re-articulated every note")


def test_held_notes_sound_the_pitches_at_each_grid_point_until_the_next():
    window = quarters_and_eighths()
    out, grid = rearticulate(np.random.default_rng(0), window, 1, level=4)  # halves over eighths
    assert grid == 24
    held = out.notes.select(out.notes.track == 1)
    assert held.as_table()[:, 1:].tolist() == [
        [bar, onset, 24, 48 + onset // 6, 70] for bar in range(2) for onset in (0, 24)
    ]
    out, grid = rearticulate(np.random.default_rng(0), window, 0, level=5)  # wholes over quarters
    held = out.notes.select(out.notes.track == 0)
    assert (grid, held.bar.tolist(), held.onset.tolist(), held.duration.tolist()) == (48, [0, 1], [0, 0], [48, 48])
    assert held.pitch.tolist() == [60, 64]


def test_a_rest_at_every_grid_point_leaves_the_window_unchanged():
    window = quarters_and_eighths()
    short = window.with_notes(NoteArrays.from_rows([(0, 0, 6, 3, 60, 80), (1, 0, 0, 6, 48, 70)]))
    out, grid = rearticulate(np.random.default_rng(0), short, 0, level=5)
    assert grid == 0 and out is short


def test_held_stretches_sound_the_pitches_at_their_start_to_their_end():
    window = quarters_and_eighths()
    for seed in range(20):
        out, count = hold_some(np.random.default_rng(seed), window, 1)
        assert 1 <= count
        mine = out.notes.select(out.notes.track == 1)
        other = out.notes.select(out.notes.track == 0)
        assert np.array_equal(other.as_table(), window.notes.select(window.notes.track == 0).as_table())
        starts = out.bar_starts()
        absolute = starts[mine.bar] + mine.onset
        long = mine.duration > 6  # the eighths (6 ticks) left as written, the held notes longer
        assert np.all(np.isin(mine.duration[long], (24, 48)))
        stretch = int(mine.duration[long][0])
        assert count < 4 if stretch == 24 else count == 1  # at least one stretch left as written
        assert np.all(absolute[long] % stretch == 0)
        assert len(np.unique(absolute[long])) == count
        for onset in np.unique(absolute[long]):  # the eighth sounding at the stretch's start
            assert mine.pitch[long][absolute[long] == onset].tolist() == [48 + (onset % 48) // 6]
        inside = np.zeros(len(mine), dtype=bool)
        for onset in np.unique(absolute[long]):
            inside |= (absolute > onset) & (absolute < onset + stretch)
        assert not inside.any()  # nothing else starts inside a held stretch
        assert np.all(mine.duration[~long] == 6)


def test_a_part_held_in_places_keeps_its_short_notes_and_gains_long_ones():
    """A part of eighths (duration levels 2, 2) held over half of its stretches: the lowest level
    stays an eighth, the highest becomes a half or a whole note."""
    window = long_chorale_piece(4).score
    window = window.with_notes(NoteArrays.from_rows(
        [(0, bar, 6 * k, 6, 60 + k, 80) for bar in range(4) for k in range(8)]
    ))  # fmt: skip
    names = [ATTRIBUTE_NAMES.index(a) for a in ("min_note_duration", "max_note_duration")]
    assert TOKENIZER.compute_attributes(window)[0, names].tolist() == [2, 2]
    pairs = set()
    for seed in range(40):
        out, count = hold_some(np.random.default_rng(seed), window, 0)
        held = out.notes.duration > 6
        if 0.2 <= held.mean() <= 0.8:
            pairs.add(tuple(TOKENIZER.compute_attributes(out)[0, names].tolist()))
    assert pairs and pairs <= {(2, 4), (2, 5)}
    assert (2, 5) in pairs


def test_held_samples_decode_to_their_window():
    config = only(hold_probability=1.0)
    samples = draw(config, n=30, piece=long_chorale_piece(8))
    assert all(s.held[1] >= 1 for s in samples)
    assert_decode_to_their_windows(samples)
    plain = draw(replace(config, hold_probability=0), n=5, piece=long_chorale_piece(8))
    assert all(s.held == (-1, 0) for s in plain)


def test_rearticulated_samples_decode_to_their_window():
    config = only(rearticulate_probability=1.0)
    samples = draw(config, n=60, piece=long_chorale_piece(8))
    assert {s.note_grid[1] for s in samples} >= {2, 3, 6, 24, 48}
    assert_decode_to_their_windows(samples)
    plain = draw(replace(config, rearticulate_probability=0), n=5, piece=long_chorale_piece(8))
    assert all(s.note_grid == (-1, 0) for s in plain)


def test_the_voices_as_written_draw_no_augmentation_whatever_the_shares():
    """The evaluation's comparable loss: every window is the pieces' own voices, transposed."""
    piece = long_chorale_piece(8)
    everything = SampleConfig(**{share: 1.0 for share in AUGMENTATIONS_OFF})
    written = everything.as_written()
    assert written.infill_probability == everything.infill_probability
    samples = draw(written, n=40, piece=piece)
    assert {s.kind for s in samples} == {"plain", "infill", "autoregressive"}
    for sample in samples:
        assert sample.merged_tracks == () and sample.time_scale == 1.0
        assert sample.note_grid == (-1, 0) and sample.held == (-1, 0)
        assert np.array_equal(sample.window.notes.as_table(), window_from_piece(sample, piece))
    augmented = draw(everything, n=10, piece=piece)
    assert all(s.merged_tracks or s.time_scale != 1.0 or s.held[1] for s in augmented)


@pytest.mark.parametrize(
    "share",
    [
        "rescale_probability", "rearticulate_probability", "double_probability",
        "texture_probability", "voicing_probability", "hold_probability",
    ],
)  # fmt: skip
def test_an_augmentation_turned_off_draws_no_random_numbers(share):
    """A share of 0 leaves the stream as it was before the augmentation existed (older runs stay
    reproducible); any share above 0, however small, draws."""
    piece = long_chorale_piece(8)
    states = []
    for value in (0.0, 1e-300):
        config = SampleConfig(
            merge_probability=1.0, double_probability=0, rescale_probability=0, rearticulate_probability=0,
            texture_probability=0, voicing_probability=0, hold_probability=0,
        )  # fmt: skip
        stream = SampleStream([piece], YELLOW, replace(config, **{share: value}), seed=3)
        stream.next_sample()
        states.append(stream._rng.bit_generator.state["state"]["state"])
    assert states[0] != states[1]
