"""Encode kernel: emission order, stickiness, clamps and bar modes (tokens.md §3, §4)."""

import numpy as np
import pytest

from sideman.dsp import encode
from sideman.dsp.encode import encode_window_kernel, notes_are_sorted
from sideman.engine.vocab import ATTRIBUTE_NAMES, ATTRIBUTE_TYPES, EncoderConfig, TokenType

NOTES, FILL, MASKED, REMOVED, CUT, MASK_TOKEN = 0, 1, 2, 3, 4, 5
MASK_BAR_ID = 647  # yellow's 647 ids plus one MaskBar domain
NO_ATTRIBUTES = [-1, -1, -1, -1, -1]
WORKED_ATTRIBUTES = [0, 1, 2, 3, -1]
# (track, bar, onset, duration, pitch, velocity) at 12 tpq: the notes of tokens.md §4.
WORKED_NOTES = [(0, 0, 0, 12, 60, 100), (0, 0, 0, 12, 64, 100), (0, 0, 24, 6, 67, 80)]
WORKED_IDS = [0, 152, 2, 43, 615, 626, 637, 644, 5, 20, 595, 214, 293, 218, 293, 402, 590, 221, 287, 6, 4]  # fmt: skip


@pytest.fixture(scope="module")
def config() -> EncoderConfig:
    return EncoderConfig.yellow()


@pytest.fixture(scope="module")
def mask_config() -> EncoderConfig:
    """Yellow with a MaskBar domain appended (648 ids)."""
    data = EncoderConfig.yellow().to_dict()
    data["token_domains"].append(["MaskBar", 1])
    return EncoderConfig.from_dict(
        {**data, "name": "yellow+maskbar", "supports_mask_bar_token": True}
    )


def run_encode(
    config,
    rows,
    *,
    meters=((4, 4),),
    drums=(False,),
    programs=None,
    attributes=None,
    order=None,
    modes=None,
    piece_start=0,
    num_bars_index=0,
):
    """Call the kernel with tables from the yellow config; rows as in WORKED_NOTES."""
    n_tracks = len(drums)
    n_bars = len(meters)
    table = np.asarray(rows, dtype=np.int32).reshape(-1, 6)
    table = table[np.lexsort((table[:, 4], table[:, 2], table[:, 1], table[:, 0]))]
    columns = [np.ascontiguousarray(table[:, i]) for i in range(6)]
    vocabulary = config.vocabulary
    programs = programs or [0] * n_tracks
    ids, spans = encode_window_kernel(
        *columns,
        np.array([config.time_signature_index(*m) for m in meters], dtype=np.int32),
        np.array(drums, dtype=np.int8),
        config.program_to_group[np.array(programs)].astype(np.int32),
        np.array(attributes or [NO_ATTRIBUTES] * n_tracks, dtype=np.int32),
        np.array(order if order is not None else range(n_tracks), dtype=np.int32),
        np.array(modes if modes is not None else np.zeros((n_tracks, n_bars)), dtype=np.int8),
        piece_start,
        num_bars_index,
        vocabulary.offsets,
        vocabulary.sizes,
        config.velocity_to_level,
        config.max_duration_ticks,
    )
    return ids.tolist(), spans.tolist()


def test_token_type_constants_mirror_the_vocabulary_enum():
    for name in TokenType.__members__:
        if hasattr(encode, name):
            assert getattr(encode, name) == TokenType[name]
    expected = [ATTRIBUTE_TYPES[name] for name in ATTRIBUTE_NAMES]
    assert encode.ATTRIBUTE_TOKEN_TYPES.tolist() == expected


def test_worked_example_matches_id_for_id(config):
    ids, spans = run_encode(config, WORKED_NOTES, attributes=[WORKED_ATTRIBUTES])
    assert ids == WORKED_IDS
    assert spans == []


def test_worked_example_on_a_drum_track_has_density_and_no_durations(config):
    ids, _ = run_encode(config, WORKED_NOTES, drums=(True,), attributes=[[-1, -1, -1, -1, 1]])
    assert ids == [0, 152, 3, 43, 606, 5, 20, 595, 214, 218, 402, 590, 221, 6, 4]


