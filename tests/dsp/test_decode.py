"""Decode kernel: fill resolution, the note state machine and robustness (tokens.md §5)."""

import numpy as np
import pytest

from sideman.dsp.decode import decode_kernel, resolve_fills
from sideman.engine.vocab import EncoderConfig

WORKED_IDS = [0, 152, 2, 43, 615, 626, 637, 644, 5, 20, 595, 214, 293, 218, 293, 402, 590, 221, 287, 6, 4]  # fmt: skip
PLACEHOLDER, FILL_START, FILL_END = 602, 603, 604


@pytest.fixture(scope="module")
def config() -> EncoderConfig:
    return EncoderConfig.yellow()


def run_decode(config, ids):
    vocabulary = config.vocabulary
    out = decode_kernel(
        np.asarray(ids, dtype=np.int32),
        vocabulary.id_type,
        vocabulary.id_value,
        config.level_to_velocity,
    )
    names = (
        "track",
        "bar",
        "onset",
        "duration",
        "pitch",
        "velocity",
        "is_drum",
        "group",
        "attributes",
        "bar_offsets",
        "bar_timesig",
    )
    return dict(zip(names, out, strict=True))


def note_rows(decoded):
    columns = ("track", "bar", "onset", "duration", "pitch", "velocity")
    return [tuple(int(x) for x in row) for row in zip(*(decoded[c] for c in columns), strict=True)]


def test_worked_example_decodes_to_twelve_tick_notes(config):
    decoded = note_rows(run_decode(config, WORKED_IDS))
    assert [(p, v, o, d) for _, _, o, d, p, v in decoded] == [
        (60, 101, 0, 12),
        (64, 101, 0, 12),
        (67, 80, 24, 6),
    ]


def test_worked_example_keeps_track_data(config):
    decoded = run_decode(config, WORKED_IDS)
    assert decoded["is_drum"].tolist() == [0]
    assert decoded["group"].tolist() == [0]
    assert decoded["attributes"].tolist() == [[0, 1, 2, 3, -1]]
    assert decoded["bar_offsets"].tolist() == [0, 1]
    assert decoded["bar_timesig"].tolist() == [13]


def test_placeholders_take_fill_blocks_in_order_and_the_tail_is_dropped(config):
    ids = [1, 152, 2, 43, 5, 20, PLACEHOLDER, 6, 5, 20, PLACEHOLDER, 6, 4,
           FILL_START, 214, 293, FILL_END, FILL_START, 218, 293, FILL_END]  # fmt: skip
    resolved = resolve_fills(np.asarray(ids, dtype=np.int32), config.vocabulary.id_type).tolist()
    assert resolved == [1, 152, 2, 43, 5, 20, 214, 293, 6, 5, 20, 218, 293, 6, 4]


def test_an_unterminated_fill_block_still_resolves(config):
    ids = [1, 152, 2, 43, 5, 20, PLACEHOLDER, 6, 4, FILL_START, 595, 214]
    resolved = resolve_fills(np.asarray(ids, dtype=np.int32), config.vocabulary.id_type).tolist()
    assert resolved == [1, 152, 2, 43, 5, 20, 595, 214, 6, 4]


def test_placeholder_without_a_block_is_dropped(config):
    ids = [1, 152, 2, 43, 5, 20, PLACEHOLDER, 6, 4]
    resolved = resolve_fills(np.asarray(ids, dtype=np.int32), config.vocabulary.id_type).tolist()
    assert resolved == [1, 152, 2, 43, 5, 20, 6, 4]


def test_drum_note_is_made_at_onset_with_one_tick(config):
    decoded = note_rows(run_decode(config, [0, 3, 43, 5, 20, 402, 214, 293, 218, 6, 4]))
    assert decoded == [(0, 0, 24, 1, 60, 100), (0, 0, 24, 1, 64, 100)]


def test_melodic_duration_only_counts_right_after_an_onset(config):
    # NoteDuration before the first Bar is a note_duration_dist attribute; a stray one after a
    # duration makes no note.
    decoded = note_rows(run_decode(config, [0, 2, 43, 290, 5, 20, 214, 293, 293, 218, 6, 4]))
    assert decoded == [(0, 0, 0, 12, 60, 100)]


def test_velocity_level_zero_or_none_decodes_as_one_hundred(config):
    decoded = note_rows(
        run_decode(config, [2, 43, 5, 20, 214, 282, 570, 216, 282, 580, 218, 282, 6, 4])
    )
    assert [v for *_, v in decoded] == [100, 100, 39]


