"""TokenSampler: filters, fallback, the draw, reproducibility and grammatical output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sideman.engine.sampler import (
    Constraints,
    Grammar,
    SamplingParams,
    SamplingParamsError,
    TokenSampler,
)
from sideman.engine.vocab import EncoderConfig, TokenType

CFG = EncoderConfig.yellow()
VOCAB = CFG.vocabulary
V = len(VOCAB)
T = TokenType

WORKED_INFILL_PROMPT = [1, 152, 2, 43, 615, 626, 637, 644, 5, 20, 602, 6, 4, 603]  # fmt: skip
# The worked example's track cut after its first bar: an autoregressive prompt for 3 more bars.
AR_PROMPT = [0, 152, 2, 43, 615, 626, 637, 644, 5, 20, 595, 214, 293, 218, 293, 402, 590, 221, 287, 6]  # fmt: skip

# After a VelocityLevel only NoteOnset is legal: 128 candidates whose logits the tests choose.
BEFORE_ONSET = [0, 152, 2, 43, 5, 20, VOCAB.encode(T.VELOCITY_LEVEL, 20)]
PROBS = {60: 0.4, 61: 0.3, 62: 0.2, 63: 0.1}


def onset_logits(batch: int, probs: dict[int, float] = PROBS) -> torch.Tensor:
    logits = torch.full((batch, V), float("-inf"))
    for pitch, p in probs.items():
        logits[:, VOCAB.encode(T.NOTE_ONSET, pitch)] = float(np.log(p))
    return logits


def drawn_pitches(params: SamplingParams, logits: torch.Tensor, seed: int = 0) -> np.ndarray:
    grammar = Grammar(CFG, Constraints(require_notes=False))
    states = grammar.new_states(logits.shape[0])
    grammar.advance(states, np.array(BEFORE_ONSET))
    sampler = TokenSampler(grammar, params, torch.Generator().manual_seed(seed))
    ids = sampler.sample(logits, states)
    assert (VOCAB.id_type[ids] == T.NOTE_ONSET).all()
    return VOCAB.id_value[ids]


def support(params: SamplingParams) -> set[int]:
    return set(drawn_pitches(params, onset_logits(3000)).tolist())


# ---- filters ---------------------------------------------------------------------------
def test_unfiltered_draws_follow_the_softmax():
    pitches = drawn_pitches(SamplingParams(), onset_logits(20000))
    for pitch, p in PROBS.items():
        assert abs(np.mean(pitches == pitch) - p) < 0.015


def test_top_k_keeps_the_k_most_likely():
    assert support(SamplingParams(top_k=2)) == {60, 61}


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    assert support(SamplingParams(top_p=0.65)) == {60, 61}
    assert support(SamplingParams(top_p=0.75)) == {60, 61, 62}
    assert support(SamplingParams(top_p=0.3)) == {60}


def test_mask_k_removes_the_most_likely_survivors():
    assert support(SamplingParams(mask_k=1)) == {61, 62, 63}
    assert support(SamplingParams(top_k=3, mask_k=2)) == {62}


def test_mask_p_removes_the_most_likely_mass_but_never_everything():
    assert support(SamplingParams(mask_p=0.3)) == {61, 62, 63}
    assert support(SamplingParams(mask_p=0.5)) == {62, 63}
    assert support(SamplingParams(top_k=1, mask_p=0.5)) == {60}
    # On renormalised survivors: of {0.4, 0.3} (mass 0.7), 0.4 is 57% ≥ 0.5.
    assert support(SamplingParams(top_k=2, mask_p=0.5)) == {61}


def test_a_filter_that_would_empty_the_pool_is_skipped():
    assert support(SamplingParams(top_p=0.3, mask_k=1)) == {60}
    assert support(SamplingParams(mask_k=4)) == {60, 61, 62, 63}


@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_degenerate_logits_fall_back_to_uniform_over_legal(value: float):
    logits = torch.full((6000, V), value)
    pitches = drawn_pitches(SamplingParams(), logits)
    counts = np.bincount(pitches, minlength=128)
    assert (counts > 0).all()  # every legal NoteOnset, nothing else (checked in drawn_pitches)
    assert counts.max() < 3 * 6000 / 128


def test_low_temperature_picks_the_most_likely():
    assert support(SamplingParams(temperature=1e-3)) == {60}


def test_padding_columns_are_never_drawn():
    logits = torch.cat([onset_logits(500), torch.full((500, 9), 1e4)], dim=1)
    assert set(drawn_pitches(SamplingParams(), logits).tolist()) <= set(PROBS)


# ---- randomness --------------------------------------------------------------------------
def _generate(seed: int, n_tokens: int = 200) -> np.ndarray:
    grammar = Grammar(CFG, Constraints(require_notes=False))
    states = grammar.new_states(2)
    grammar.advance(states, np.array(BEFORE_ONSET[:-1]))
    sampler = TokenSampler(
        grammar, SamplingParams(top_k=40, top_p=0.95), torch.Generator().manual_seed(seed)
    )
    logits = torch.randn(2, V, generator=torch.Generator().manual_seed(99))
    return np.stack([sampler.sample(logits, states) for _ in range(n_tokens)])


def test_same_seed_same_tokens_different_seed_different_tokens():
    assert np.array_equal(_generate(7), _generate(7))
    assert not np.array_equal(_generate(7), _generate(8))


def test_sampling_leaves_global_random_states_untouched():
    torch_before = torch.get_rng_state()
    numpy_before = np.random.get_state()[1].copy()
    _generate(3, n_tokens=3000)  # crosses several uniform-block refills
    assert torch.equal(torch.get_rng_state(), torch_before)
    assert np.array_equal(np.random.get_state()[1], numpy_before)


# ---- grammatical generation --------------------------------------------------------------
def _run(
    grammar: Grammar, prompt: list[int], batch: int, seed: int, budget: int
) -> list[list[int]]:
    """Sample until every row completes; check each draw against the legal mask first."""
    states = grammar.new_states(batch)
    grammar.advance(states, np.array(prompt))
    sampler = TokenSampler(
        grammar, SamplingParams(temperature=1.0), torch.Generator().manual_seed(seed)
    )
    logits_gen = torch.Generator().manual_seed(seed + 1000)
    rows: list[list[int]] = [[] for _ in range(batch)]
    for _ in range(budget):
        done = grammar.complete(states)
        if done.all():
            break
        mask = grammar.legal_mask(states)
        ids = sampler.sample(torch.randn(batch, V, generator=logits_gen) * 4, states)
        for row in range(batch):
            if done[row]:
                assert ids[row] == -1
            else:
                assert mask[row, ids[row]], (
                    f"row {row} drew illegal {VOCAB.describe(int(ids[row]))}"
                )
                rows[row].append(int(ids[row]))
    assert grammar.complete(states).all(), "generation did not terminate within the budget"
    assert not states[:, 13].any(), "a row reached a dead end"
    return rows


def _replay(constraints: Constraints, prompt: list[int], generated: list[int]) -> None:
    grammar = Grammar(CFG, constraints)
    states = grammar.new_states(1)
    grammar.advance(states, np.array(prompt[:-1]), strict=False)
    grammar.advance(states, np.array(prompt[-1:] + generated), strict=True)
    assert grammar.complete(states)[0]


def test_infill_sampling_from_random_logits_is_grammatical_and_terminates():
    constraints = Constraints(
        max_tracks=1,
        n_fill_targets=1,
        density_limit=24,
        fill_block_is_drum=(False,),
        fill_block_bar_ticks=(42,),
    )
    grammar = Grammar(CFG, constraints)
    total = 0
    for seed in range(3):
        for generated in _run(grammar, WORKED_INFILL_PROMPT, batch=4, seed=seed, budget=2000):
            assert generated[-1] == VOCAB.encode(T.FILL_IN_END)
            positions = VOCAB.id_value[
                [t for t in generated if VOCAB.id_type[t] == T.TIME_ABSOLUTE_POS]
            ]
            assert (np.diff(positions) > 0).all() and (positions < 42).all()
            _replay(constraints, WORKED_INFILL_PROMPT, generated)
            total += len(generated)
    assert total > 300


def test_autoregressive_sampling_from_random_logits_is_grammatical_and_terminates():
    constraints = Constraints(
        exact_bars=4, max_tracks=1, autoregressive=True, polyphony_limit=3,
        bar_time_signature_pins=(13, 21, 3, 13),
    )  # fmt: skip
    grammar = Grammar(CFG, constraints)
    total = 0
    for seed in range(3):
        for generated in _run(grammar, AR_PROMPT, batch=4, seed=seed, budget=3000):
            assert generated[-1] == VOCAB.encode(T.TRACK_END)
            assert generated.count(VOCAB.encode(T.BAR)) == 3
            time_sigs = [
                VOCAB.id_value[t] for t in generated if VOCAB.id_type[t] == T.TIME_SIGNATURE
            ]
            assert time_sigs == [21, 3, 13]
            assert not set(generated) & {602, 603, 604}
            _replay(constraints, AR_PROMPT, generated)
            total += len(generated)
    assert total > 1000


def test_complete_rows_are_left_alone():
    grammar = Grammar(CFG, Constraints(max_tracks=1))
    states = grammar.new_states(2)
    grammar.advance(states, np.array(AR_PROMPT + [4]))
    before = states.copy()
    sampler = TokenSampler(grammar, SamplingParams(), torch.Generator().manual_seed(0))
    assert sampler.sample(torch.zeros(2, V), states).tolist() == [-1, -1]
    assert np.array_equal(states, before)


# ---- validation --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "field"),
    [
        (SamplingParams(temperature=0), "temperature"),
        (SamplingParams(top_k=-1), "top_k"),
        (SamplingParams(top_p=0), "top_p"),
        (SamplingParams(top_p=1.5), "top_p"),
        (SamplingParams(mask_k=-2), "mask_k"),
        (SamplingParams(mask_p=1.0), "mask_p"),
        (SamplingParams(top_p=0.5, mask_p=0.5), "mask_p"),
        (SamplingParams(top_k=3, mask_k=3), "mask_k"),
    ],
)
def test_invalid_sampling_params_name_the_field(params: SamplingParams, field: str):
    with pytest.raises(SamplingParamsError, match=rf"^{field} must"):
        params.validate()
    with pytest.raises(ValueError):
        TokenSampler(Grammar(CFG, Constraints()), params, torch.Generator())


def test_top_p_error_message_reads_well():
    with pytest.raises(SamplingParamsError, match=r"top_p must be in \(0, 1\], got 0"):
        SamplingParams(top_p=0).validate()


# ---- MaskBar vocabularies ------------------------------------------------------------------
def _mask_bar_config() -> EncoderConfig:
    data = CFG.to_dict()
    data["token_domains"].append(["MaskBar", 1])
    return EncoderConfig.from_dict({**data, "supports_mask_bar_token": True})


MASK_CFG = _mask_bar_config()
MASK_BAR = 647
# Track 0 in mask mode "token": bars 0, 2 and 3 masked; the drum track 1 is cut before bar 0.
MASKED_AR_PROMPT = [0, 152, 2, 43, 5, 20, MASK_BAR, 6, 5, 20, 595, 214, 293, 6, 5, 20, MASK_BAR, 6, 5, 20, MASK_BAR, 6, 4, 3, 43]  # fmt: skip


def _sample_with_mask_bar_favoured(constraints: Constraints, seed: int) -> list[list[int]]:
    """Random logits with MaskBar far ahead of everything else, until every row completes."""
    grammar = Grammar(MASK_CFG, constraints)
    vocab_size = grammar.vocab_size
    batch = 4
    states = grammar.new_states(batch)
    grammar.advance(states, np.array(MASKED_AR_PROMPT))
    sampler = TokenSampler(grammar, SamplingParams(), torch.Generator().manual_seed(seed))
    logits_gen = torch.Generator().manual_seed(seed + 1000)
    rows: list[list[int]] = [[] for _ in range(batch)]
    for _ in range(3000):
        done = grammar.complete(states)
        if done.all():
            break
        logits = torch.randn(batch, vocab_size, generator=logits_gen) * 4
        logits[:, MASK_BAR] = 50.0
        mask = grammar.legal_mask(states)
        ids = sampler.sample(logits, states)
        for row in range(batch):
            if not done[row]:
                assert mask[row, ids[row]]
                rows[row].append(int(ids[row]))
    assert grammar.complete(states).all()
    assert not states[:, 13].any()
    return rows


def test_sampler_never_draws_mask_bar_when_notes_are_required():
    constraints = Constraints(exact_bars=4, max_tracks=2, autoregressive=True)
    for seed in range(2):
        for generated in _sample_with_mask_bar_favoured(constraints, seed):
            assert MASK_BAR not in generated
            assert generated.count(VOCAB.encode(T.BAR)) == 4
            assert generated[-1] == VOCAB.encode(T.TRACK_END)
            # Every generated bar holds a note.
            bars = np.split(np.array(generated), np.flatnonzero(np.array(generated) == 5)[1:])
            assert all((VOCAB.id_type[b[b < V]] == T.NOTE_ONSET).any() for b in bars)


def test_sampler_may_draw_mask_bar_when_notes_are_not_required():
    constraints = Constraints(exact_bars=4, max_tracks=2, autoregressive=True, require_notes=False)
    for generated in _sample_with_mask_bar_favoured(constraints, 0):
        assert generated.count(MASK_BAR) == 4  # favoured, and legal right after each TimeSig
        for i in np.flatnonzero(np.array(generated) == MASK_BAR):
            assert VOCAB.id_type[generated[i - 1]] == T.TIME_SIGNATURE
            assert generated[i + 1] == VOCAB.encode(T.BAR_END)


def test_finished_reads_the_state_flags_that_complete_reports():
    grammar = Grammar(CFG, Constraints(max_tracks=1, n_fill_targets=1, fill_block_is_drum=(False,)))
    states = grammar.new_states(1)
    grammar.advance(states, np.array(WORKED_INFILL_PROMPT))
    assert not grammar.finished(states)[0] and not grammar.complete(states)[0]
    grammar.advance(states, np.array([595, 214, 293, 604]))  # one note, then FillInEnd
    assert grammar.finished(states)[0] and grammar.complete(states)[0]