def test_worked_example_without_attributes_drops_the_attribute_tokens(config):
    ids, _ = run_encode(config, WORKED_NOTES)
    assert ids == [i for i in WORKED_IDS if i not in (615, 626, 637, 644)]


def test_worked_example_infill_puts_the_bar_in_a_fill_block(config):
    ids, _ = run_encode(
        config, WORKED_NOTES, attributes=[WORKED_ATTRIBUTES], modes=[[FILL]], piece_start=1
    )
    assert ids == [1, 152, 2, 43, 615, 626, 637, 644, 5, 20, 602, 6, 4, 603, 595, 214, 293, 218, 293, 402, 590, 221, 287, 604]  # fmt: skip


def test_velocity_is_sticky_within_a_bar_and_reemitted_at_every_bar(config):
    rows = [(0, 0, 0, 3, 60, 100), (0, 0, 3, 3, 62, 100), (0, 1, 0, 3, 64, 100)]
    ids, _ = run_encode(config, rows, meters=((4, 4), (4, 4)))
    assert ids == [0, 152, 2, 43, 5, 20, 595, 214, 284, 381, 216, 284, 6, 5, 20, 595, 218, 284, 6, 4]  # fmt: skip


def test_velocity_level_zero_is_never_emitted(config):
    ids, _ = run_encode(config, [(0, 0, 0, 1, 60, 0)])
    assert ids == [0, 152, 2, 43, 5, 20, 214, 282, 6, 4]


def test_onset_and_duration_are_clamped_into_their_domains(config):
    rows = [(0, 0, 250, 200, 60, 100)]
    ids, _ = run_encode(config, rows, meters=((16, 4),))
    assert ids == [0, 152, 2, 43, 5, 41, 378 + 191, 595, 214, 282 + 95, 6, 4]


def test_onset_at_the_bar_end_is_kept_not_dropped(config):
    ids, _ = run_encode(config, [(0, 0, 48, 2, 60, 100)])
    assert ids == [0, 152, 2, 43, 5, 20, 378 + 48, 595, 214, 283, 6, 4]


def test_num_bars_is_omitted_for_a_negative_index(config):
    ids, _ = run_encode(config, [], num_bars_index=-1)
    assert ids == [0, 2, 43, 5, 20, 6, 4]


def test_masked_bar_is_an_empty_shell_whose_span_is_reported(config):
    rows = [(0, 0, 0, 12, 60, 100), (0, 1, 0, 12, 62, 100), (0, 2, 0, 12, 64, 100)]
    ids, spans = run_encode(
        config, rows, meters=((4, 4), (7, 8), (4, 4)), modes=[[NOTES, MASKED, NOTES]]
    )
    assert len(spans) == 1
    start, end = spans[0]
    assert ids[start:end] == [5, 7 + 21, 6]
    assert 216 not in ids  # the masked bar's note is hidden


def test_mask_token_bar_is_bar_time_sig_mask_bar_bar_end_without_a_span(mask_config):
    rows = [(0, 0, 0, 12, 60, 100), (0, 1, 0, 12, 62, 100), (0, 2, 0, 12, 64, 100)]
    ids, spans = run_encode(
        mask_config,
        rows,
        meters=((4, 4), (7, 8), (4, 4)),
        modes=[[NOTES, MASK_TOKEN, NOTES]],
    )
    assert mask_config.vocabulary.encode(TokenType.MASK_BAR) == MASK_BAR_ID
    assert ids == [0, 152, 2, 43, 5, 20, 595, 214, 293, 6, 5, 28, MASK_BAR_ID, 6, 5, 20, 595, 218, 293, 6, 4]  # fmt: skip
    assert spans == []


