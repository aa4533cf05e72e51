"""The grammar state machine: tokens.md §11.1 table, extra rules, caps, pins and completion."""

from __future__ import annotations

import numpy as np
import pytest

from sideman.dsp import grammar as kernels
from sideman.engine.sampler import Constraints, Grammar, GrammarError
from sideman.engine.vocab import EncoderConfig, TokenType

CFG = EncoderConfig.yellow()
VOCAB = CFG.vocabulary
T = TokenType

WORKED = [0, 152, 2, 43, 615, 626, 637, 644, 5, 20, 595, 214, 293, 218, 293, 402, 590, 221, 287, 6, 4]  # fmt: skip
WORKED_INFILL = [1, 152, 2, 43, 615, 626, 637, 644, 5, 20, 602, 6, 4, 603, 595, 214, 293, 218, 293, 402, 590, 221, 287, 604]  # fmt: skip

TS_4_4, TS_7_8, TS_1_16 = 13, 21, 3


def tok(token_type: TokenType, value: int = 0) -> int:
    return VOCAB.encode(token_type, value)


def track(drum: bool = False) -> list[int]:
    return [tok(T.TRACK, int(drum)), tok(T.INSTRUMENT, 0)]


def bar(ts: int = TS_4_4) -> list[int]:
    return [tok(T.BAR), tok(T.TIME_SIGNATURE, ts)]


def note(pitch: int = 60, drum: bool = False) -> list[int]:
    return [tok(T.NOTE_ONSET, pitch)] + ([] if drum else [tok(T.NOTE_DURATION, 11)])


PIECE = [tok(T.PIECE_START, 0), tok(T.NUM_BARS, 0)]
FULL_BAR = bar() + [tok(T.VELOCITY_LEVEL, 20)] + note() + [tok(T.BAR_END)]


def accepted(constraints: Constraints, ids: list[int]) -> tuple[Grammar, np.ndarray]:
    grammar = Grammar(CFG, constraints)
    states = grammar.new_states(1)
    grammar.advance(states, np.array(ids), strict=True)
    return grammar, states


def legal(constraints: Constraints, prefix: list[int], token: int) -> bool:
    """Whether ``token`` may follow the (legal) ``prefix``; mask and strict advance must agree."""
    grammar, states = accepted(constraints, prefix)
    in_mask = bool(grammar.legal_mask(states)[0, token])
    try:
        grammar.advance(states, np.array([token]), strict=True)
        stepped = True
    except GrammarError:
        stepped = False
    assert in_mask == stepped
    return in_mask


def legal_values(constraints: Constraints, prefix: list[int], token_type: TokenType) -> list[int]:
    grammar, states = accepted(constraints, prefix)
    first, size = int(VOCAB.offsets[token_type]), int(VOCAB.sizes[token_type])
    return np.flatnonzero(grammar.legal_mask(states)[0, first : first + size]).tolist()


def legal_types(constraints: Constraints, prefix: list[int]) -> set[TokenType]:
    grammar, states = accepted(constraints, prefix)
    return {TokenType(int(t)) for t in np.unique(VOCAB.id_type[grammar.legal_mask(states)[0]])}


LOOSE = Constraints(require_notes=False)


def test_kernel_type_ids_match_the_vocabulary_enum():
    for token_type in TokenType:
        assert getattr(kernels, token_type.name) == int(token_type)


def test_worked_example_is_legal_token_by_token_and_completes_the_last_track():
    grammar, states = accepted(Constraints(max_tracks=1, autoregressive=True), WORKED[:-1])
    assert not grammar.complete(states)[0]
    grammar.advance(states, np.array(WORKED[-1:]), strict=True)
    assert grammar.complete(states)[0]


def test_infill_worked_example_is_legal_and_completes_at_the_last_fill_in_end():
    constraints = Constraints(
        max_tracks=1, n_fill_targets=1, fill_block_is_drum=(False,), fill_block_bar_ticks=(48,)
    )
    grammar, states = accepted(constraints, WORKED_INFILL[:-1])
    assert not grammar.complete(states)[0]
    grammar.advance(states, np.array(WORKED_INFILL[-1:]), strict=True)
    assert grammar.complete(states)[0]


def test_sequence_must_open_with_piece_start_and_bar_with_time_signature():
    assert legal_types(LOOSE, []) == {T.PIECE_START}
    assert legal_types(LOOSE, PIECE + track() + [tok(T.BAR)]) == {T.TIME_SIGNATURE}


