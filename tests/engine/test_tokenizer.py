"""Tokenizer API: the worked example, round trips, bar modes and errors at the edge."""

import numpy as np
import pytest

from sideman.dsp import encode as encode_kernels
from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.tokenizer import BarMode, EncodedWindow, Tokenizer, TokenizerError
from sideman.engine.vocab import EncoderConfig

WORKED_IDS = [0, 152, 2, 43, 615, 626, 637, 644, 5, 20, 595, 214, 293, 218, 293, 402, 590, 221, 287, 6, 4]  # fmt: skip
METERS = [(4, 4), (3, 4), (7, 8), (9, 16), (1, 16), (17, 16), (6, 8), (5, 8), (16, 4), (2, 2)]
BAR, BAR_END, TRACK_END = 5, 6, 4


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer(EncoderConfig.yellow())


def worked_score(*, is_drum: bool = False) -> Score:
    """tokens.md §4 at 480 ticks per quarter."""
    notes = NoteArrays.from_rows(
        [(0, 0, 0, 480, 60, 100), (0, 0, 0, 480, 64, 100), (0, 0, 960, 240, 67, 80)]
    )
    return Score(
        resolution=480,
        time_signatures=[(4, 4)],
        track_info=[TrackInfo(program=0, is_drum=is_drum)],
        notes=notes,
    )


