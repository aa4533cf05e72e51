"""``sideman bench tokenizer|generate``: printed figures beside same-run baselines and the reference.

Timings are medians after warm-up. Nothing here asserts a time: the machines are noisy, so the
figures are for people to read and compare (tokens.md §16 holds the reference's numbers).
"""

from __future__ import annotations

import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.tokenizer import Tokenizer
from sideman.engine.vocab import EncoderConfig

# tokens.md §16: reference figures on the same 2-core machine kind.
REFERENCE = {
    "midi_to_tokens_mnotes_s": 0.044,
    "encode_only_mnotes_s": 3.0,
    "decode_only_mnotes_s": 5.3,
    "outside_model_ms_per_token": (0.4, 0.8),
    "infill_bar_e2e_s": (0.54, 0.69),
    "prefill_ms": 175.0,
    "step_ms": 8.0,
}
TARGETS = {
    "midi_to_tokens_mnotes_s": 1.2,
    "encode_only_mnotes_s": 3.0,
    "outside_model_ms_per_token": 0.05,
    "infill_bar_e2e_s": 0.30,
}


def _median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _header(title: str) -> None:
    print(f"== sideman bench {title} ==")
    print(f"cores: {os.cpu_count()}  torch threads: {torch.get_num_threads()}  torch {torch.__version__}")


