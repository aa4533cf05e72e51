"""InferenceEngine end to end on a small random-init model: infill, continuation, checks, cancel."""

import threading

import numpy as np
import pytest
import torch

from sideman.engine.checkpoint import save_bundle
from sideman.engine.demo import demo_score
from sideman.engine.inference import (
    EngineError,
    GenerationCancelled,
    GenerationFailed,
    InferenceEngine,
    PromptOverflow,
    find_pretrained,
)
from sideman.engine.model import GPT2, ModelConfig
from sideman.engine.request import GenerationRequest, InferenceConfig, RequestError, TrackPrompt
from sideman.engine.sampler import Grammar
from sideman.engine.score import NoteArrays, Score
from sideman.engine.tokenizer import Tokenizer
from sideman.engine.vocab import EncoderConfig, TokenType

TINY = ModelConfig(vocab_size=647, n_positions=1024, n_embd=64, n_layer=2, n_head=4)


@pytest.fixture(scope="module")
def engine() -> InferenceEngine:
    return InferenceEngine.random_init(TINY, seed=0, device="cpu")


def request(track=3, bars=(4, 5), **config) -> GenerationRequest:
    config.setdefault("seed", 0)
    config.setdefault("density_hard_limit", 12)
    tracks = config.pop("tracks", None) or (TrackPrompt(id=track, bars=tuple(bars), autoregressive=config.pop("autoregressive", False)),)
    return GenerationRequest(tracks=tracks, config=InferenceConfig(**config))


def notes_of(score: Score, track: int, bar: int) -> NoteArrays:
    n = score.notes
    return n.select((n.track == track) & (n.bar == bar))


def assert_untouched_outside(before: Score, after: Score, targets) -> None:
    keep_before = np.ones(len(before.notes), dtype=bool)
    keep_after = np.ones(len(after.notes), dtype=bool)
    for track, bar in targets:
        keep_before &= ~((before.notes.track == track) & (before.notes.bar == bar))
        keep_after &= ~((after.notes.track == track) & (after.notes.bar == bar))
    assert np.array_equal(before.notes.select(keep_before).as_table(), after.notes.select(keep_after).as_table())


def test_infill_replaces_only_the_target_bars(engine):
    score = demo_score()
    result = engine.session(score, request(bars=(4, 5))).run()
    assert_untouched_outside(score, result.score, [(3, 4), (3, 5)])
    for bar in (4, 5):
        generated = notes_of(result.score, 3, bar)
        assert len(generated) > 0
        assert generated.onset.max() < 48
    assert [s.targets for s in result.steps] == [((3, 4),), ((3, 5),)]


def test_continuation_fills_every_target_bar_in_the_bars_meter(engine):
    score = demo_score()
    score.time_signatures[6] = (7, 8)  # a 42-tick bar among the generated ones
    result = engine.session(score, request(bars=(4, 5, 6, 7), autoregressive=True, model_dim=4)).run()
    assert_untouched_outside(score, result.score, [(3, b) for b in range(4, 8)])
    for bar in range(4, 8):
        generated = notes_of(result.score, 3, bar)
        assert len(generated) > 0
        assert generated.onset.max() < score.bar_ticks()[bar]


def test_time_signature_control_sets_the_generated_bars_meter(engine):
    score = demo_score()
    tracks = (TrackPrompt(id=3, bars=(4, 5), controls={"time_signature": (7, 8)},
                          bar_controls={5: {"time_signature": (3, 4)}}),)
    result = engine.session(score, request(tracks=tracks)).run()
    assert result.score.time_signatures[4].tolist() == [7, 8]
    assert result.score.time_signatures[5].tolist() == [3, 4]
    assert notes_of(result.score, 3, 4).onset.max() < 42
    assert notes_of(result.score, 3, 5).onset.max() < 36
    assert score.time_signatures[4].tolist() == [4, 4]  # the caller's score is not modified


def test_same_seed_same_notes_other_seed_other_notes(engine):
    score = demo_score()
    a = engine.session(score, request(seed=5)).run().score.notes.as_table()
    b = engine.session(score, request(seed=5)).run().score.notes.as_table()
    c = engine.session(score, request(seed=6)).run().score.notes.as_table()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_generation_leaves_the_global_torch_rng_alone(engine):
    before = torch.get_rng_state()
    engine.session(demo_score(), request()).run()
    assert torch.equal(before, torch.get_rng_state())