def test_strict_advance_names_position_and_token():
    grammar = Grammar(CFG, LOOSE)
    states = grammar.new_states(1)
    with pytest.raises(GrammarError, match=r"token 5 \(Bar\(0\)\) at position 2"):
        grammar.advance(states, np.array(PIECE + [tok(T.BAR)]), strict=True)


def test_non_strict_advance_follows_an_empty_context_bar_under_require_notes():
    grammar = Grammar(CFG, Constraints())
    states = grammar.new_states(2)
    grammar.advance(states, np.array(PIECE + track() + bar() + [tok(T.BAR_END)]))
    assert grammar.legal_mask(states)[:, tok(T.BAR)].all()


# ---- positions -------------------------------------------------------------------------
def test_positions_stop_below_the_exact_7_8_bar_length_of_42_ticks():
    prefix = PIECE + track() + bar(TS_7_8)
    assert legal_values(LOOSE, prefix, T.TIME_ABSOLUTE_POS) == list(range(1, 42))
    assert legal(LOOSE, prefix, tok(T.TIME_ABSOLUTE_POS, 41))
    assert not legal(LOOSE, prefix, tok(T.TIME_ABSOLUTE_POS, 42))


def test_positions_in_a_1_16_bar_are_1_and_2_only():
    prefix = PIECE + track() + bar(TS_1_16)
    assert legal_values(LOOSE, prefix, T.TIME_ABSOLUTE_POS) == [1, 2]
    assert not legal(LOOSE, prefix, tok(T.TIME_ABSOLUTE_POS, 3))


def test_positions_strictly_increase_inside_a_bar_and_restart_at_the_next():
    prefix = PIECE + track() + bar() + [tok(T.TIME_ABSOLUTE_POS, 24)] + note()
    assert not legal(LOOSE, prefix, tok(T.TIME_ABSOLUTE_POS, 24))
    assert legal(LOOSE, prefix, tok(T.TIME_ABSOLUTE_POS, 25))
    next_bar = prefix + [tok(T.BAR_END)] + bar()
    assert legal(LOOSE, next_bar, tok(T.TIME_ABSOLUTE_POS, 12))


# ---- exact bars, tracks ----------------------------------------------------------------
def test_exact_bars_requires_n_bars_per_track_and_resets_at_track():
    constraints = Constraints(exact_bars=2, require_notes=False)
    one_bar = PIECE + track() + FULL_BAR
    assert legal(constraints, one_bar, tok(T.BAR))
    assert not legal(constraints, one_bar, tok(T.TRACK_END))
    two_bars = one_bar + FULL_BAR
    assert not legal(constraints, two_bars, tok(T.BAR))
    assert legal(constraints, two_bars, tok(T.TRACK_END))
    second_track = two_bars + [tok(T.TRACK_END)] + track()
    assert not legal(constraints, second_track, tok(T.TRACK_END))
    assert legal(constraints, second_track, tok(T.BAR))


def test_max_tracks_limits_tracks_and_completes_after_the_last():
    constraints = Constraints(max_tracks=2)
    one_track = PIECE + track() + FULL_BAR + [tok(T.TRACK_END)]
    grammar, states = accepted(constraints, one_track)
    assert not grammar.complete(states)[0]
    assert legal(constraints, one_track, tok(T.TRACK))
    two_tracks = one_track + track(drum=True) + FULL_BAR[:-2] + [tok(T.BAR_END), tok(T.TRACK_END)]
    grammar, states = accepted(constraints, two_tracks)
    assert grammar.complete(states)[0]
    assert not grammar.legal_mask(states).any()
    assert legal(Constraints(max_tracks=3), two_tracks, tok(T.TRACK))


# ---- require_notes ---------------------------------------------------------------------
def test_require_notes_forbids_bar_end_right_after_time_signature():
    prefix = PIECE + track() + bar()
    assert not legal(Constraints(), prefix, tok(T.BAR_END))
    assert legal(LOOSE, prefix, tok(T.BAR_END))


def test_bar_end_after_a_position_needs_a_note_in_the_bar():
    assert not legal(LOOSE, PIECE + track() + bar() + [tok(T.TIME_ABSOLUTE_POS, 5)], tok(T.BAR_END))
    with_note = PIECE + track() + bar() + note() + [tok(T.TIME_ABSOLUTE_POS, 5)]
    assert legal(LOOSE, with_note, tok(T.BAR_END))