def random_score(rng: np.random.Generator, n_bars: int, meters=None) -> Score:
    """A multi-track 12-tpq score with drums, long notes and mixed meters."""
    n_tracks = int(rng.integers(1, 5))
    if meters is None:
        meters = [METERS[int(i)] for i in rng.integers(0, len(METERS), n_bars)]
    tracks = [
        TrackInfo(program=int(rng.integers(0, 128)), is_drum=bool(rng.random() < 0.3))
        for _ in range(n_tracks)
    ]
    bar_length = [48 * n // d for n, d in meters]
    rows = []
    for t in range(n_tracks):
        for b in range(n_bars):
            for _ in range(int(rng.integers(0, 12))):
                onset = int(rng.integers(0, bar_length[b]))
                duration = (
                    int(rng.integers(1, 120))
                    if rng.random() < 0.2
                    else int(rng.choice([1, 3, 6, 12, 24]))
                )
                rows.append(
                    (t, b, onset, duration, int(rng.integers(0, 128)), int(rng.integers(1, 128)))
                )
    notes = NoteArrays.from_rows(rows) if rows else NoteArrays.empty()
    return Score(resolution=12, time_signatures=meters, track_info=tracks, notes=notes)


def decoded_modes(modes: np.ndarray, order: list[int], n_decoded_bars: int) -> np.ndarray:
    """The bar modes that re-encode a decoded window: decoded track j is order[j], bars renumbered.

    One spare bar at the end lets a cut track that is also the longest keep its CUT.
    """
    out = np.full((len(order), n_decoded_bars + 1), BarMode.REMOVED, dtype=np.int8)
    for j, t in enumerate(order):
        row = modes[t]
        cut = np.flatnonzero(row == BarMode.CUT)
        end = int(cut[0]) if len(cut) else len(row)
        kept = [m for m in row[:end] if m != BarMode.REMOVED]
        out[j, : len(kept)] = kept
        if len(cut):
            out[j, len(kept)] = BarMode.CUT
    return out


# ---- worked example ---------------------------------------------------------------------
def test_worked_example(tokenizer):
    assert tokenizer.encode_score(worked_score(), window_bars=4).tolist() == WORKED_IDS


def test_worked_example_drum_variant(tokenizer):
    ids = tokenizer.encode_score(worked_score(is_drum=True), window_bars=4)
    assert ids.tolist() == [0, 152, 3, 43, 606, 5, 20, 595, 214, 218, 402, 590, 221, 6, 4]


def test_worked_example_without_attributes(tokenizer):
    ids = tokenizer.encode_score(worked_score(), window_bars=4, attributes=False)
    assert ids.tolist() == [0, 152, 2, 43, 5, 20, 595, 214, 293, 218, 293, 402, 590, 221, 287, 6, 4]


def test_worked_example_infill_variant(tokenizer):
    score = worked_score()
    window = tokenizer.encode_window(
        score,
        num_bars=4,
        bar_modes=np.array([[BarMode.FILL]]),
        attributes=tokenizer.compute_attributes(score),
    )
    assert window.ids.tolist() == [1, 152, 2, 43, 615, 626, 637, 644, 5, 20, 602, 6, 4,
                                   603, 595, 214, 293, 218, 293, 402, 590, 221, 287, 604]  # fmt: skip
    assert window.fill_targets == ((0, 0),)
    assert window.mask_spans.shape == (0, 2)


def test_worked_example_decodes_at_twelve_ticks_per_quarter(tokenizer):
    score = tokenizer.decode(WORKED_IDS)
    notes = score.notes
    assert score.resolution == 12
    assert list(zip(notes.pitch, notes.velocity, notes.onset, notes.duration, strict=True)) == [
        (60, 101, 0, 12), (64, 101, 0, 12), (67, 80, 24, 6)
    ]  # fmt: skip
    assert score.time_signatures.tolist() == [[4, 4]]
    info = score.track_info[0]
    assert (info.program, info.is_drum) == (0, False)
    assert info.attributes == {
        "min_polyphony": 0,
        "max_polyphony": 1,
        "min_note_duration": 2,
        "max_note_duration": 3,
    }


def test_constants_mirror_the_kernels():
    for mode in BarMode:
        assert getattr(encode_kernels, f"MODE_{mode.name}") == mode


# ---- round trips ------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_encode_decode_encode_is_a_fixed_point(tokenizer, seed):
    rng = np.random.default_rng(seed)
    n_bars = int(rng.choice([4, 8]))
    uniform = seed % 3 == 0
    score = random_score(
        rng, n_bars, meters=[METERS[seed % len(METERS)]] * n_bars if uniform else None
    )
    order = [
        int(t) for t in rng.permutation(score.n_tracks)[: int(rng.integers(1, score.n_tracks + 1))]
    ]
    modes = rng.choice(
        [BarMode.NOTES, BarMode.FILL, BarMode.MASKED],
        size=(score.n_tracks, n_bars),
        p=[0.6, 0.2, 0.2],
    )
    if uniform:
        modes[rng.random(modes.shape) < 0.15] = BarMode.REMOVED
    else:
        # Whole columns, so the decoded grid keeps the meters aligned.
        modes[:, rng.random(n_bars) < 0.15] = BarMode.REMOVED
    if rng.random() < 0.5:
        modes[order[-1], int(rng.integers(1, n_bars)) :] = BarMode.CUT
    attributes = tokenizer.compute_attributes(score) if seed % 2 else None

    first = tokenizer.encode_window(
        score, num_bars=n_bars, track_order=order, bar_modes=modes, attributes=attributes
    )
    decoded = tokenizer.decode(first.ids)
    decoded.time_signatures = np.concatenate([decoded.time_signatures, [[4, 4]]]).astype(np.int32)
    again = tokenizer.encode_window(
        decoded,
        num_bars=n_bars,
        bar_modes=decoded_modes(modes, order, decoded.n_bars - 1),
        attributes=tokenizer.stored_attributes(decoded) if attributes is not None else None,
    )
    assert again.ids.tolist() == first.ids.tolist()
    assert again.mask_spans.tolist() == first.mask_spans.tolist()
    assert len(again.fill_targets) == len(first.fill_targets)
    assert first.ids[0] == (1 if first.fill_targets else 0)


@pytest.mark.parametrize("seed", range(4))
def test_whole_score_round_trip_keeps_notes_and_attributes(tokenizer, seed):
    rng = np.random.default_rng(100 + seed)
    score = random_score(rng, 8)
    ids = tokenizer.encode_score(score, window_bars=8)
    decoded = tokenizer.decode(ids)
    assert decoded.time_signatures.tolist() == score.time_signatures.tolist()
    assert tokenizer.encode_score(decoded, window_bars=8).tolist() == ids.tolist()
    for t, info in enumerate(score.track_info):
        mine = score.notes.select(score.notes.track == t)
        theirs = decoded.notes.select(decoded.notes.track == t)
        assert theirs.pitch.tolist() == mine.pitch.tolist()
        assert theirs.onset.tolist() == mine.onset.tolist()
        expected_duration = np.ones(len(mine)) if info.is_drum else np.minimum(mine.duration, 96)
        assert theirs.duration.tolist() == expected_duration.tolist()
        assert decoded.track_info[t].is_drum == info.is_drum


def test_decoded_bars_have_exact_lengths_in_eighth_and_sixteenth_meters(tokenizer):
    meters = [(7, 8), (9, 16), (1, 16), (17, 16), (3, 8), (13, 16), (15, 16), (11, 8)]
    rows = [(0, b, 48 * n // d - 1, 1, 60, 100) for b, (n, d) in enumerate(meters)]
    score = Score(
        resolution=12,
        time_signatures=meters,
        track_info=[TrackInfo()],
        notes=NoteArrays.from_rows(rows),
    )
    decoded = tokenizer.decode(tokenizer.encode_score(score, window_bars=8))
    assert decoded.time_signatures.tolist() == [list(m) for m in meters]
    assert decoded.bar_ticks().tolist() == [42, 27, 3, 51, 18, 39, 45, 66]
    absolute = decoded.bar_starts()[decoded.notes.bar] + decoded.notes.onset
    assert absolute.tolist() == (np.cumsum([42, 27, 3, 51, 18, 39, 45, 66]) - 1).tolist()


def test_decoded_grid_follows_the_longest_track_and_defaults_to_four_four(tokenizer):
    ids = [0, 152, 2, 43, 5, 28, 6, 4, 2, 43, 5, 28, 6, 5, 6, 5, 39, 6, 4]
    assert tokenizer.decode(ids).time_signatures.tolist() == [[7, 8], [4, 4], [13, 16]]


def test_decoded_programs_are_group_representatives(tokenizer):
    score = Score.empty(
        4, [TrackInfo(program=49), TrackInfo(program=93), TrackInfo(program=34, is_drum=True)]
    )
    decoded = tokenizer.decode(tokenizer.encode_score(score))
    assert [(i.program, i.is_drum) for i in decoded.track_info] == [
        (48, False),
        (88, False),
        (33, True),
    ]


def test_decoding_garbage_gives_a_valid_score(tokenizer):
    rng = np.random.default_rng(3)
    for _ in range(50):
        score = tokenizer.decode(rng.integers(-5, 700, int(rng.integers(0, 300))))
        score.validate()
        assert score.resolution == 12


# ---- bar modes --------------------------------------------------------------------------
def test_mask_spans_point_at_empty_shells(tokenizer):
    rng = np.random.default_rng(5)
    score = random_score(rng, 8)
    modes = np.zeros((score.n_tracks, 8), dtype=np.int8)
    modes[:, [2, 5]] = BarMode.MASKED
    window = tokenizer.encode_window(score, bar_modes=modes)
    assert len(window.mask_spans) == 2 * score.n_tracks
    for start, end in window.mask_spans.tolist():
        shell = window.ids[start:end].tolist()
        assert len(shell) == 3 and shell[0] == BAR and shell[2] == BAR_END
        assert 7 <= shell[1] <= 42


# ---- MaskBar (mask mode "token") -----------------------------------------------------------
MASK_BAR_ID = 647


@pytest.fixture(scope="module")
def mask_tokenizer() -> Tokenizer:
    """Yellow's encoder config with `["MaskBar", 1]` appended to its token domains (648 ids)."""
    data = EncoderConfig.yellow().to_dict()
    data["token_domains"].append(["MaskBar", 1])
    config = EncoderConfig.from_dict({**data, "supports_mask_bar_token": True})
    assert len(config.vocabulary) == 648
    return Tokenizer(config)


def mask_token_score() -> Score:
    rows = [(0, b, 0, 12, 60 + b, 100) for b in range(4)] + [
        (1, b, 6, 1, 36, 100) for b in range(4)
    ]
    return Score(
        resolution=12,
        time_signatures=[(4, 4), (7, 8), (4, 4), (3, 4)],
        track_info=[TrackInfo(), TrackInfo(is_drum=True)],
        notes=NoteArrays.from_rows(rows),
    )


def test_mask_token_bars_encode_to_exact_ids(mask_tokenizer):
    modes = np.array(
        [[BarMode.NOTES, BarMode.MASK_TOKEN, BarMode.MASK_TOKEN, BarMode.NOTES],
         [BarMode.MASK_TOKEN, BarMode.NOTES, BarMode.MASKED, BarMode.MASK_TOKEN]],
        dtype=np.int8,
    )  # fmt: skip
    window = mask_tokenizer.encode_window(mask_token_score(), bar_modes=modes)
    assert window.ids.tolist() == [
        0, 152,
        2, 43, BAR, 20, 595, 214, 293, BAR_END, BAR, 28, MASK_BAR_ID, BAR_END,
        BAR, 20, MASK_BAR_ID, BAR_END, BAR, 17, 595, 217, 293, BAR_END, TRACK_END,
        3, 43, BAR, 20, MASK_BAR_ID, BAR_END, BAR, 28, 384, 595, 190, BAR_END,
        BAR, 20, BAR_END, BAR, 17, MASK_BAR_ID, BAR_END, TRACK_END,
    ]  # fmt: skip
    assert window.mask_spans.tolist() == [[37, 40]]  # only the MASKED shell has a span
    assert window.fill_targets == ()


def test_mask_token_round_trip_keeps_bars_and_meters_and_empties_masked_bars(mask_tokenizer):
    score = mask_token_score()
    modes = np.full((2, 4), BarMode.NOTES, dtype=np.int8)
    modes[0, 1] = modes[1, 2] = modes[1, 3] = BarMode.MASK_TOKEN
    window = mask_tokenizer.encode_window(score, bar_modes=modes)
    decoded = mask_tokenizer.decode(window.ids)
    assert decoded.n_bars == 4
    assert decoded.time_signatures.tolist() == score.time_signatures.tolist()
    kept = [(int(t), int(b)) for t, b in zip(decoded.notes.track, decoded.notes.bar, strict=True)]
    assert kept == [(0, 0), (0, 2), (0, 3), (1, 0), (1, 1)]
    again = mask_tokenizer.encode_window(decoded, bar_modes=modes)
    assert again.ids.tolist() == window.ids.tolist()
    # Unmasked, the decoded score has the masked bars as empty shells.
    plain = mask_tokenizer.encode_window(decoded).ids.tolist()
    assert MASK_BAR_ID not in plain
    assert plain == [t for t in window.ids.tolist() if t != MASK_BAR_ID]


def test_mask_token_needs_a_mask_bar_vocabulary(tokenizer):
    modes = np.zeros((1, 4), dtype=np.int8)
    modes[0, 2] = BarMode.MASK_TOKEN
    with pytest.raises(
        TokenizerError, match=r"yellow vocabulary has no MaskBar token.*mask mode 'attention'"
    ):
        tokenizer.encode_window(Score.empty(4, [TrackInfo()]), bar_modes=modes)


def test_cut_track_omits_track_end_and_ends_on_the_last_context_bar_end(tokenizer):
    score = random_score(np.random.default_rng(9), 8)
    modes = np.zeros((score.n_tracks, 8), dtype=np.int8)
    agent = score.n_tracks - 1
    modes[agent, 3:] = BarMode.CUT
    order = [t for t in range(score.n_tracks) if t != agent] + [agent]
    ids = tokenizer.encode_window(score, track_order=order, bar_modes=modes).ids.tolist()
    assert ids[-1] == BAR_END
    assert ids.count(TRACK_END) == score.n_tracks - 1
    last_track = max(i for i, token in enumerate(ids) if token in (2, 3))
    assert ids[last_track:].count(BAR) == 3


def test_removed_bars_and_ignored_tracks_leave_no_tokens(tokenizer):
    score = Score.empty(4, [TrackInfo(), TrackInfo(program=40)])
    modes = np.zeros((2, 4), dtype=np.int8)
    modes[0, 1:] = BarMode.REMOVED
    ids = tokenizer.encode_window(score, track_order=[0], bar_modes=modes).ids.tolist()
    assert ids == [0, 153 - 1, 2, 43, BAR, 20, BAR_END, TRACK_END]


def test_window_is_cut_from_the_score_and_shifted_to_bar_zero(tokenizer):
    rows = [(0, b, 0, 12, 60 + b, 100) for b in range(8)]
    score = Score(
        resolution=12,
        time_signatures=[(4, 4)] * 4 + [(3, 4)] * 4,
        track_info=[TrackInfo()],
        notes=NoteArrays.from_rows(rows),
    )
    window = tokenizer.encode_window(score, start_bar=3, n_bars=4)
    decoded = tokenizer.decode(window.ids)
    assert decoded.notes.pitch.tolist() == [63, 64, 65, 66]
    assert decoded.notes.bar.tolist() == [0, 1, 2, 3]
    assert decoded.time_signatures.tolist() == [[4, 4], [3, 4], [3, 4], [3, 4]]


def test_fill_targets_are_listed_in_emission_order(tokenizer):
    score = Score.empty(4, [TrackInfo(), TrackInfo(), TrackInfo()])
    modes = np.zeros((3, 4), dtype=np.int8)
    modes[0, 3] = modes[2, 0] = modes[2, 2] = BarMode.FILL
    window = tokenizer.encode_window(score, bar_modes=modes)
    assert window.fill_targets == ((0, 3), (2, 0), (2, 2))
    assert window.ids[0] == 1
    assert isinstance(window, EncodedWindow)


# ---- quantisation and clamps ------------------------------------------------------------
def test_to_grid_rounds_onto_twelve_ticks(tokenizer):
    notes = NoteArrays.from_rows([(0, 0, 19, 21, 60, 100), (0, 0, 20, 20, 62, 100)])  # at 480 tpq
    grid = tokenizer.to_grid(
        Score(resolution=480, time_signatures=[(4, 4)], track_info=[TrackInfo()], notes=notes)
    )
    assert grid.resolution == 12
    assert grid.notes.onset.tolist() == [0, 1]
    assert grid.notes.duration.tolist() == [1, 1]
    same = Score.empty(1, [TrackInfo()])
    assert tokenizer.to_grid(same) is same


def test_onset_rounded_onto_the_bar_end_is_clamped_not_dropped(tokenizer):
    notes = NoteArrays.from_rows([(0, 0, 1915, 100, 60, 100)])  # rounds to tick 48 of a 48-tick bar
    score = Score(
        resolution=480, time_signatures=[(4, 4)] * 4, track_info=[TrackInfo()], notes=notes
    )
    ids = tokenizer.encode_score(score, attributes=False).tolist()
    assert 378 + 48 in ids and 214 in ids


def test_onsets_beyond_the_position_domain_share_one_clamped_group(tokenizer):
    notes = NoteArrays.from_rows(
        [(0, 0, 250, 1, 64, 100), (0, 0, 200, 1, 67, 100), (0, 0, 300, 1, 60, 100)]
    )
    score = Score(
        resolution=12,
        time_signatures=[(4, 4)] * 4,
        track_info=[TrackInfo(is_drum=True)],
        notes=notes,
    )
    ids = tokenizer.encode_score(score, attributes=False).tolist()
    assert ids[4:11] == [BAR, 20, 378 + 191, 595, 214, 218, 221]


# ---- attributes -------------------------------------------------------------------------
def test_attributes_follow_track_type(tokenizer):
    rng = np.random.default_rng(11)
    score = random_score(rng, 4)
    values = tokenizer.compute_attributes(score)
    for t, info in enumerate(score.track_info):
        if info.is_drum:
            assert values[t, :4].tolist() == [-1] * 4 and values[t, 4] >= 0
        else:
            assert np.all(values[t, :4] >= 0) and values[t, 4] == -1


def test_attribute_bar_mask_excludes_bars(tokenizer):
    notes = NoteArrays.from_rows(
        [(0, 0, 0, 3, 60, 100)] + [(0, 1, 0, 48, 60 + i, 100) for i in range(4)]
    )
    score = Score(
        resolution=12, time_signatures=[(4, 4)] * 2, track_info=[TrackInfo()], notes=notes
    )
    assert tokenizer.compute_attributes(score).tolist() == [[3, 3, 5, 5, -1]]
    assert tokenizer.compute_attributes(score, np.array([[True, False]])).tolist() == [[0, 0, 1, 1, -1]]  # fmt: skip
    with pytest.raises(TokenizerError, match="bar_mask has shape"):
        tokenizer.compute_attributes(score, np.ones((1, 3), dtype=bool))


def test_only_the_given_attributes_are_emitted(tokenizer):
    score = Score.empty(4, [TrackInfo()])
    ids = tokenizer.encode_window(score, attributes=np.array([[-1, 4, -1, 2, -1]])).ids.tolist()
    assert ids[:6] == [0, 152, 2, 43, 625 + 4, 641 + 2]


# ---- errors -----------------------------------------------------------------------------
def test_unknown_meter_names_the_bar_and_the_meter(tokenizer):
    score = Score.empty(4, [TrackInfo()])
    score.time_signatures[2] = (5, 16)
    with pytest.raises(TokenizerError, match="bar 2: time signature 5/16 is not in the vocabulary"):
        tokenizer.encode_score(score)


def test_num_bars_outside_the_map_is_refused(tokenizer):
    with pytest.raises(TokenizerError, match=r"window_bars=1 not in num_bars_map \[4, 8\]"):
        tokenizer.encode_score(worked_score())
    with pytest.raises(TokenizerError, match=r"window_bars=6 not in num_bars_map"):
        tokenizer.encode_window(Score.empty(6, [TrackInfo()]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"track_order": [0, 2]}, "outside 0..1"),
        ({"track_order": [1, 1]}, "lists a track twice"),
        ({"bar_modes": np.zeros((2, 3))}, "bar_modes has shape"),
        ({"bar_modes": np.full((2, 4), 7)}, "BarMode 0..5"),
        ({"attributes": np.full((2, 5), 10)}, "min_polyphony=10 outside"),
        ({"attributes": np.zeros((1, 5))}, "attributes has shape"),
        ({"start_bar": 2}, "runs past"),
        ({"start_bar": 4}, "start_bar=4 outside"),
    ],
)
def test_bad_requests_are_refused_with_the_field_named(tokenizer, kwargs, message):
    score = Score.empty(4, [TrackInfo(), TrackInfo()])
    if kwargs.get("start_bar") == 2:
        kwargs = {**kwargs, "n_bars": 4}
    with pytest.raises(TokenizerError, match=message):
        tokenizer.encode_window(score, **kwargs)
