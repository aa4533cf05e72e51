"""InferenceEngine: load a model, plan a request into steps, prompt, decode, check and splice.

One engine holds an immutable model and encoder config and can serve many sessions; each
session owns its score copy, its random generator and its KV cache, so nothing mutable is
shared between runs (tokens.md §14 item 13).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from sideman.engine.candidates import CandidateJudge, with_candidate
from sideman.engine.checkpoint import load_model
from sideman.engine.model import GPT2, ModelConfig
from sideman.engine.planner import Step, plan_request
from sideman.engine.request import GenerationRequest, RequestError
from sideman.engine.sampler import Constraints, Grammar, SamplingParams, TokenSampler
from sideman.engine.score import NoteArrays, Score
from sideman.engine.tokenizer import BarMode, Tokenizer
from sideman.engine.vocab import ATTRIBUTE_NAMES, EncoderConfig, TokenType

log = logging.getLogger(__name__)

SHIPPED_MODEL_DIR = "models"  # inside the sideman.engine package
# Short names of MIDI-GPT checkpoints -> file prefix (tokens.md §13.6); looked up offline only.
YELLOW_PREFIXES = {
    "yellow": "yellow_medium",
    "yellow_small": "yellow_small",
    "yellow_medium": "yellow_medium",
    "expressive": "expressive_medium",
    "prism_medium": "prism_medium",
}


class EngineError(RuntimeError):
    """A model cannot be found or loaded, or a generation cannot complete."""


class GenerationCancelled(EngineError):
    """The session's cancel event was set; raised between tokens."""


class GenerationFailed(EngineError):
    """Every attempt of a step failed its acceptance checks."""