def test_fill_block_needs_a_note_before_fill_in_end():
    prompt = WORKED_INFILL[:14]
    constraints = Constraints(n_fill_targets=1, fill_block_is_drum=(False,))
    assert not legal(constraints, prompt, tok(T.FILL_IN_END))
    assert not legal(constraints, prompt + [tok(T.TIME_ABSOLUTE_POS, 3)], tok(T.FILL_IN_END))
    assert legal(constraints, prompt + note(), tok(T.FILL_IN_END))


# ---- note successors -------------------------------------------------------------------
def test_melodic_note_onset_is_followed_by_its_duration_only():
    prefix = PIECE + track() + bar() + [tok(T.NOTE_ONSET, 60)]
    assert legal_types(LOOSE, prefix) == {T.NOTE_DURATION}


def test_drum_note_onset_is_followed_by_the_next_event_or_bar_end():
    prefix = PIECE + track(drum=True) + bar() + [tok(T.NOTE_ONSET, 36)]
    assert legal_types(LOOSE, prefix) == {
        T.VELOCITY_LEVEL,
        T.NOTE_ONSET,
        T.TIME_ABSOLUTE_POS,
        T.BAR_END,
    }
    assert not legal(LOOSE, prefix, tok(T.NOTE_DURATION, 0))


def test_fill_block_takes_drum_flag_and_bar_length_from_its_block():
    prompt = WORKED_INFILL[:14]  # a melodic track; the block is declared drum, in 7/8
    constraints = Constraints(
        n_fill_targets=1, fill_block_is_drum=(True,), fill_block_bar_ticks=(42,)
    )
    after_onset = prompt + [tok(T.NOTE_ONSET, 36)]
    assert not legal(constraints, after_onset, tok(T.NOTE_DURATION, 0))
    assert legal(constraints, after_onset, tok(T.FILL_IN_END))
    assert not legal(constraints, after_onset, tok(T.BAR_END))
    assert legal_values(constraints, after_onset, T.TIME_ABSOLUTE_POS) == list(range(1, 42))
    melodic = Constraints(n_fill_targets=1, fill_block_is_drum=(False,), fill_block_bar_ticks=(42,))
    assert legal_types(melodic, after_onset) == {T.NOTE_DURATION}


# ---- polyphony and density -------------------------------------------------------------
TWO_FILLS = [1, 152, 2, 43] + bar() + [602, 6] + bar() + [602, 6, 4, 603]
TWO_FILL_CONSTRAINTS = dict(
    n_fill_targets=2, fill_block_is_drum=(False, False), fill_block_bar_ticks=(48, 48)
)


def test_polyphony_cap_forbids_a_further_note_at_the_same_onset():
    constraints = Constraints(polyphony_limit=2)
    prefix = PIECE + track() + bar() + note(60) + note(64)
    assert not legal(constraints, prefix, tok(T.NOTE_ONSET, 67))
    assert not legal(constraints, prefix, tok(T.VELOCITY_LEVEL, 3))
    assert legal(constraints, prefix + [tok(T.TIME_ABSOLUTE_POS, 12)], tok(T.NOTE_ONSET, 67))
    assert legal(constraints, prefix + [tok(T.BAR_END)] + bar(), tok(T.NOTE_ONSET, 67))


def test_density_cap_counts_notes_per_bar():
    constraints = Constraints(density_limit=3)
    prefix = (
        PIECE + track() + bar() + note(60) + [tok(T.TIME_ABSOLUTE_POS, 6)] + note(62) + note(64)
    )
    for token in (tok(T.NOTE_ONSET, 67), tok(T.VELOCITY_LEVEL, 3), tok(T.TIME_ABSOLUTE_POS, 12)):
        assert not legal(constraints, prefix, token)
    assert legal(constraints, prefix, tok(T.BAR_END))
    assert legal(constraints, prefix + [tok(T.BAR_END)] + bar(), tok(T.NOTE_ONSET, 67))


def test_polyphony_and_density_caps_reset_at_fill_in_start():
    constraints = Constraints(polyphony_limit=2, density_limit=2, **TWO_FILL_CONSTRAINTS)
    first_full = TWO_FILLS + note(60) + note(64)
    assert not legal(constraints, first_full, tok(T.NOTE_ONSET, 67))
    second = first_full + [tok(T.FILL_IN_END), tok(T.FILL_IN_START)]
    assert legal(constraints, second, tok(T.NOTE_ONSET, 67))
    assert legal(constraints, second, tok(T.TIME_ABSOLUTE_POS, 12))