def test_candidates_are_sampled_as_one_batch(engine):
    result = engine.session(demo_score(), request(num_candidates=4)).run()
    assert result.steps[0].attempts == 1
    assert len(notes_of(result.score, 3, 4)) > 0


def test_second_step_reuses_the_unchanged_prompt_prefix(engine):
    result = engine.session(demo_score(), request(bars=(5, 6), model_dim=4)).run()
    first, second = result.steps
    assert first.reused_tokens == 0
    assert second.reused_tokens > 0


def test_reused_prefix_gives_the_same_result_as_a_fresh_prefill(engine):
    score = demo_score()
    both = engine.session(score, request(bars=(5, 6), model_dim=4, seed=3)).run().score
    # Bar 6 alone, on a score whose bar 5 already holds what the two-step run generated there.
    staged = score.with_notes(
        NoteArrays.concatenate([
            score.notes.select(~((score.notes.track == 3) & (score.notes.bar == 5))),
            notes_of(both, 3, 5),
        ])
    )
    fresh_request = request(bars=(6,), model_dim=4, seed=3)
    fresh = engine.session(staged, fresh_request).run().score
    assert np.array_equal(notes_of(both, 3, 6).as_table(), notes_of(fresh, 3, 6).as_table())


@pytest.mark.parametrize("mask_mode", ["attention", "attention_skip", "remove"])
def test_mask_modes_generate_with_masked_bars(engine, mask_mode):
    tracks = (TrackPrompt(id=3, bars=(4,), mask_bars=(5, 6)),)
    result = engine.session(demo_score(), request(tracks=tracks, mask_mode=mask_mode)).run()
    assert len(notes_of(result.score, 3, 4)) > 0


def test_token_mask_mode_uses_maskbar_where_the_vocabulary_has_it():
    data = EncoderConfig.yellow().to_dict()
    data["token_domains"].append(["MaskBar", 1])
    with_maskbar = EncoderConfig.from_dict(data)
    model = GPT2(ModelConfig(vocab_size=648, n_positions=1024, n_embd=32, n_layer=1, n_head=2))
    model.init_weights(torch.Generator().manual_seed(0))
    engine = InferenceEngine(model, with_maskbar, device="cpu")
    tracks = (TrackPrompt(id=3, bars=(4,), mask_bars=(5, 6)),)
    session = engine.session(demo_score(), request(tracks=tracks, mask_mode="token"))
    from sideman.engine.planner import plan_request

    prompt = session._build_prompt(plan_request(session.request, session.score)[0])
    mask_bar = with_maskbar.vocabulary.encode(TokenType.MASK_BAR)
    assert np.count_nonzero(prompt.full_ids == mask_bar) == 2  # bars 5 and 6 of track 3
    assert prompt.key_mask is None
    assert len(notes_of(session.run().score, 3, 4)) > 0


def test_token_mask_mode_is_refused_for_yellow(engine):
    tracks = (TrackPrompt(id=3, bars=(4,), mask_bars=(5,)),)
    with pytest.raises(RequestError, match="MaskBar"):
        engine.session(demo_score(), request(tracks=tracks, mask_mode="token"))


def test_an_ignored_track_is_absent_from_the_prompt(engine):
    score = demo_score()
    score.track_info[0].program = 127  # an instrument no other track uses
    tracks = (TrackPrompt(id=3, bars=(4,)), TrackPrompt(id=0, ignore=True))
    session = engine.session(score, request(tracks=tracks))
    from sideman.engine.planner import plan_request

    step = plan_request(session.request, session.score)[0]
    prompt = session._build_prompt(step)
    vocab = EncoderConfig.yellow().vocabulary
    gunshot = vocab.encode(TokenType.INSTRUMENT, int(EncoderConfig.yellow().program_to_group[127]))
    assert gunshot not in prompt.full_ids
    assert prompt.track_order == (1, 2, 3)
    assert prompt.constraints.max_tracks == 3