def test_trailing_open_track_is_flushed(config):
    decoded = run_decode(config, [0, 152, 2, 43, 5, 20, 6, 4, 2, 43, 5, 20, 214, 293, 6, 5, 20])
    assert decoded["bar_offsets"].tolist() == [0, 1, 3]
    assert note_rows(decoded) == [(1, 0, 0, 12, 60, 100)]


def test_bars_count_per_track_and_keep_their_meters(config):
    decoded = run_decode(
        config, [0, 2, 43, 5, 28, 6, 5, 33, 378 + 20, 214, 293, 6, 4, 3, 43, 5, 10, 6, 4]
    )
    assert decoded["bar_offsets"].tolist() == [0, 2, 3]
    assert decoded["bar_timesig"].tolist() == [21, 26, 3]
    assert note_rows(decoded) == [(0, 1, 20, 12, 60, 100)]


def test_tokens_outside_a_track_or_bar_are_skipped(config):
    decoded = run_decode(config, [214, 293, 5, 2, 43, 214, 293, 5, 20, 6, 214, 293, 4, 214, 293])
    assert note_rows(decoded) == []


def test_random_garbage_never_crashes(config):
    rng = np.random.default_rng(7)
    size = config.vocabulary.size
    for trial in range(300):
        n = int(rng.integers(0, 400))
        if trial % 3 == 0:
            ids = rng.integers(-50, size + 50, n)
        else:
            ids = rng.integers(0, size, n)
        decoded = run_decode(config, ids)
        n_tracks = len(decoded["is_drum"])
        offsets = decoded["bar_offsets"]
        assert len(offsets) == n_tracks + 1
        assert np.all(np.diff(offsets) >= 0)
        assert offsets[-1] == len(decoded["bar_timesig"])
        if len(decoded["track"]):
            assert decoded["track"].max() < n_tracks
            bars_per_track = np.diff(offsets)
            assert np.all(decoded["bar"] < bars_per_track[decoded["track"]])
            assert decoded["duration"].min() >= 1
            assert 0 <= decoded["pitch"].min() and decoded["pitch"].max() <= 127


# ---- MaskBar (mask mode "token"; not in yellow) ------------------------------------------
MASK_BAR_ID = 647


@pytest.fixture(scope="module")
def mask_config() -> EncoderConfig:
    """Yellow with a MaskBar domain appended (648 ids)."""
    data = EncoderConfig.yellow().to_dict()
    data["token_domains"].append(["MaskBar", 1])
    return EncoderConfig.from_dict({**data, "supports_mask_bar_token": True})


def test_mask_bar_decodes_as_an_empty_bar_that_keeps_its_meter(mask_config):
    ids = [0, 152, 2, 43, 5, 20, 595, 214, 293, 6, 5, 28, MASK_BAR_ID, 6, 5, 20, 218, 293, 6, 4]
    decoded = run_decode(mask_config, ids)
    assert decoded["bar_offsets"].tolist() == [0, 3]
    assert decoded["bar_timesig"].tolist() == [13, 21, 13]
    assert note_rows(decoded) == [(0, 0, 0, 12, 60, 101), (0, 2, 0, 12, 64, 101)]


def test_notes_around_a_mask_bar_in_the_same_bar_are_dropped(mask_config):
    before = [5, 20, 595, 214, 293, 402, 216, 293]
    after = [218, 293, 378 + 30, 220, 293]
    ids = [0, 2, 43, *before, MASK_BAR_ID, *after, 6, 5, 20, 222, 293, 6, 4]
    decoded = run_decode(mask_config, ids)
    assert decoded["bar_offsets"].tolist() == [0, 2]
    assert note_rows(decoded) == [(0, 1, 0, 12, 68, 101)]


def test_mask_bar_outside_a_bar_or_track_is_skipped(mask_config):
    ids = [MASK_BAR_ID, 0, 2, MASK_BAR_ID, 43, 5, 20, 214, 293, 6, MASK_BAR_ID, 4, MASK_BAR_ID]
    decoded = run_decode(mask_config, ids)
    assert decoded["bar_offsets"].tolist() == [0, 1]
    assert note_rows(decoded) == [(0, 0, 0, 12, 60, 100)]


def test_random_garbage_with_mask_bars_never_crashes(mask_config):
    rng = np.random.default_rng(11)
    size = mask_config.vocabulary.size
    for _ in range(200):
        ids = rng.integers(0, size, int(rng.integers(0, 400)))
        ids[rng.random(len(ids)) < 0.1] = MASK_BAR_ID
        decoded = run_decode(mask_config, ids)
        offsets = decoded["bar_offsets"]
        assert offsets[-1] == len(decoded["bar_timesig"])
        if len(decoded["track"]):
            bars_per_track = np.diff(offsets)
            assert np.all(decoded["bar"] < bars_per_track[decoded["track"]])