# ---- infill / autoregressive -----------------------------------------------------------
def test_autoregressive_mode_forbids_every_fill_in_token():
    constraints = Constraints(autoregressive=True, require_notes=False)
    fill_ids = [tok(T.FILL_IN_PLACEHOLDER), tok(T.FILL_IN_START), tok(T.FILL_IN_END)]
    assert not legal(constraints, PIECE + track() + bar(), fill_ids[0])
    assert not legal(constraints, PIECE + track() + FULL_BAR, fill_ids[1])
    grammar = Grammar(CFG, Constraints(max_tracks=1, autoregressive=True))
    states = grammar.new_states(1)
    for token in WORKED[:-1]:
        assert not grammar.legal_mask(states)[0, fill_ids].any()
        grammar.advance(states, np.array([token]), strict=True)


def test_fill_blocks_cannot_outnumber_placeholders():
    no_placeholder = PIECE + track() + FULL_BAR + [tok(T.TRACK_END)]
    assert not legal(Constraints(), no_placeholder, tok(T.FILL_IN_START))
    one = WORKED_INFILL
    grammar, states = accepted(Constraints(), one)
    assert not grammar.legal_mask(states)[0, tok(T.FILL_IN_START)]
    assert grammar.complete(states)[0]  # nothing can follow: the caller must stop


def test_infill_completes_only_after_every_target():
    constraints = Constraints(**TWO_FILL_CONSTRAINTS)
    grammar, states = accepted(constraints, TWO_FILLS + note() + [tok(T.FILL_IN_END)])
    assert not grammar.complete(states)[0]
    assert grammar.legal_mask(states)[0].nonzero()[0].tolist() == [tok(T.FILL_IN_START)]
    grammar.advance(
        states, np.array([tok(T.FILL_IN_START)] + note() + [tok(T.FILL_IN_END)]), strict=True
    )
    assert grammar.complete(states)[0]


# ---- pins ------------------------------------------------------------------------------
def test_type_pin_forces_the_value_of_its_type():
    constraints = Constraints(type_pins={T.INSTRUMENT: 5, T.MIN_POLYPHONY: 2})
    assert legal_values(constraints, PIECE + track()[:1], T.INSTRUMENT) == [5]
    assert legal_values(
        constraints, PIECE + [tok(T.TRACK), tok(T.INSTRUMENT, 5)], T.MIN_POLYPHONY
    ) == [2]
    assert not legal(constraints, PIECE + track()[:1], tok(T.INSTRUMENT, 0))


def test_bar_time_signature_pins_follow_the_bar_number_in_the_track():
    constraints = Constraints(bar_time_signature_pins=(TS_4_4, TS_7_8), require_notes=False)
    first = PIECE + track() + [tok(T.BAR)]
    assert legal_values(constraints, first, T.TIME_SIGNATURE) == [TS_4_4]
    second = PIECE + track() + FULL_BAR + [tok(T.BAR)]
    assert legal_values(constraints, second, T.TIME_SIGNATURE) == [TS_7_8]
    third = PIECE + track() + FULL_BAR + bar(TS_7_8) + [tok(T.BAR_END), tok(T.BAR)]
    assert len(legal_values(constraints, third, T.TIME_SIGNATURE)) == len(CFG.time_signatures)
    next_track = PIECE + track() + FULL_BAR + [tok(T.TRACK_END)] + track() + [tok(T.BAR)]
    assert legal_values(constraints, next_track, T.TIME_SIGNATURE) == [TS_4_4]


# ---- MaskBar (mask mode "token"; yellow has none) ------------------------------------------
def _mask_bar_config() -> EncoderConfig:
    data = CFG.to_dict()
    data["token_domains"].append(["MaskBar", 1])
    return EncoderConfig.from_dict({**data, "supports_mask_bar_token": True})


MASK_CFG = _mask_bar_config()  # yellow's ids plus MaskBar = 647; every other id is unchanged
MASK_BAR = 647
MASKED_BAR = bar() + [MASK_BAR, tok(T.BAR_END)]


def mask_grammar(constraints: Constraints, prompt: list[int], *, strict: bool = False):
    grammar = Grammar(MASK_CFG, constraints)
    states = grammar.new_states(1)
    grammar.advance(states, np.array(prompt), strict=strict)
    return grammar, states


def mask_legal_types(constraints: Constraints, prompt: list[int]) -> set[TokenType]:
    grammar, states = mask_grammar(constraints, prompt)
    legal_ids = grammar.legal_mask(states)[0]
    return {TokenType(int(t)) for t in np.unique(MASK_CFG.vocabulary.id_type[legal_ids])}


