"""The yellow vocabulary: id layout, velocity bins, meters and instrument groups (tokens.md §2, §6)."""

import json

import numpy as np
import pytest

from sideman.engine.vocab import EncoderConfig, EncoderConfigError, TokenType, VocabularyError

YELLOW = EncoderConfig.yellow()

# tokens.md §2: (type, first id, size)
LAYOUT = [
    (TokenType.PIECE_START, 0, 2),
    (TokenType.TRACK, 2, 2),
    (TokenType.TRACK_END, 4, 1),
    (TokenType.BAR, 5, 1),
    (TokenType.BAR_END, 6, 1),
    (TokenType.TIME_SIGNATURE, 7, 36),
    (TokenType.INSTRUMENT, 43, 109),
    (TokenType.NUM_BARS, 152, 2),
    (TokenType.NOTE_ONSET, 154, 128),
    (TokenType.NOTE_DURATION, 282, 96),
    (TokenType.TIME_ABSOLUTE_POS, 378, 192),
    (TokenType.VELOCITY_LEVEL, 570, 32),
    (TokenType.FILL_IN_PLACEHOLDER, 602, 1),
    (TokenType.FILL_IN_START, 603, 1),
    (TokenType.FILL_IN_END, 604, 1),
    (TokenType.NOTE_DENSITY, 605, 10),
    (TokenType.MIN_POLYPHONY, 615, 10),
    (TokenType.MAX_POLYPHONY, 625, 10),
    (TokenType.MIN_NOTE_DURATION, 635, 6),
    (TokenType.MAX_NOTE_DURATION, 641, 6),
]

# tokens.md §6.4: level -> (min velocity, max velocity, decoded velocity)
VELOCITY_BINS = {
    1: (1, 4, 2), 2: (5, 8, 6), 3: (9, 12, 10), 4: (13, 16, 14), 5: (17, 20, 18), 6: (21, 24, 22),
    7: (25, 28, 26), 8: (29, 33, 30), 9: (34, 37, 35), 10: (38, 41, 39), 11: (42, 45, 43),
    12: (46, 49, 47), 13: (50, 53, 51), 14: (54, 57, 55), 15: (58, 61, 59), 16: (62, 66, 63),
    17: (67, 70, 68), 18: (71, 74, 72), 19: (75, 78, 76), 20: (79, 82, 80), 21: (83, 86, 84),
    22: (87, 90, 88), 23: (91, 94, 92), 24: (95, 99, 96), 25: (100, 103, 101), 26: (104, 107, 105),
    27: (108, 111, 109), 28: (112, 115, 113), 29: (116, 119, 117), 30: (120, 123, 121), 31: (124, 127, 125),
}

# tokens.md §6.5 in index order
METERS = [
    "1/2", "1/4", "1/8", "1/16", "2/1", "2/2", "2/4", "2/8", "3/1", "3/2", "3/4", "3/8", "4/2", "4/4",
    "4/8", "5/4", "5/8", "6/2", "6/4", "6/8", "7/4", "7/8", "8/4", "8/8", "9/4", "9/8", "9/16", "10/4",
    "10/8", "11/8", "12/4", "12/8", "13/16", "15/16", "16/4", "17/16",
]


def test_yellow_layout_matches_the_spec_table():
    vocab = YELLOW.vocabulary
    assert len(vocab) == 647
    for token_type, first, size in LAYOUT:
        assert vocab.offsets[token_type] == first
        assert vocab.sizes[token_type] == size
        assert vocab.decode(first + size - 1) == (token_type, size - 1)


@pytest.mark.parametrize("level", sorted(VELOCITY_BINS))
def test_velocity_bins_match_the_spec_table(level):
    low, high, decoded = VELOCITY_BINS[level]
    assert np.all(YELLOW.velocity_to_level[low : high + 1] == level)
    assert YELLOW.velocity_to_level[low - 1] != level
    assert YELLOW.level_to_velocity[level] == decoded


def test_velocity_zero_is_level_zero_and_level_zero_decodes_as_100():
    assert YELLOW.velocity_to_level[0] == 0
    assert YELLOW.level_to_velocity[0] == 100


def test_time_signature_list_and_exact_bar_lengths():
    assert [f"{n}/{d}" for n, d in YELLOW.time_signatures] == METERS
    exact = {"1/8": 6, "1/16": 3, "3/8": 18, "5/8": 30, "7/8": 42, "9/8": 54, "9/16": 27, "11/8": 66,
             "13/16": 39, "15/16": 45, "17/16": 51, "4/4": 48, "16/4": 192}
    for meter, ticks in exact.items():
        assert YELLOW.bar_ticks[METERS.index(meter)] == ticks
    assert YELLOW.time_signature_index(4, 4) == 13
    assert YELLOW.time_signature_index(5, 16) == -1


@pytest.mark.parametrize(
    "programs, group",
    [((0, 1, 2), 0), ((3,), 1), ((4, 5), 2), ((6,), 3), ((16, 17, 18), 13), ((19, 20), 14), ((21,), 15),
     ((33, 34), 27), ((48, 49), 39), ((62, 63), 51), (tuple(range(88, 96)), 76), ((96,), 77), ((127,), 108)],
)
def test_instrument_groups_match_the_spec_examples(programs, group):
    for program in programs:
        assert YELLOW.program_to_group[program] == group
    assert YELLOW.group_to_program[group] == programs[0]


def test_there_are_109_instrument_groups():
    assert YELLOW.program_to_group.max() == 108
    assert len(YELLOW.group_to_program) == 109


def test_config_round_trips_through_json():
    again = EncoderConfig.from_json(YELLOW.to_json())
    assert again.token_domains == YELLOW.token_domains
    assert again.time_signatures == YELLOW.time_signatures
    assert np.array_equal(again.vocabulary.id_type, YELLOW.vocabulary.id_type)


def test_domain_order_is_taken_verbatim_from_the_file():
    data = YELLOW.to_dict()
    data["token_domains"] = [data["token_domains"][1], data["token_domains"][0]] + data["token_domains"][2:]
    swapped = EncoderConfig.from_dict(data)
    assert swapped.vocabulary.offsets[TokenType.TRACK] == 0
    assert swapped.vocabulary.offsets[TokenType.PIECE_START] == 2


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("token_domains"), "no 'token_domains'"),
        (lambda d: d["token_domains"].append(["Banana", 3]), "unsupported token type 'Banana'"),
        (lambda d: d["token_domains"].append(["Bar", 1]), "appears twice"),
        (lambda d: d["token_domains"].__setitem__(0, ["PieceStart", 0]), "size must be a positive int"),
        (lambda d: d["token_domains"].__setitem__(0, "PieceStart"), "must be [type, size]"),
    ],
)
def test_bad_encoder_configs_are_refused_with_the_reason(mutate, message):
    data = json.loads(YELLOW.to_json())
    mutate(data)
    with pytest.raises(EncoderConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        EncoderConfig.from_dict(data)


def test_encoder_config_that_is_not_json_is_refused():
    with pytest.raises(EncoderConfigError, match="not valid JSON"):
        EncoderConfig.from_json("{not json")


def test_out_of_domain_values_are_refused():
    vocab = YELLOW.vocabulary
    with pytest.raises(VocabularyError, match="NoteOnset value 128"):
        vocab.encode(TokenType.NOTE_ONSET, 128)
    with pytest.raises(VocabularyError, match="no MaskBar"):
        vocab.encode(TokenType.MASK_BAR)
    with pytest.raises(VocabularyError, match="outside the vocabulary"):
        vocab.decode(647)