def test_mask_token_mixes_with_other_modes_on_a_drum_track(mask_config):
    rows = [(0, 0, 0, 12, 36, 100), (0, 1, 0, 12, 38, 100), (0, 2, 0, 12, 40, 100)]
    ids, spans = run_encode(
        mask_config,
        rows,
        meters=((4, 4),) * 4,
        drums=(True,),
        modes=[[MASK_TOKEN, MASKED, MASK_TOKEN, CUT]],
    )
    assert ids == [0, 152, 3, 43, 5, 20, MASK_BAR_ID, 6, 5, 20, 6, 5, 20, MASK_BAR_ID, 6]
    assert spans == [[8, 11]]


def test_mask_token_without_a_mask_bar_domain_falls_back_to_a_bare_shell(config):
    ids, spans = run_encode(config, [(0, 0, 0, 12, 60, 100)], modes=[[MASK_TOKEN]])
    assert ids == [0, 152, 2, 43, 5, 20, 6, 4]
    assert spans == []


def test_removed_bar_emits_nothing(config):
    rows = [(0, 0, 0, 12, 60, 100), (0, 1, 0, 12, 62, 100)]
    ids, _ = run_encode(config, rows, meters=((4, 4), (3, 4)), modes=[[REMOVED, NOTES]])
    assert ids == [0, 152, 2, 43, 5, 17, 595, 216, 293, 6, 4]


def test_cut_track_ends_on_its_last_context_bar_end_without_track_end(config):
    rows = [(0, 0, 0, 12, 60, 100), (0, 1, 0, 12, 62, 100), (1, 0, 0, 12, 40, 100)]
    ids, _ = run_encode(
        config,
        rows,
        meters=((4, 4), (4, 4)),
        drums=(False, False),
        order=[1, 0],
        modes=[[NOTES, CUT], [NOTES, NOTES]],
    )
    assert ids[-1] == 6
    assert ids.count(4) == 1  # only the context track closes
    assert 216 not in ids  # nothing from the cut bar on
    assert ids[2:4] == [2, 43]
    assert ids.index(194) < ids.index(214)  # track 1 first, as ordered


def test_fill_blocks_follow_emission_order_with_their_own_velocity(config):
    rows = [(0, 0, 0, 12, 60, 100), (0, 1, 0, 12, 62, 100), (1, 1, 5, 12, 36, 100)]
    ids, _ = run_encode(
        config,
        rows,
        meters=((4, 4), (4, 4)),
        drums=(False, True),
        modes=[[FILL, FILL], [NOTES, FILL]],
        piece_start=1,
    )
    tail = ids[ids.index(603) :]
    assert tail == [603, 595, 214, 293, 604, 603, 595, 216, 293, 604, 603, 383, 595, 190, 604]
    assert ids[: ids.index(603)].count(602) == 3


def test_ignored_track_has_no_tokens(config):
    rows = [(0, 0, 0, 12, 60, 100), (1, 0, 0, 12, 40, 100)]
    ids, _ = run_encode(config, rows, drums=(False, False), order=[1])
    assert ids == [0, 152, 2, 43, 5, 20, 595, 194, 293, 6, 4]


def test_listing_a_track_twice_cannot_overrun_the_buffer(config):
    rows = [(0, 0, o, 1, 60, 100) for o in range(40)]
    ids, _ = run_encode(config, rows, order=[0, 0, 0])
    assert ids.count(2) == 3


def test_notes_are_sorted_checks_all_four_keys():
    def check(rows):
        t = np.asarray(rows, dtype=np.int32).reshape(-1, 4)
        return notes_are_sorted(*(np.ascontiguousarray(t[:, i]) for i in range(4)))

    assert check([(0, 0, 0, 60), (0, 0, 0, 64), (0, 0, 3, 10), (0, 1, 0, 0), (1, 0, 0, 0)])
    assert not check([(0, 0, 0, 64), (0, 0, 0, 60)])
    assert not check([(0, 0, 3, 60), (0, 0, 0, 60)])
    assert not check([(0, 1, 0, 60), (0, 0, 0, 60)])
    assert not check([(1, 0, 0, 60), (0, 0, 0, 60)])
    assert check([])