@pytest.mark.parametrize("autoregressive", [False, True])
def test_generated_sequences_are_grammatical(engine, autoregressive):
    """Re-check thousands of sampled tokens against a fresh grammar, token by token."""
    score = demo_score()
    config = EncoderConfig.yellow()
    captured = []
    for seed in range(3):
        session = engine.session(
            score,
            request(bars=(2, 3, 4, 5, 6, 7), density_hard_limit=16, seed=seed, num_candidates=4,
                    autoregressive=autoregressive),
        )
        original = session._pick_candidate

        def capture(step, prompt, tokens, scores, original=original):
            captured.append((prompt, tokens))
            return original(step, prompt, tokens, scores)

        session._pick_candidate = capture
        session.run()
    total = 0
    for prompt, tokens in captured:
        for row in tokens:
            generated = row[row >= 0]
            grammar = Grammar(config, prompt.constraints)
            state = grammar.new_states(1)
            grammar.advance(state, prompt.full_ids)
            for token in generated:
                assert grammar.legal_mask(state)[0, token], f"illegal token {config.vocabulary.describe(int(token))}"
                grammar.advance(state, np.array([token]))
            assert grammar.complete(state)[0]
            total += len(generated)
    assert total > 1000


def test_prompt_overflow_replans_with_a_smaller_window():
    short = ModelConfig(vocab_size=647, n_positions=300, n_embd=32, n_layer=1, n_head=2)
    engine = InferenceEngine.random_init(short, seed=0, device="cpu")
    result = engine.session(demo_score(), request(bars=(7,), model_dim=8)).run()
    assert result.steps[-1].end_bar - result.steps[-1].start_bar == 4
    tiny_window = ModelConfig(vocab_size=647, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    cramped = InferenceEngine.random_init(tiny_window, seed=0, device="cpu")
    with pytest.raises(PromptOverflow, match="use a smaller model_dim"):
        cramped.session(demo_score(), request(bars=(7,), model_dim=4)).run()


def test_cancel_stops_between_tokens(engine):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        engine.session(demo_score(), request(), cancel=cancel).run()


def test_every_attempt_failing_reports_max_attempts(engine, monkeypatch):
    from sideman.engine.candidates import CandidateJudge

    session = engine.session(demo_score(), request(max_attempts=2, temperature_escalation=2.0))
    seen_temperatures = []
    original = session._decode

    def decode(prompt, grammar, base_state, params, generator, budget, report):
        seen_temperatures.append(params.temperature)
        return original(prompt, grammar, base_state, params, generator, budget, report)

    session._decode = decode
    monkeypatch.setattr(CandidateJudge, "check", lambda self, notes: "novelty: forced failure")
    with pytest.raises(GenerationFailed, match=r"Max attempts \(2\) reached.*forced failure"):
        session.run()
    assert seen_temperatures == [1.0, 2.0]


def test_invalid_request_is_refused_before_any_work(engine):
    with pytest.raises(RequestError, match="top_p"):
        engine.session(demo_score(), request(top_p=0.0))


def test_from_pretrained_finds_bundles_offline(tmp_path, monkeypatch):
    model = GPT2(TINY)
    model.init_weights(torch.Generator().manual_seed(1))
    for step in (100, 2000):
        save_bundle(tmp_path / f"yellow_small-step{step}.safetensors", model, TINY, EncoderConfig.yellow())
    monkeypatch.setenv("SIDEMAN_MODEL_DIR", str(tmp_path))
    assert find_pretrained("yellow_small").name == "yellow_small-step2000.safetensors"
    save_bundle(tmp_path / "yellow_small-final.safetensors", model, TINY, EncoderConfig.yellow())
    assert find_pretrained("yellow_small").name == "yellow_small-final.safetensors"
    engine = InferenceEngine.from_pretrained(str(tmp_path / "yellow_small-final.safetensors"), device="cpu")
    assert engine.model.config == TINY


def test_unknown_model_names_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("SIDEMAN_MODEL_DIR", str(tmp_path))
    with pytest.raises(EngineError, match="no model named 'nonesuch'.*--random-init"):
        find_pretrained("nonesuch")
    with pytest.raises(EngineError, match="does not exist"):
        find_pretrained(str(tmp_path / "missing.safetensors"))


def test_explicit_missing_device_is_an_error():
    from sideman.engine.inference import resolve_device

    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA device"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_result_comes_back_at_the_input_resolution(engine):
    score = demo_score().rescaled(480)
    result = engine.session(score, request()).run()
    assert result.score.resolution == 480
    assert notes_of(result.score, 3, 4).onset.max() < 1920
    assert Tokenizer(EncoderConfig.yellow()).to_grid(result.score).resolution == 12


def test_novelty_and_silence_checks_judge_the_target_bars(engine):
    score = demo_score()
    session = engine.session(score, request(bars=(4,)))
    from sideman.engine.planner import plan_request

    step = plan_request(session.request, session.score)[0]
    same = notes_of(session.score, 3, 4)
    judge = session._judge(step)
    assert judge.check(same).startswith("novelty")
    shifted = NoteArrays(same.track, same.bar, same.onset, same.duration, same.pitch + 1, same.velocity)
    assert judge.check(shifted) is None
    assert judge.check(NoteArrays.empty()).startswith("silence")
    relaxed = engine.session(score, request(bars=(4,), novelty_check=False, silence_check=False))
    assert relaxed._judge(step).check(same) is None


def test_rest_on_silence_keeps_a_silent_candidate_instead_of_failing(engine, monkeypatch):
    from sideman.engine.inference import GenerationSession

    monkeypatch.setattr(GenerationSession, "_target_notes", lambda self, step, prompt, generated: NoteArrays.empty())
    score = demo_score()
    with pytest.raises(GenerationFailed, match="silence"):
        engine.session(score, request(bars=(4,), max_attempts=2)).run()
    result = engine.session(score, request(bars=(4,), max_attempts=2), rest_on_silence=True).run()
    assert len(notes_of(result.score, 3, 4)) == 0
    assert result.steps[0].rested and result.steps[0].attempts == 2
    assert_untouched_outside(score, result.score, [(3, 4)])


def test_requested_attributes_pick_the_candidate_that_follows_them(engine, monkeypatch):
    """A line (polyphony level 0) is likelier than four-note chords (level 3); asked for level 3,
    the chords win; asked for nothing, likelihood decides."""
    from sideman.engine.inference import GenerationSession
    from sideman.engine.planner import plan_request

    line = NoteArrays.from_rows([(3, 4, 12 * beat, 12, 60 + beat, 80) for beat in range(4)])
    chords = NoteArrays.from_rows(
        [(3, 4, 12 * beat, 12, pitch + beat, 80) for beat in range(4) for pitch in (48, 55, 60, 64)]
    )
    candidates = [line, chords]
    monkeypatch.setattr(
        GenerationSession, "_target_notes", lambda self, step, prompt, generated: candidates[int(generated[0])]
    )
    tokens = np.array([[0], [1]])
    scores = np.array([-1.0, -5.0])
    score = demo_score()
    wanted = (TrackPrompt(id=3, bars=(4,), attributes={"min_polyphony": 3, "max_polyphony": 3}),)
    for tracks, expected in ((wanted, chords), (None, line)):
        session = engine.session(score, request(bars=(4,), tracks=tracks))
        step = plan_request(session.request, session.score)[0]
        chosen, reasons, _ = session._pick_candidate(step, None, tokens, scores)
        assert reasons == [] and chosen is expected
    asked_for_line = (TrackPrompt(id=3, bars=(4,), attributes={"max_polyphony": 0}),)
    session = engine.session(score, request(bars=(4,), tracks=asked_for_line))
    step = plan_request(session.request, session.score)[0]
    assert session._judge(step).attribute_distance(chords) == 3
    assert session._judge(step).attribute_distance(line) == 0


def test_a_candidate_that_repeats_a_context_bar_loses_to_a_new_one(engine, monkeypatch):
    """The likelier candidate replays bar 3 of the same track (or doubles another track's bar 4);
    with the novelty check a new bar is kept, without it likelihood decides."""
    from sideman.engine.inference import GenerationSession
    from sideman.engine.planner import plan_request

    score = demo_score()

    def moved(track: int, bar: int) -> NoteArrays:
        notes = notes_of(score, track, bar)
        return NoteArrays(np.full(len(notes), 3), np.full(len(notes), 4), notes.onset, notes.duration, notes.pitch, notes.velocity)

    new = moved(3, 3)
    new = NoteArrays(new.track, new.bar, new.onset, new.duration, new.pitch + 1, new.velocity)
    scores = np.array([-1.0, -5.0])
    tokens = np.array([[0], [1]])
    for copied in (moved(3, 3), moved(1, 4)):
        assert len(copied) > 0
        candidates = [copied, new]
        monkeypatch.setattr(
            GenerationSession,
            "_target_notes",
            lambda self, step, prompt, generated, candidates=candidates: candidates[int(generated[0])],
        )
        for novelty_check, expected in ((True, new), (False, copied)):
            session = engine.session(score, request(bars=(4,), novelty_check=novelty_check))
            step = plan_request(session.request, session.score)[0]
            chosen, reasons, _ = session._pick_candidate(step, None, tokens, scores)
            assert reasons == [] and chosen is expected