class PromptOverflow(EngineError):
    """A step's prompt leaves no room for generation within the model's positions."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device that is missing is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EngineError("device 'cuda' requested but torch sees no CUDA device; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise EngineError("device 'mps' requested but it is not available; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise EngineError(f"unknown device {name!r}: choose auto, cpu, cuda or mps")
    return torch.device(name)


@dataclass
class StepReport:
    """What one planner step cost and produced."""

    start_bar: int
    end_bar: int
    targets: tuple[tuple[int, int], ...]
    prompt_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0
    attempts: int = 0
    prefill_s: float = 0.0
    model_s: float = 0.0
    sample_s: float = 0.0
    total_s: float = 0.0
    rested: bool = False  # every candidate was silent and one was kept (rest_on_silence)


@dataclass
class GenerationResult:
    score: Score
    steps: list[StepReport] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def generated_tokens(self) -> int:
        return sum(s.generated_tokens for s in self.steps)

    def summary(self) -> str:
        bars = sorted({b for s in self.steps for _, b in s.targets})
        return (
            f"generated {len(bars)} bar(s) in {len(self.steps)} step(s): {self.generated_tokens} tokens "
            f"in {self.elapsed_s:.3f} s"
        )


class InferenceEngine:
    """A loaded model plus its encoder config; ``session(score, request).run()`` generates."""

    def __init__(
        self,
        model: GPT2,
        encoder_config: EncoderConfig,
        *,
        device: str | torch.device = "cpu",
        name: str = "",
        precision: str | torch.dtype = "fp32",
    ):
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.model = model.to(self.device).eval()
        self.runner = self.model.for_inference(precision)
        self.precision = self.runner.precision
        self.encoder_config = encoder_config
        self.tokenizer = Tokenizer(encoder_config)
        self.name = name
        if model.config.vocab_size != encoder_config.vocabulary.size:
            raise EngineError(
                f"model vocab_size {model.config.vocab_size} != encoder vocabulary size {encoder_config.vocabulary.size}"
            )

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", precision: str = "fp32"
    ) -> InferenceEngine:
        model, encoder_config = load_model(path)
        return cls(model, encoder_config, device=device, name=str(path), precision=precision)

    @classmethod
    def from_pretrained(
        cls, name: str, device: str = "auto", precision: str = "fp32"
    ) -> InferenceEngine:
        """A shipped model by name ("default"), a local bundle path, or a MIDI-GPT name in the local cache."""
        return cls.from_checkpoint(find_pretrained(name), device=device, precision=precision)

    @classmethod
    def random_init(
        cls,
        model_config: ModelConfig | None = None,
        *,
        seed: int = 0,
        device: str = "auto",
        precision: str = "fp32",
    ) -> InferenceEngine:
        """A randomly initialised model (yellow_small shape by default), for demos and benchmarks."""
        config = model_config or ModelConfig.preset("yellow_small")
        model = GPT2(config)
        model.init_weights(torch.Generator().manual_seed(seed))
        return cls(
            model, EncoderConfig.yellow(), device=device, name=f"random-init({seed})", precision=precision
        )

    def session(
        self,
        score: Score,
        request: GenerationRequest,
        cancel: threading.Event | None = None,
        *,
        rest_on_silence: bool = False,
    ) -> GenerationSession:
        """``rest_on_silence``: when every attempt of a step fails only the silence check, keep the
        most likely silent candidate (a rest) instead of raising GenerationFailed."""
        return GenerationSession(
            self, score, request, cancel or threading.Event(), rest_on_silence=rest_on_silence
        )


def find_pretrained(name: str) -> Path:
    """Resolve a model name or path to a bundle file, offline; EngineError lists what was searched."""
    searched: list[str] = []
    path = Path(name).expanduser()
    if path.suffix in (".pt", ".safetensors") or path.exists():
        if path.is_file():
            return path
        raise EngineError(f"model file {path} does not exist")
    shipped = resources.files("sideman.engine").joinpath(SHIPPED_MODEL_DIR)
    for suffix in (".safetensors", ".pt"):
        candidate = shipped.joinpath(name + suffix)
        searched.append(str(candidate))
        if candidate.is_file():
            return Path(str(candidate))
    prefix = YELLOW_PREFIXES.get(name, name)
    for directory in _model_cache_dirs():
        searched.append(f"{directory}/{prefix}-final.safetensors or -step<N>.safetensors")
        final = directory / f"{prefix}-final.safetensors"
        if final.is_file():
            return final
        steps = sorted(directory.glob(f"{prefix}-step*.safetensors"), key=_step_number)
        if steps:
            return steps[-1]
    hint = (
        "sideman runs offline: give a bundle path (--model path/to/model.safetensors), put MIDI-GPT "
        "bundles in $SIDEMAN_MODEL_DIR, or use --random-init for a demo"
    )
    raise EngineError(f"no model named {name!r}; looked in: {'; '.join(searched)}. {hint}")


def _model_cache_dirs() -> list[Path]:
    import os

    dirs = []
    if os.environ.get("SIDEMAN_MODEL_DIR"):
        dirs.append(Path(os.environ["SIDEMAN_MODEL_DIR"]))
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    dirs.append(cache_home / "sideman" / "models")
    return dirs


def _step_number(path: Path) -> int:
    digits = path.stem.rsplit("-step", 1)[-1]
    return int(digits) if digits.isdigit() else -1


@dataclass(frozen=True)
class _Prompt:
    """Everything one step feeds the model: model input and the grammar that continues it."""

    full_ids: np.ndarray  # encoder output (for decoding: prompt + generated)
    input_ids: np.ndarray  # what the model sees (span tokens dropped in attention_skip)
    positions: np.ndarray  # position id of each input token
    key_mask: np.ndarray | None  # per input token: may it be attended (False inside masked spans)
    constraints: Constraints
    track_order: tuple[int, ...]
    emitted_bars: tuple[tuple[int, ...], ...]  # per emitted track: window-local bars in token order


class GenerationSession:
    """One request on one score. Not thread-safe; ``cancel`` may be set from another thread."""

    def __init__(
        self,
        engine: InferenceEngine,
        score: Score,
        request: GenerationRequest,
        cancel: threading.Event,
        *,
        rest_on_silence: bool = False,
    ):
        request.validate(score, engine.encoder_config)
        self.rest_on_silence = rest_on_silence
        self.engine = engine
        self.request = request
        self.config = request.config
        self.cancel = cancel
        self.source_resolution = score.resolution
        self.score = _apply_meter_controls(engine.tokenizer.to_grid(score), request)
        self.sampling = SamplingParams(
            temperature=self.config.temperature,
            top_k=self.config.top_k,
            top_p=self.config.top_p,
            mask_k=self.config.mask_k,
            mask_p=self.config.mask_p,
        )
        self.sampling.validate()
        self.prompts_by_track = {t.id: t for t in request.tracks}
        self.ignored = {t.id for t in request.tracks if t.ignore}
        self.n_candidates = self.config.num_candidates
        model_config = engine.model.config
        self._cache = engine.runner.new_cache(batch=self.n_candidates, max_len=model_config.n_positions)
        self._cached_input: np.ndarray = np.zeros(0, dtype=np.int64)
        self._cached_positions: np.ndarray = np.zeros(0, dtype=np.int64)
        self._cached_key_mask: np.ndarray = np.zeros(0, dtype=bool)
        self._key_mask = torch.ones(model_config.n_positions, dtype=torch.bool)

    # ---- driver ------------------------------------------------------------------------
    def run(self) -> GenerationResult:
        """Generate every planned step; on prompt overflow, replan with the next smaller window."""
        started = time.perf_counter()
        original = self.score
        reports: list[StepReport] = []
        while True:
            try:
                with torch.inference_mode():
                    for step in plan_request(self.request, self.score):
                        reports.append(self._run_step(step))
                break
            except PromptOverflow:
                smaller = [m for m in self.engine.encoder_config.num_bars_map if m < self.config.model_dim]
                if not smaller:
                    raise
                log.warning("prompt overflow at model_dim %d; replanning with %d", self.config.model_dim, max(smaller))
                self.config = replace(self.config, model_dim=max(smaller))
                self.request = replace(self.request, config=self.config)
                self.score = original
        result_score = self.score.rescaled(self.source_resolution) if self.source_resolution != self.score.resolution else self.score
        return GenerationResult(result_score, reports, time.perf_counter() - started)

    def _run_step(self, step: Step) -> StepReport:
        step_start = time.perf_counter()
        report = StepReport(step.start_bar, step.end_bar, step.targets)
        prompt = self._build_prompt(step)
        report.prompt_tokens = len(prompt.input_ids)
        budget = self.engine.model.config.n_positions - len(prompt.input_ids) - 1
        if self.config.max_new_tokens:
            budget = min(budget, self.config.max_new_tokens)
        if budget <= 0:
            raise PromptOverflow(
                f"prompt of {len(prompt.input_ids)} tokens for bars {step.start_bar}-{step.end_bar - 1} leaves no room "
                f"in the model's {self.engine.model.config.n_positions} positions; use a smaller model_dim"
            )
        grammar = Grammar(self.engine.encoder_config, prompt.constraints)
        base_state = grammar.new_states(1)
        grammar.advance(base_state, prompt.full_ids)  # the grammar follows the whole stream, spans included
        failures: list[str] = []
        best_rest: tuple[float, NoteArrays] | None = None
        for attempt in range(self.config.max_attempts):
            report.attempts = attempt + 1
            params = self.sampling
            if attempt:
                escalation = min(self.config.temperature_escalation, 3.0) ** attempt
                params = replace(params, temperature=params.temperature * escalation)
            generator = torch.Generator()
            if self.config.seed >= 0:
                generator.manual_seed(self.config.seed + attempt)
            else:
                generator.seed()
            tokens, scores = self._decode(prompt, grammar, base_state, params, generator, budget, report)
            chosen, reasons, rest = self._pick_candidate(step, prompt, tokens, scores)
            if chosen is not None:
                self._splice(step, prompt, chosen)
                report.total_s = time.perf_counter() - step_start
                return report
            if rest is not None and (best_rest is None or rest[0] > best_rest[0]):
                best_rest = rest
            failures.extend(reasons)
            log.info("step %s-%s attempt %d rejected: %s", step.start_bar, step.end_bar, attempt + 1, "; ".join(reasons))
        if self.rest_on_silence and best_rest is not None:
            # A rest is music, not an error (osc-protocol D43): keep the most likely silent candidate.
            self._splice(step, prompt, best_rest[1])
            report.rested = True
            report.total_s = time.perf_counter() - step_start
            return report
        raise GenerationFailed(
            f"Max attempts ({self.config.max_attempts}) reached for bars {[b for _, b in step.targets]}: "
            + "; ".join(sorted(set(failures)))
        )

    # ---- prompt ------------------------------------------------------------------------
    def _build_prompt(self, step: Step) -> _Prompt:
        cfg = self.engine.encoder_config
        tokenizer = self.engine.tokenizer
        window = self.score.slice_bars(step.start_bar, step.end_bar)
        n_tracks, n_bars = window.n_tracks, window.n_bars
        masked_mode = {"remove": BarMode.REMOVED, "token": BarMode.MASK_TOKEN}.get(self.config.mask_mode, BarMode.MASKED)
        modes = np.where(step.context, BarMode.NOTES, masked_mode).astype(np.int8)
        targets_local = [(t, b - step.start_bar) for t, b in step.targets]
        if step.autoregressive:
            for t in step.track_indices:
                first = min(b for tt, b in targets_local if tt == t)
                modes[t, first:] = BarMode.CUT
        else:
            for t, b in targets_local:
                modes[t, b] = BarMode.FILL
        order = [t for t in range(n_tracks) if t not in self.ignored]
        if step.autoregressive:
            order = [t for t in order if t not in step.track_indices] + list(step.track_indices)
        attributes = self._attributes(window, modes)
        encoded = tokenizer.encode_window(
            window,
            num_bars=self.config.model_dim,
            track_order=order,
            bar_modes=modes,
            attributes=attributes,
        )
        ids = encoded.ids.astype(np.int64)
        vocab = cfg.vocabulary
        if not step.autoregressive:
            fill_start = vocab.encode(TokenType.FILL_IN_START)
            first = int(np.flatnonzero(ids == fill_start)[0])
            ids = ids[: first + 1]
        positions = np.arange(len(ids), dtype=np.int64)
        keep = np.ones(len(ids), dtype=bool)
        for start, end in encoded.mask_spans:
            keep[start:end] = False
        key_mask = None
        input_ids = ids
        if self.config.mask_mode == "attention_skip":
            input_ids, positions = ids[keep], positions[keep]
        elif self.config.mask_mode == "attention" and not keep.all():
            key_mask = keep
        bar_ticks = cfg.bar_ticks
        ts_values = np.array([cfg.time_signature_index(n, d) for n, d in window.time_signatures], dtype=np.int64)
        if step.autoregressive:
            constraints = Constraints(
                exact_bars=n_bars,
                max_tracks=len(order),
                require_notes=True,
                autoregressive=True,
                polyphony_limit=self.config.polyphony_hard_limit,
                density_limit=self.config.density_hard_limit,
                bar_time_signature_pins=tuple(int(v) for v in ts_values),
            )
        else:
            drums = [self.score.track_info[t].is_drum for t, _ in encoded.fill_targets]
            constraints = Constraints(
                max_tracks=len(order),
                require_notes=True,
                polyphony_limit=self.config.polyphony_hard_limit,
                density_limit=self.config.density_hard_limit,
                n_fill_targets=len(encoded.fill_targets),
                fill_block_is_drum=tuple(drums),
                fill_block_bar_ticks=tuple(int(bar_ticks[ts_values[b]]) for _, b in encoded.fill_targets),
            )
        emitted = tuple(
            tuple(int(b) for b in np.flatnonzero((modes[t] != BarMode.REMOVED) & (modes[t] != BarMode.CUT)))
            + (tuple(int(b) for b in range(n_bars) if modes[t, b] == BarMode.CUT) if step.autoregressive else ())
            for t in order
        )
        return _Prompt(
            full_ids=ids,
            input_ids=input_ids,
            positions=positions,
            key_mask=key_mask,
            constraints=constraints,
            track_order=tuple(order),
            emitted_bars=emitted,
        )

    def _attributes(self, window: Score, modes: np.ndarray) -> np.ndarray:
        """Analyse context bars only (the bars being replaced never leak in), then apply requests."""
        context = modes == BarMode.NOTES
        attributes = self.engine.tokenizer.compute_attributes(window, bar_mask=context)
        attributes[~context.any(axis=1)] = -1
        for track_id, prompt in self.prompts_by_track.items():
            for name, value in prompt.attributes.items():
                attributes[track_id, ATTRIBUTE_NAMES.index(name)] = value
        return attributes

    # ---- decoding ----------------------------------------------------------------------
    def _decode(
        self,
        prompt: _Prompt,
        grammar: Grammar,
        base_state: np.ndarray,
        params: SamplingParams,
        generator: torch.Generator,
        budget: int,
        report: StepReport,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``num_candidates`` continuations in one batch; returns tokens (B, n) and scores (B,)."""
        model = self.engine.runner
        device = self.engine.device
        batch = self.n_candidates
        t0 = time.perf_counter()
        logits = self._prefill(prompt, report)
        if batch > 1:
            self._cache.expand_batch(batch)
        report.prefill_s += time.perf_counter() - t0
        report.model_s += time.perf_counter() - t0
        states = np.repeat(base_state, batch, axis=0)
        sampler = TokenSampler(grammar, params, generator)
        out = np.full((batch, budget), -1, dtype=np.int64)
        log_likelihood = np.zeros(batch, dtype=np.float64)
        position = int(prompt.positions[-1]) + 1
        step_input = torch.zeros((batch, 1), dtype=torch.long)
        step_input_np = step_input.numpy()
        step_positions = torch.zeros((batch, 1), dtype=torch.long)
        n_generated = 0
        for i in range(budget):
            if self.cancel.is_set():
                raise GenerationCancelled("generation cancelled")
            t1 = time.perf_counter()
            last = logits[:, -1, :].float().cpu()
            if last.shape[0] != batch:
                last = last.expand(batch, -1).contiguous()
            tokens = sampler.sample(last, states)
            if batch > 1:
                live = tokens >= 0
                picked = last[np.arange(batch), np.maximum(tokens, 0)].numpy()
                log_likelihood[live] += picked[live] - torch.logsumexp(last, dim=-1).numpy()[live]
            out[:, i] = tokens
            n_generated = i + 1
            done = grammar.finished(states)
            report.sample_s += time.perf_counter() - t1
            if done.all():
                break
            t2 = time.perf_counter()
            step_input_np[:, 0] = tokens
            step_input_np[tokens < 0, 0] = 0  # finished rows feed a harmless token; their output is ignored
            step_positions.fill_(position + i)
            logits = model(
                step_input.to(device),
                cache=self._cache,
                position_ids=step_positions.to(device),
                key_mask=self._key_mask_tensor(),
                last_only=True,
            )
            report.model_s += time.perf_counter() - t2
        report.generated_tokens += n_generated
        out = out[:, :n_generated]
        lengths = np.maximum((out >= 0).sum(axis=1), 1)
        return out, log_likelihood / lengths

    def _prefill(self, prompt: _Prompt, report: StepReport) -> torch.Tensor:
        """Run the prompt into the cache, reusing the longest unchanged prefix of the last prompt."""
        model = self.engine.runner
        device = self.engine.device
        ids, positions = prompt.input_ids, prompt.positions
        key_mask = prompt.key_mask if prompt.key_mask is not None else np.ones(len(ids), dtype=bool)
        reuse = _common_prefix(
            (ids, positions, key_mask), (self._cached_input, self._cached_positions, self._cached_key_mask)
        )
        reuse = min(reuse, len(ids) - 1)  # always run at least the last token to get its logits
        self._cache.truncate(reuse)
        report.reused_tokens += reuse
        self._key_mask[: len(key_mask)] = torch.from_numpy(key_mask)
        self._key_mask[len(key_mask) :] = True
        new_ids = torch.from_numpy(ids[reuse:]).unsqueeze(0).to(device)
        new_positions = torch.from_numpy(positions[reuse:]).unsqueeze(0).to(device)
        self._cached_input, self._cached_positions, self._cached_key_mask = ids, positions, key_mask
        logits = model(new_ids, cache=self._cache, position_ids=new_positions, key_mask=self._key_mask_tensor(), last_only=True)
        return logits

    def _key_mask_tensor(self) -> torch.Tensor | None:
        if not self._cached_key_mask.size or self._cached_key_mask.all():
            return None
        return self._key_mask.to(self.engine.device)

    # ---- checks and splicing -----------------------------------------------------------
    def _pick_candidate(
        self, step: Step, prompt: _Prompt, tokens: np.ndarray, scores: np.ndarray
    ) -> tuple[NoteArrays | None, list[str], tuple[float, NoteArrays] | None]:
        """Decode each candidate and let the step's ``CandidateJudge`` keep one."""
        candidates = [self._target_notes(step, prompt, row[row >= 0]) for row in tokens]
        return self._judge(step).pick(candidates, scores)

    def _judge(self, step: Step) -> CandidateJudge:
        requested = tuple(
            (track, ATTRIBUTE_NAMES.index(name), int(value))
            for track, prompt in self.prompts_by_track.items()
            if track in step.track_indices
            for name, value in prompt.attributes.items()
        )
        return CandidateJudge(
            self.score, step, self.engine.tokenizer, requested,
            silence_check=self.config.silence_check, novelty_check=self.config.novelty_check,
        )  # fmt: skip

    def _target_notes(self, step: Step, prompt: _Prompt, generated: np.ndarray) -> NoteArrays:
        """Notes of this step's target bars, in global (track, bar) coordinates at model resolution."""
        decoded = self.engine.tokenizer.decode(np.concatenate([prompt.full_ids, generated]))
        n = decoded.notes
        parts = []
        targets = set(step.targets)
        for decoded_track, bars in enumerate(prompt.emitted_bars):
            if decoded_track >= decoded.n_tracks:
                break
            track = prompt.track_order[decoded_track]
            in_track = n.track == decoded_track
            for decoded_bar, local_bar in enumerate(bars):
                global_bar = step.start_bar + local_bar
                if (track, global_bar) not in targets:
                    continue
                sel = n.select(in_track & (n.bar == decoded_bar))
                parts.append(
                    NoteArrays(
                        np.full(len(sel), track), np.full(len(sel), global_bar), sel.onset, sel.duration, sel.pitch, sel.velocity
                    )
                )
        return NoteArrays.concatenate(parts).sorted()

    def _splice(self, step: Step, prompt: _Prompt, notes: NoteArrays) -> None:
        self.score = with_candidate(self.score, step, notes)