def test_mask_bar_test_vocabulary_appends_one_id():
    assert len(MASK_CFG.vocabulary) == 648
    assert MASK_CFG.vocabulary.encode(T.MASK_BAR) == MASK_BAR
    assert not VOCAB.has(T.MASK_BAR)


def test_mask_bar_follows_time_signature_when_notes_are_not_required():
    after_time_sig = mask_legal_types(LOOSE, PIECE + track() + bar())
    assert T.MASK_BAR in after_time_sig
    assert after_time_sig >= {T.BAR_END, T.NOTE_ONSET, T.FILL_IN_PLACEHOLDER}
    assert T.MASK_BAR in mask_legal_types(
        Constraints(require_notes=False, autoregressive=True), PIECE + track() + bar()
    )
    # Only right after TimeSig: not after Bar, a note, a position, FillInStart or BarEnd.
    for prefix in (
        PIECE + track() + [tok(T.BAR)],
        PIECE + track() + bar() + note(),
        PIECE + track() + bar() + [tok(T.TIME_ABSOLUTE_POS, 4)],
        PIECE + track() + FULL_BAR,
        WORKED_INFILL[:-1],
    ):
        assert T.MASK_BAR not in mask_legal_types(LOOSE, prefix)


def test_mask_bar_is_followed_by_bar_end_only():
    prompt = PIECE + track() + bar() + [MASK_BAR]
    assert mask_legal_types(LOOSE, prompt) == {T.BAR_END}
    assert mask_legal_types(Constraints(), prompt) == {T.BAR_END}


def test_require_notes_forbids_mask_bar_like_an_empty_bar():
    prompt = PIECE + track() + bar()
    assert T.MASK_BAR not in mask_legal_types(Constraints(), prompt)
    with pytest.raises(GrammarError, match=r"token 647 \(MaskBar\(0\)\) at position 6"):
        mask_grammar(Constraints(), prompt + [MASK_BAR], strict=True)


def test_prompt_with_mask_bars_counts_them_as_bars_under_exact_bars():
    constraints = Constraints(exact_bars=4, max_tracks=2)
    prompt = PIECE + track() + MASKED_BAR + FULL_BAR + MASKED_BAR
    grammar, states = mask_grammar(constraints, prompt)
    assert states[0, kernels.S_BARS_IN_TRACK] == 3
    assert states[0, kernels.S_NOTES_IN_BAR] == 0
    assert states[0, kernels.S_PREV_TYPE] == T.BAR_END
    assert states[0, kernels.S_PLACEHOLDERS] == 0 and states[0, kernels.S_DEAD] == 0
    assert mask_legal_types(constraints, prompt) == {T.BAR}
    four = prompt + MASKED_BAR
    assert mask_legal_types(constraints, four) == {T.TRACK_END}
    # The next track's bars count from zero; its first bar must hold a note under require_notes.
    second = four + [tok(T.TRACK_END)] + track() + bar()
    grammar, states = mask_grammar(constraints, second)
    assert states[0, kernels.S_BARS_IN_TRACK] == 1
    assert T.MASK_BAR not in mask_legal_types(constraints, second)
    assert T.BAR_END not in mask_legal_types(constraints, second)


def test_loose_mask_bar_prompt_is_accepted_strictly_and_completes():
    constraints = Constraints(exact_bars=4, max_tracks=1, require_notes=False)
    ids = PIECE + track() + MASKED_BAR + FULL_BAR + MASKED_BAR + MASKED_BAR + [tok(T.TRACK_END)]
    grammar, states = mask_grammar(constraints, ids, strict=True)
    assert grammar.complete(states)[0]


def test_infill_prompt_with_mask_bars_keeps_fill_bookkeeping():
    prompt = [tok(T.PIECE_START, 1), tok(T.NUM_BARS, 0)] + track() + MASKED_BAR
    prompt += bar() + [tok(T.FILL_IN_PLACEHOLDER), tok(T.BAR_END)] + MASKED_BAR + MASKED_BAR
    prompt += [tok(T.TRACK_END), tok(T.FILL_IN_START)]
    constraints = Constraints(max_tracks=1, n_fill_targets=1, fill_block_is_drum=(False,))
    grammar, states = mask_grammar(constraints, prompt)
    assert states[0, kernels.S_PLACEHOLDERS] == 1 and states[0, kernels.S_IN_FILL] == 1
    assert T.MASK_BAR not in mask_legal_types(constraints, prompt)
    grammar.advance(states, np.array(note() + [tok(T.FILL_IN_END)]), strict=True)
    assert grammar.complete(states)[0]
