"""``sideman eval``: a checkpoint measured on the held-out pieces of the training split.

Four sections, each optional (``EvalConfig.sections``), all with one torch thread, the
daemon's serving setting:

- **validation**: mean next-token cross-entropy (nats/token, fp32) and perplexity over a fixed
  set of training-style sequences drawn from the validation pieces (``validation_set``: the
  same sampling scheme as training, so infill, autoregressive, reduction and rescaled samples
  all count), and again over sequences of the voices as written
  (``SampleConfig.as_written``: no reduction, rescaling, re-articulation or holding):
  the figure that stays comparable between runs trained with other augmentation shares.
- **adherence**: for each attribute and each of its levels, ``adherence_samples`` windows of
  ``window_bars`` held-out bars; one track is regenerated whole with that level requested and
  the engine's own analysis (``Tokenizer.compute_attributes``) of the result is the realised
  level. Melodic attributes use a reduction track (2..all voices merged, the training
  augmentation of ``augment.merge_tracks``) so polyphony can be asked of it; the other three
  melodic attributes of the request are the track's own values, moved just enough to stay
  consistent (min <= max). ``note_density`` needs drum tracks in the held-out pieces and is
  skipped, with the reason in ``info``, when there are none. The same windows and seeds go to a
  random-init model of the same shape.
- **infill**: ``infill_samples`` held-out cells (one voice of one bar, never a window's first
  bar) regenerated with every other bar of the window as context, as the daemon asks for a bar
  (the target's own notes are removed from the request's score: ``Window.prompt_score``);
  each system's bar against the original with ``infill_sample_metrics``: the model, the
  random-init model, "copy the previous bar of the same voice", and the original itself
  (ground truth). The key for the in-key ratio is estimated from the context; the memorisation
  index holds every bar of the training pieces.
- **realtime**: the wall time of each of the model's infill generations (request to notes: one
  bar of one voice), after two unmeasured warm-up generations; the quality sections run fp32,
  and the same requests are timed again at the precision ``sideman serve`` picks by default
  ("auto": int8 where fbgemm runs), which is the latency a performer gets.

A generation that fails (``GenerationFailed``: every attempt refused by the checks) counts as
an empty bar in infill and is left out of adherence; both are counted in the report.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sideman.engine.inference import GenerationFailed, InferenceEngine, find_pretrained
from sideman.engine.model import GPT2
from sideman.engine.request import GenerationRequest, InferenceConfig, TrackPrompt
from sideman.engine.score import NoteArrays, Score
from sideman.engine.train.config import EvalConfig, EvalConfigError
from sideman.engine.train.corpus import Piece, load_corpus, split_pieces
from sideman.engine.train.loop import default_cache_dir, sequence_loss
from sideman.engine.train.metrics import (
    BarHashIndex,
    adherence,
    attribute_level_counts,
    estimate_key,
    infill_sample_metrics,
)
from sideman.engine.train.report import (
    COPY_PREVIOUS_BAR,
    GROUND_TRUTH,
    MODEL,
    RANDOM_INIT,
    InfillComparison,
    build_report,
)
from sideman.engine.train.runtime import Distributed, torch_threads
from sideman.engine.vocab import ATTRIBUTE_NAMES, MELODIC_ATTRIBUTES

log = logging.getLogger(__name__)

_DRAWS = 200  # windows tried per case before giving up
_WARM_UP = 2  # unmeasured generations before timing
# Attributes that bound the same quantity from below and above: a request keeps min <= max.
_PAIRS = {
    "min_polyphony": ("max_polyphony", max),
    "max_polyphony": ("min_polyphony", min),
    "min_note_duration": ("max_note_duration", max),
    "max_note_duration": ("min_note_duration", min),
}


@dataclass(frozen=True)
class Window:
    """``window_bars`` bars of a held-out piece (all its tracks, bars from 0) and one target."""

    piece_id: str
    start_bar: int
    score: Score
    track: int
    bar: int = -1  # the target bar of an infill case; -1: every bar of the track

    def cell(self, track: int, bar: int) -> NoteArrays:
        notes = self.score.notes
        return notes.select((notes.track == track) & (notes.bar == bar))

    def prompt_score(self) -> Score:
        """The score the engine is given: the target's notes removed, as the daemon has no notes
        yet for the bar it writes (the engine never sees them, and the novelty check, which
        refuses a repeat of the bar it replaces, must not refuse the original)."""
        notes = self.score.notes
        target = notes.track == self.track
        if self.bar >= 0:
            target &= notes.bar == self.bar
        out = self.score.copy()
        out.notes = notes.select(~target)
        return out


@dataclass
class _Systems:
    """The model under test and its random-init twin, both on the CPU with fp32 weights."""

    model: InferenceEngine
    random_init: InferenceEngine
    serving: InferenceEngine | None = None  # the model at serve's precision, when not fp32
    failures: dict[str, dict[str, int]] = field(default_factory=dict)

    def items(self) -> list[tuple[str, InferenceEngine]]:
        return [(MODEL, self.model), (RANDOM_INIT, self.random_init)]

    def count_failure(self, section: str, system: str) -> None:
        self.failures.setdefault(section, {}).setdefault(system, 0)
        self.failures[section][system] += 1


# ---- entry point ---------------------------------------------------------------------------------
def evaluate(checkpoint: str, config: EvalConfig | None = None) -> dict[str, Any]:
    """The report (``build_report``'s JSON-able dict) of ``checkpoint`` (a path or a shipped name)."""
    config = config or EvalConfig()
    started = time.perf_counter()
    path = find_pretrained(checkpoint)
    with torch_threads(config.threads, Distributed(), torch.device("cpu")):
        engine = InferenceEngine.from_checkpoint(path, device="cpu")
        windows = engine.encoder_config.num_bars_map
        if config.window_bars not in windows:
            raise EvalConfigError(
                "window_bars", f"must be a window length of the vocabulary {list(windows)}, got "
                f"{config.window_bars}",
            )  # fmt: skip
        twin = GPT2(engine.model.config)
        twin.init_weights(torch.Generator().manual_seed(config.baseline_seed))
        systems = _Systems(
            engine, InferenceEngine(twin, engine.encoder_config, device="cpu", name="random-init")
        )
        cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        pieces = load_corpus(
            config.sources, cache_dir, workers=config.workers, progress=config.progress,
            limit=config.limit,
        )  # fmt: skip
        train, held_out = split_pieces(pieces, config.val_fraction, config.split_seed)
        if not train or not held_out:
            raise EvalConfigError(
                "sources", f"{len(pieces)} piece(s) from {', '.join(config.sources)} leave no "
                f"{'training' if not train else 'held-out'} pieces; use more data"
            )
        if "realtime" in config.sections:
            serving = InferenceEngine.from_checkpoint(path, device="cpu", precision="auto")
            systems.serving = serving if serving.precision != engine.precision else None
        info = _info(path, engine, config, train, held_out)
        sections: dict[str, Any] = {}
        if "validation" in config.sections:
            sections["validation_loss"], sections["validation_tokens"] = _validation(
                engine, held_out, config
            )
            sections["validation_voices"] = _validation(engine, held_out, config, voices_only=True)
        if "adherence" in config.sections:
            sections["adherence"] = _adherence(systems, train, held_out, config, info)
        if "infill" in config.sections or "realtime" in config.sections:
            infill, timings = _infill(systems, train, held_out, config)
            if "infill" in config.sections:
                sections["infill"] = infill
            if "realtime" in config.sections:
                sections["realtime_ms"] = timings
        info["failed_generations"] = systems.failures
        info["eval_seconds"] = round(time.perf_counter() - started, 1)
    return build_report(str(checkpoint), info=info, **sections)


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``eval.json`` and ``eval.md`` in ``out_dir`` (created); returns their paths."""
    import json

    from sideman.engine.train.report import render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "eval.json", out_dir / "eval.md"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    md_path.write_text(render_markdown(report))
    return json_path, md_path


# ---- sections ------------------------------------------------------------------------------------
def _validation(
    engine: InferenceEngine, held_out: Sequence[Piece], config: EvalConfig, voices_only: bool = False
) -> tuple[float, int]:
    """(loss, tokens) on the training mix of samples, or on the voices as written."""
    from sideman.engine.train.samples import SampleConfig, validation_set

    max_len = min(config.max_len, engine.model.config.n_positions)
    scheme = SampleConfig(max_len=max_len)
    samples = validation_set(
        held_out, engine.encoder_config, config.validation_samples, seed=config.seed,
        config=scheme.as_written() if voices_only else scheme,
    )  # fmt: skip
    return sequence_loss(engine.model, samples)


def _adherence(
    systems: _Systems,
    train: Sequence[Piece],
    held_out: Sequence[Piece],
    config: EvalConfig,
    info: dict[str, Any],
) -> dict[str, dict[str, dict[str, Any]]]:
    levels = attribute_level_counts(systems.model.encoder_config)
    trained = trained_levels(train, systems.model.encoder_config, seed=config.seed)
    has_drums = any(t.is_drum for p in held_out for t in p.score.track_info)
    attributes = [a for a in levels if a in MELODIC_ATTRIBUTES or has_drums]
    skipped = [a for a in levels if a not in attributes]
    if skipped:
        info["adherence_skipped"] = {
            a: "the held-out pieces have no drum tracks to ask it of" for a in skipped
        }
    results: dict[str, dict[str, dict[str, Any]]] = {MODEL: {}, RANDOM_INIT: {}}
    total = sum(levels[a] for a in attributes) * config.adherence_samples
    bar = _bar(config, total, "adherence")
    for a_index, attribute in enumerate(attributes):
        rng = np.random.default_rng([config.seed, 1, a_index])
        drum = attribute not in MELODIC_ATTRIBUTES
        pairs: dict[str, tuple[list[int], list[int]]] = {name: ([], []) for name, _ in systems.items()}
        for level in range(levels[attribute]):
            for k in range(config.adherence_samples):
                window = _adherence_window(rng, held_out, config.window_bars, drum)
                request = _attribute_request(systems.model, window, attribute, level, config, k)
                for name, engine in systems.items():
                    realised = _realised(engine, window, request, attribute)
                    if realised is None:
                        systems.count_failure("adherence", name)
                        continue
                    pairs[name][0].append(level)
                    pairs[name][1].append(realised)
                bar.update()
        for name, (requested, realised) in pairs.items():
            figures = adherence(requested, realised, levels[attribute])
            figures["asked"] = levels[attribute] * config.adherence_samples
            seen = trained.get(attribute, [])
            inside = np.isin(requested, seen)
            subset = adherence(
                np.asarray(requested)[inside], np.asarray(realised)[inside], levels[attribute]
            )
            del subset["confusion"]
            figures["trained_levels"] = seen
            figures["on_trained_levels"] = subset
            results[name][attribute] = figures
    bar.close()
    return results


def trained_levels(
    pieces: Sequence[Piece], encoder_config: Any, *, seed: int = 0, samples: int = 2000,
    share: float = 0.005,
) -> dict[str, list[int]]:
    """attribute → the levels carried by at least ``share`` of the tracks of ``samples`` training
    sequences (the sampling scheme of training, reductions included): what the model was shown."""
    from sideman.engine.train.samples import SampleConfig, SampleStream

    stream = SampleStream(pieces, encoder_config, SampleConfig(attribute_probability=1.0), seed)
    rows = np.concatenate([stream.next_sample().attributes for _ in range(samples)])
    out = {}
    for a, name in enumerate(ATTRIBUTE_NAMES):
        values = rows[:, a][rows[:, a] >= 0]
        if len(values):
            counts = np.bincount(values)
            out[name] = [int(v) for v in np.flatnonzero(counts >= share * len(values))]
    return out


def _infill(
    systems: _Systems, train: Sequence[Piece], held_out: Sequence[Piece], config: EvalConfig
) -> tuple[InfillComparison, dict[str, list[float]]]:
    want_metrics = "infill" in config.sections
    index = BarHashIndex()
    if want_metrics:
        for piece in train:
            index.add_bars(piece.score.notes)
    rng = np.random.default_rng([config.seed, 2])
    cases = [_infill_window(rng, held_out, config.window_bars) for _ in range(config.infill_samples)]
    timed = [systems.model] + ([systems.serving] if systems.serving else [])
    for k in range(_WARM_UP):
        case = cases[k % len(cases)]
        for engine in timed:
            _generate(engine, case, _infill_request(case, config, -1 - k))
    rows: dict[str, list[dict[str, float]]] = {
        MODEL: [], RANDOM_INIT: [], COPY_PREVIOUS_BAR: [], GROUND_TRUTH: []
    }  # fmt: skip
    timings: dict[str, list[float]] = {engine.precision: [] for engine in timed}
    engines = systems.items() if want_metrics else [(MODEL, systems.model)]
    bar = _bar(config, len(cases), "infill")
    for k, case in enumerate(cases):
        request = _infill_request(case, config, k)
        bar_ticks = int(case.score.bar_ticks()[case.bar])
        reference = case.cell(case.track, case.bar)
        notes = case.score.notes
        context = notes.select(~((notes.track == case.track) & (notes.bar == case.bar)))
        melodic = ~np.array([case.score.track_info[t].is_drum for t in context.track], dtype=bool)
        key = estimate_key(context.select(melodic)) if melodic.any() else None
        is_drum = case.score.track_info[case.track].is_drum
        generated: dict[str, NoteArrays] = {}
        for name, engine in engines:
            result, ms = _generate(engine, case, request)
            if name == MODEL:
                timings[engine.precision].append(ms)
            if result is None:
                systems.count_failure("infill", name)
                generated[name] = NoteArrays.empty()
            else:
                out = result.notes
                generated[name] = out.select((out.track == case.track) & (out.bar == case.bar))
        if systems.serving is not None:
            timings[systems.serving.precision].append(_generate(systems.serving, case, request)[1])
        if want_metrics:
            generated[COPY_PREVIOUS_BAR] = case.cell(case.track, case.bar - 1)
            generated[GROUND_TRUTH] = reference
            for name, bar_notes in generated.items():
                rows[name].append(
                    infill_sample_metrics(
                        bar_notes, reference, bar_ticks=bar_ticks,
                        beats_per_bar=bar_ticks / case.score.resolution,
                        context_bars=context, key=key, is_drum=is_drum, training_index=index,
                    )
                )  # fmt: skip
        bar.update()
    bar.close()
    return InfillComparison(rows) if want_metrics else None, timings  # type: ignore[return-value]


# ---- cases and requests --------------------------------------------------------------------------
def _draw_window(
    rng: np.random.Generator, pieces: Sequence[Piece], bars: int
) -> tuple[Piece, int, Score]:
    """A piece (weighted by bar count, among those with ``bars`` bars) and a uniform window."""
    usable = [p for p in pieces if p.score.n_bars >= bars and len(p.score.notes)]
    if not usable:
        raise EvalConfigError("window_bars", f"no held-out piece has {bars} bars with notes")
    weights = np.array([p.score.n_bars for p in usable], dtype=np.float64)
    piece = usable[int(rng.choice(len(usable), p=weights / weights.sum()))]
    start = int(rng.integers(0, piece.score.n_bars - bars + 1))
    return piece, start, piece.score.slice_bars(start, start + bars)


def _infill_window(rng: np.random.Generator, pieces: Sequence[Piece], bars: int) -> Window:
    """A held-out cell with notes, not in the window's first bar (it has a previous bar)."""
    for _ in range(_DRAWS):
        piece, start, score = _draw_window(rng, pieces, bars)
        notes = score.notes
        cells = sorted({(int(t), int(b)) for t, b in zip(notes.track, notes.bar, strict=True) if b >= 1})
        if cells:
            track, bar = cells[int(rng.integers(0, len(cells)))]
            return Window(piece.id, start, score, track, bar)
    raise EvalConfigError(
        "window_bars", f"no {bars}-bar window of the held-out pieces has notes after its first bar"
    )


def _adherence_window(
    rng: np.random.Generator, pieces: Sequence[Piece], bars: int, drum: bool
) -> Window:
    """A window whose target is a drum track (``drum``) or a reduction of 2..all melodic voices
    (the one melodic voice when there is only one)."""
    from sideman.engine.train.augment import melodic_tracks, merge_tracks

    for _ in range(_DRAWS):
        piece, start, score = _draw_window(rng, pieces, bars)
        present = np.unique(score.notes.track)
        wanted = [int(t) for t in present if score.track_info[t].is_drum == drum]
        if not wanted:
            continue
        if drum:
            return Window(piece.id, start, score, wanted[int(rng.integers(0, len(wanted)))])
        score = _without_empty_tracks(score)
        merged_score, kept, merged = merge_tracks(rng, score, np.arange(score.n_tracks))
        if merged:
            target = int(np.flatnonzero(kept == merged[0])[0])
            return Window(piece.id, start, merged_score, target)
        return Window(piece.id, start, score, int(melodic_tracks(score)[0]))
    kind = "drum" if drum else "melodic"
    raise EvalConfigError(
        "window_bars", f"no {bars}-bar window of the held-out pieces has a {kind} track with notes"
    )


def _without_empty_tracks(score: Score) -> Score:
    present = np.unique(score.notes.track)
    if len(present) == score.n_tracks:
        return score
    remap = np.full(score.n_tracks, -1, dtype=np.int32)
    remap[present] = np.arange(len(present), dtype=np.int32)
    notes = score.notes
    out = score.copy()
    out.track_info = [score.track_info[int(t)] for t in present]
    out.notes = NoteArrays(
        remap[notes.track], notes.bar, notes.onset, notes.duration, notes.pitch, notes.velocity
    )
    return out


def _config(config: EvalConfig, seed: int, **planning: int) -> InferenceConfig:
    return InferenceConfig(
        temperature=config.temperature, num_candidates=config.num_candidates,
        seed=config.seed * 1_000_003 + seed,
        model_dim=config.window_bars, **planning,
    )  # fmt: skip


def _infill_request(case: Window, config: EvalConfig, seed: int) -> GenerationRequest:
    return GenerationRequest((TrackPrompt(id=case.track, bars=(case.bar,)),), _config(config, seed))


def _attribute_request(
    engine: InferenceEngine,
    window: Window,
    attribute: str,
    level: int,
    config: EvalConfig,
    seed: int,
) -> GenerationRequest:
    """The whole target track regenerated in one step with ``attribute`` at ``level``; the track's
    other attributes are its own values, the paired bound moved to keep min <= max."""
    own = engine.tokenizer.compute_attributes(window.score)[window.track]
    names = [a for a in ATTRIBUTE_NAMES if (a in MELODIC_ATTRIBUTES) != (attribute == "note_density")]
    values = {a: int(own[ATTRIBUTE_NAMES.index(a)]) for a in names}
    values = {a: v for a, v in values.items() if v >= 0}
    values[attribute] = level
    if attribute in _PAIRS:
        other, bound = _PAIRS[attribute]
        if other in values:
            values[other] = bound(values[other], level)
    bars = tuple(range(window.score.n_bars))
    prompt = TrackPrompt(id=window.track, bars=bars, attributes=values)
    planning = {"bars_per_step": config.window_bars}
    return GenerationRequest((prompt,), _config(config, 10_000 + level * 1_000 + seed, **planning))


def _generate(
    engine: InferenceEngine, case: Window, request: GenerationRequest
) -> tuple[Score | None, float]:
    """(result score or None when generation failed, wall milliseconds from request to notes)."""
    started = time.perf_counter()
    try:
        score = engine.session(case.prompt_score(), request, rest_on_silence=True).run().score
    except GenerationFailed as exc:
        log.debug("generation failed on %s bar %d: %s", case.piece_id, case.start_bar, exc)
        score = None
    return score, (time.perf_counter() - started) * 1000.0


def _realised(
    engine: InferenceEngine, window: Window, request: GenerationRequest, attribute: str
) -> int | None:
    score, _ = _generate(engine, window, request)
    if score is None:
        return None
    level = int(engine.tokenizer.compute_attributes(score)[window.track, ATTRIBUTE_NAMES.index(attribute)])
    return level if level >= 0 else None


# ---- helpers -------------------------------------------------------------------------------------
def _bar(config: EvalConfig, total: int, what: str) -> Any:
    return tqdm(total=total, desc=what, unit="gen", disable=not config.progress, leave=False)


def _info(
    path: Path,
    engine: InferenceEngine,
    config: EvalConfig,
    train: Sequence[Piece],
    held_out: Sequence[Piece],
) -> dict[str, Any]:
    model = engine.model.config
    parameters = sum(p.numel() for p in engine.model.parameters())
    return {
        "bundle": str(path),
        "architecture": f"GPT-2, {model.n_layer} layers x {model.n_embd} wide x {model.n_head} heads, "
        f"{parameters:,} parameters",
        "data": f"{', '.join(config.sources)}: {len(held_out)} held-out pieces (val_fraction "
        f"{config.val_fraction}, split seed {config.split_seed}), {len(train)} training pieces",
        "samples": f"validation {config.validation_samples} sequences (max {config.max_len} tokens); "
        f"adherence {config.adherence_samples} per level; infill {config.infill_samples} cells; "
        f"{config.window_bars}-bar windows",
        "sampling": f"temperature {config.temperature}, {config.num_candidates} candidate(s) "
        "(kept: closest to the requested attributes, then fewest repeated context bars, then most "
        f"likely), seed {config.seed}; random-init seed {config.baseline_seed}",
        "threads": config.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", torch {torch.__version__}",
    }