# ---- synthetic material --------------------------------------------------------------------
def synthetic_score(
    rng: np.random.Generator, n_bars: int, n_tracks: int, notes_per_bar: int, meters: bool = True
) -> Score:
    """A dense random multi-track score at 12 tpq, mixed meters, the last track a drum kit."""
    meter_choices = np.array([(4, 4), (3, 4), (6, 8), (7, 8), (5, 4)]) if meters else np.array([(4, 4)])
    # A meter per 8-bar section, as in songs (a change every bar would measure a pathological file).
    sections = meter_choices[rng.integers(0, len(meter_choices), -(-n_bars // 8))]
    ts = np.repeat(sections, 8, axis=0)[:n_bars]
    ts[:8] = (4, 4)
    tracks = [TrackInfo(program=int(p)) for p in rng.integers(0, 100, n_tracks)]
    tracks[-1] = TrackInfo(program=0, is_drum=True, name="drums")
    bar_len = 48 * ts[:, 0] // ts[:, 1]
    columns = []
    for t in range(n_tracks):
        bars = np.repeat(np.arange(n_bars), notes_per_bar)
        onset = (rng.random(len(bars)) * bar_len[bars]).astype(np.int64) // 3 * 3
        duration = rng.choice([3, 6, 12, 24, 48], len(bars))
        pitch = rng.integers(36, 84, len(bars)) if not tracks[t].is_drum else rng.choice([36, 38, 42, 46], len(bars))
        velocity = rng.integers(40, 120, len(bars))
        columns.append(np.stack([np.full(len(bars), t), bars, onset, duration, pitch, velocity], axis=1))
    table = np.concatenate(columns)
    # one note per (track, bar, onset, pitch)
    _, unique = np.unique(table[:, [0, 1, 2, 4]], axis=0, return_index=True)
    score = Score(resolution=12, time_signatures=ts, track_info=tracks)
    return score.with_notes(NoteArrays.from_rows(table[np.sort(unique)]))


# ---- tokenizer -----------------------------------------------------------------------------
def run_tokenizer_bench(quick: bool = False) -> dict[str, float]:
    import mido

    _header("tokenizer")
    config = EncoderConfig.yellow()
    tokenizer = Tokenizer(config)
    rng = np.random.default_rng(0)
    n_files = 8 if quick else 34
    repeats = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n_files):
            score = synthetic_score(rng, n_bars=64 if quick else 96, n_tracks=4, notes_per_bar=13)
            path = Path(tmp) / f"synthetic_{i}.mid"
            score.to_midi(path)
            paths.append(path)
        scores = [Score.from_midi(p) for p in paths]
        n_notes = sum(len(s.notes) for s in scores)
        encoded = [tokenizer.encode_score(s, window_bars=8) for s in scores]
        n_tokens = sum(len(e) for e in encoded)
        attributes = [tokenizer.compute_attributes(s) for s in scores]
        print(
            f"corpus: {n_files} synthetic MIDI files (4 tracks incl. drums, meter changes every 8 bars), "
            f"{n_notes:,} notes, {n_tokens:,} yellow tokens"
        )

        t_parse = _median_time(lambda: [mido.MidiFile(p) for p in paths], repeats)
        t_file = _median_time(
            lambda: [tokenizer.encode_score(Score.from_midi(p), window_bars=8) for p in paths], repeats
        )
        t_encode = _median_time(
            lambda: [
                tokenizer.encode_window(s, num_bars=8, attributes=a) for s, a in zip(scores, attributes, strict=True)
            ],
            repeats,
        )
        t_attrs = _median_time(lambda: [tokenizer.compute_attributes(s) for s in scores], repeats)
        t_decode = _median_time(lambda: [tokenizer.decode(e) for e in encoded], repeats)

    def rate(seconds: float) -> float:
        return n_notes / seconds / 1e6

    figures = {
        "midi_to_tokens_mnotes_s": rate(t_file),
        "encode_only_mnotes_s": rate(t_encode),
        "attributes_mnotes_s": rate(t_attrs),
        "decode_only_mnotes_s": rate(t_decode),
        "mido_parse_only_mnotes_s": rate(t_parse),
    }
    rows = [
        ("MIDI file -> token ids", "midi_to_tokens_mnotes_s"),
        ("encode only (note arrays)", "encode_only_mnotes_s"),
        ("decode only (ids -> notes)", "decode_only_mnotes_s"),
    ]
    print(f"{'stage':34s} {'M notes/s':>10s} {'reference':>10s} {'x ref':>7s} {'target':>8s}")
    for label, key in rows:
        ref = REFERENCE[key]
        target = TARGETS.get(key)
        target_text = f">= {target}" if target else "-"
        print(f"{label:34s} {figures[key]:10.3f} {ref:10.3f} {figures[key] / ref:7.1f} {target_text:>8s}")
    print(f"{'attribute analysis only':34s} {figures['attributes_mnotes_s']:10.3f}")
    print(
        f"same-run baseline: mido parse alone {figures['mido_parse_only_mnotes_s']:.3f} M notes/s; "
        f"file->tokens is {t_parse / t_file:.1f}x faster than mido parsing the same files"
    )
    return figures


# ---- generation ----------------------------------------------------------------------------
def reference_like_score(rng: np.random.Generator, per_bar: tuple[int, ...] = (21, 5, 8, 9)) -> Score:
    """4 bars, 4 tracks (piano, bass, lead, drums), dense enough for a ~585-token infill prompt."""
    tracks = [
        TrackInfo(program=0, name="piano"),
        TrackInfo(program=33, name="bass"),
        TrackInfo(program=80, name="lead"),
        TrackInfo(program=0, is_drum=True, name="drums"),
    ]
    rows = []
    for t, count in enumerate(per_bar):
        for bar in range(4):
            onsets = np.sort(rng.choice(np.arange(0, 48, 3), count, replace=True))
            for k, onset in enumerate(onsets):
                pitch = (36 + 2 * (k % 4)) if tracks[t].is_drum else int(rng.integers(40, 80)) + k % 3
                rows.append((t, bar, int(onset), int(rng.choice([3, 6, 12])), pitch, int(rng.integers(50, 110))))
    table = np.asarray(rows)
    _, unique = np.unique(table[:, [0, 1, 2, 4]], axis=0, return_index=True)
    score = Score.empty(4, tracks)
    return score.with_notes(NoteArrays.from_rows(table[np.sort(unique)]))


def run_generate_bench(quick: bool = False, threads: int = 2) -> dict[str, float]:
    from sideman.engine.inference import InferenceEngine
    from sideman.engine.model import ModelConfig
    from sideman.engine.request import GenerationRequest, InferenceConfig, TrackPrompt

    torch.set_num_threads(threads)
    _header("generate")
    repeats = 3 if quick else 5
    engine = InferenceEngine.random_init(ModelConfig.preset("yellow_small"), seed=0, device="cpu")
    model = engine.runner
    score = reference_like_score(np.random.default_rng(0))

    def request(seed: int) -> GenerationRequest:
        return GenerationRequest(
            tracks=(TrackPrompt(id=0, bars=(2,)),),
            config=InferenceConfig(model_dim=4, density_hard_limit=21, seed=seed, mask_mode="attention"),
        )

    results = []

    def one_bar() -> None:
        results.append(engine.session(score, request(len(results))).run())

    e2e = _median_time(one_bar, repeats, warmup=2)
    steps = [r.steps[0] for r in results[2:]]
    prompt_tokens = steps[0].prompt_tokens
    gen_tokens = statistics.median(s.generated_tokens for s in steps)
    outside_ms = statistics.median(1e3 * s.sample_s / max(s.generated_tokens, 1) for s in steps)

    # Same-run baseline: the bare model, prefill of the same length and single-token KV steps.
    with torch.inference_mode():
        ids = torch.randint(0, model.config.vocab_size, (1, prompt_tokens))
        cache = model.new_cache(batch=1, max_len=model.config.n_positions)

        def prefill() -> None:
            cache.truncate(0)
            model(ids, cache=cache, last_only=True)

        t_prefill = _median_time(prefill, repeats, warmup=2)
        token = torch.zeros((1, 1), dtype=torch.long)

        def decode_64() -> None:
            cache.truncate(prompt_tokens)
            for _ in range(64):
                model(token, cache=cache, last_only=True)

        t_step = _median_time(decode_64, repeats, warmup=1) / 64
    warm_sample_us = _warm_sampler_us(engine, score, request(0))
    floor = t_prefill + gen_tokens * t_step
    figures = {
        "prompt_tokens": prompt_tokens,
        "generated_tokens": gen_tokens,
        "prefill_ms": 1e3 * t_prefill,
        "step_ms": 1e3 * t_step,
        "outside_model_ms_per_token": outside_ms,
        "infill_bar_e2e_s": e2e,
        "bare_model_floor_s": floor,
        "sampler_warm_us": warm_sample_us,
    }
    print("model: random-init yellow_small shape (n_embd 512, 6 layers, 8 heads, 2048 positions, vocab 647)")
    print(f"request: infill of 1 bar, density cap 21; prompt {prompt_tokens} tokens, median {gen_tokens} generated")
    print(f"prefill ({prompt_tokens} tokens)         {figures['prefill_ms']:8.1f} ms   (reference {REFERENCE['prefill_ms']:.0f} ms)")
    print(f"decode step (KV cache)          {figures['step_ms']:8.2f} ms   (reference {REFERENCE['step_ms']:.1f} ms)")
    lo, hi = REFERENCE["outside_model_ms_per_token"]
    print(
        f"outside the model per token     {outside_ms:8.3f} ms   (reference {lo}-{hi} ms; target <= "
        f"{TARGETS['outside_model_ms_per_token']} ms)"
    )
    print(
        f"sampler kernel alone, warm caches {warm_sample_us / 1e3:8.3f} ms   (mask + filters + draw; in the loop each "
        "step first streams the weights through the caches, so the same work runs cold)"
    )
    lo, hi = REFERENCE["infill_bar_e2e_s"]
    print(
        f"end-to-end infill bar           {e2e:8.3f} s    (reference {lo}-{hi} s, x{lo / e2e:.2f}-{hi / e2e:.2f} faster; "
        f"target <= {TARGETS['infill_bar_e2e_s']} s)"
    )
    print(f"same-run bare-model floor       {floor:8.3f} s    (e2e is {e2e / floor:.2f}x prefill + tokens x step)")
    figures.update(_other_precisions(score, request, repeats, e2e))
    return figures


def _one_bar(engine, score: Score, request) -> None:
    engine.session(score, request(0)).run()


def _other_precisions(score: Score, request, repeats: int, fp32_e2e: float) -> dict[str, float]:
    """The same end-to-end infill bar with int8 and mixed arithmetic, against the fp32 figure."""
    from sideman.engine.inference import InferenceEngine
    from sideman.engine.model import ModelConfig, int8_is_available

    if not int8_is_available():
        print("int8 / mixed precision: not available in this torch build")
        return {}
    figures = {}
    for precision in ("int8", "mixed"):
        engine = InferenceEngine.random_init(
            ModelConfig.preset("yellow_small"), seed=0, device="cpu", precision=precision
        )
        e2e = _median_time(functools.partial(_one_bar, engine, score, request), repeats, warmup=2)
        figures[f"infill_bar_e2e_s_{precision}"] = e2e
        print(
            f"end-to-end infill bar, {precision:5s}   {e2e:8.3f} s    (x{fp32_e2e / e2e:.2f} vs fp32 in this run; "
            f"--precision {precision})"
        )
    return figures


def _warm_sampler_us(engine, score: Score, request) -> float:
    """Grammar mask + filters + draw for one token, repeated back to back (caches warm)."""
    from sideman.engine.planner import plan_request
    from sideman.engine.sampler import Grammar, SamplingParams, TokenSampler

    session = engine.session(score, request)
    prompt = session._build_prompt(plan_request(session.request, session.score)[0])
    grammar = Grammar(engine.encoder_config, prompt.constraints)
    start = grammar.new_states(1)
    grammar.advance(start, prompt.full_ids)
    sampler = TokenSampler(grammar, SamplingParams(), torch.Generator().manual_seed(0))
    logits = torch.randn(1, engine.encoder_config.vocabulary.size, generator=torch.Generator().manual_seed(1))
    states = start.copy()

    def draw_1000() -> None:
        for _ in range(1000):
            states[:] = start
            sampler.sample(logits, states)

    return 1e3 * _median_time(draw_1000, 3)