def _apply_meter_controls(score: Score, request: GenerationRequest) -> Score:
    """Set the meter of generated bars from ``controls``/``bar_controls`` time_signature.

    Meters belong to the bar grid, so a pinned meter applies to that bar in every track.
    """
    pinned: dict[int, tuple[int, int]] = {}
    for track in request.tracks:
        whole = track.controls.get("time_signature")
        for bar in track.bars:
            meter = track.bar_controls.get(bar, {}).get("time_signature", whole)
            if meter is not None:
                pinned[bar] = tuple(meter)
    if not pinned:
        return score
    out = score.copy()
    for bar, meter in pinned.items():
        out.time_signatures[bar] = meter
    return out


def _common_prefix(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> int:
    """Length of the longest prefix on which every pair of arrays agrees."""
    n = min(len(a[0]), len(b[0]))
    if n == 0:
        return 0
    same = np.ones(n, dtype=bool)
    for x, y in zip(a, b, strict=True):
        same &= x[:n] == y[:n]
    mismatch = np.flatnonzero(~same)
    return int(mismatch[0]) if len(mismatch) else n


__all__ = [
    "EngineError",
    "GenerationCancelled",
    "GenerationFailed",
    "GenerationResult",
    "GenerationSession",
    "PromptOverflow",
    "InferenceEngine",
    "RequestError",
    "StepReport",
    "find_pretrained",
    "resolve_device",
]
