"""``train(config)``: the training loop for sideman's GPT-2, read top to bottom.

data (SampleStream samples grouped by length, padded) -> model (GPT2) -> AdamW with warm-up +
cosine -> a loop of forward / loss / backward / clip / step, with a validation pass every
``eval_interval`` steps, a resumable checkpoint every ``checkpoint_interval`` steps, and at the end
a loss-curve PNG, a ``train_log.json`` and the final bundle in both formats (``model.safetensors``,
``model.pt``).

One process runs on one CPU or GPU. Under ``torchrun`` (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set)
the same call joins a process group (gloo on CPU, nccl on CUDA) and trains with
DistributedDataParallel: every rank draws its own sample stream, rank 0 alone evaluates, writes files
and shows progress.

Files in ``out_dir`` and the resume format are described in ``engine/train/run_files.py``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import save_bundle
from ..model import GPT2
from ..vocab import EncoderConfig
from .config import RUNTIME_FIELDS, TrainConfig, TrainConfigError, lr_at
from .run_files import (
    CHECKPOINT_NAME,
    History,
    RunFileError,
    load_train_state,
    plot_loss_curve,
    save_train_state,
    write_train_log,
)
from .runtime import (
    Distributed,
    StopFlag,
    autocast,
    forked_rng,
    pick_device,
    pick_precision,
    restore_rng,
    rng_state,
    stop_on_signal,
    torch_threads,
)

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # target id of padding: cross entropy skips it
_CALIBRATION_STEPS = 10  # --minutes: steps timed before the run's step count is fixed


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    step: int  # optimizer steps done
    total_steps: int
    stopped: str  # "done" or "interrupted"
    tokens_seen: int
    train_seconds: float  # time in training steps (data + forward + backward + update)
    tokens_per_second: float
    final_train_loss: float
    final_val_loss: float
    bundles: tuple[Path, ...]
    loss_curve: Path
    log_file: Path
    checkpoint: Path
    history: History = field(repr=False)
    rank: int = 0  # only rank 0 validates and writes: elsewhere val loss is NaN, files absent


@dataclass(frozen=True)
class StepReport:
    """What ``on_step`` receives after every optimizer step (on rank 0)."""

    step: int
    total_steps: int
    loss: float
    lr: float
    tokens_seen: int


# ---- the loop ------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[StepReport], None] | None = None,
) -> TrainResult:
    """Train, checkpointing into ``config.out_dir``; Ctrl-C (or SIGTERM) saves and returns.

    ``resume`` continues the run saved in ``out_dir``: its settings come from the checkpoint, except
    ``RUNTIME_FIELDS``, which are taken from ``config``.
    """
    out_dir = Path(config.out_dir)
    state = None
    if resume:
        state = load_train_state(out_dir / CHECKPOINT_NAME)
        saved = TrainConfig.from_dict(state["train_config"])
        config = replace(saved, **{name: getattr(config, name) for name in RUNTIME_FIELDS})
    elif (out_dir / CHECKPOINT_NAME).exists():
        raise RunFileError(
            f"{out_dir} already holds a training run ({CHECKPOINT_NAME}); resume it or pick "
            "another output folder"
        )
    dist = Distributed.from_environment()
    device = pick_device(config.device, dist.local_rank)
    precision = pick_precision(config.precision, device)
    with (
        torch_threads(config.threads, dist, device),
        forked_rng(device, config.seed + dist.rank),
        stop_on_signal() as stop,
    ):
        dist.init(device)
        try:
            return _run(config, state, dist, device, precision, stop, progress, on_step)
        finally:
            dist.close()


def _run(
    config: TrainConfig,
    state: dict[str, Any] | None,
    dist: Distributed,
    device: torch.device,
    precision: str,
    stop: StopFlag,
    progress: bool,
    on_step: Callable[[StepReport], None] | None,
) -> TrainResult:
    out_dir = Path(config.out_dir)

    # model (first, so a bad --init-from fails before the corpus loads), optimiser, loss scaling
    model_config = config.model_config()
    model = GPT2(model_config, generator=torch.Generator().manual_seed(config.seed))
    if state is None and config.init_from is not None:
        _load_initial_weights(model, config.init_from)
    model = model.to(device)
    optimizer = _adamw(model, config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    history = History()
    step, total_steps, tokens_seen, train_seconds = 0, config.steps, 0, 0.0

    # data: every rank its own sample stream; a fixed validation set on rank 0
    encoder_config = EncoderConfig.yellow()
    train_pieces, val_pieces = _load_pieces(config, dist, progress)
    stream_seed = config.seed + 7919 * dist.rank
    val_batches = _validation_batches(val_pieces, encoder_config, config) if dist.is_main else []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        history = History.from_dict(state["history"])
        step, total_steps = state["step"], state["total_steps"]
        tokens_seen, train_seconds = state["tokens_seen"], state["train_seconds"]
        if dist.is_main:  # the saved generator states are rank 0's; other ranks keep seed + rank
            restore_rng(state["rng"], device)
    batches = _training_batches(train_pieces, encoder_config, config, stream_seed, step, device)
    raw_model = model
    if dist.active:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    mixed = autocast(device, precision)
    if dist.is_main:
        log.info(
            "%s %s at step %d: %.2fM parameters on %s (%s, %d thread(s), world size %d); "
            "%d train / %d validation pieces",
            "resuming" if state else "training", out_dir, step, raw_model.num_parameters() / 1e6,
            device, precision, torch.get_num_threads(), dist.world_size, len(train_pieces),
            len(val_pieces),
        )  # fmt: skip

    def save_state() -> Path:
        return save_train_state(
            out_dir / CHECKPOINT_NAME,
            train_config=config.to_dict(), model_config=model_config.to_dict(),
            model=raw_model.state_dict(), optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict(), step=step, total_steps=total_steps,
            stream_seed=stream_seed, tokens_seen=tokens_seen, train_seconds=train_seconds,
            rng=rng_state(device), history=history.to_dict(), world_size=dist.world_size,
        )  # fmt: skip

    def validate() -> None:
        nonlocal eval_seconds
        started = time.perf_counter()
        history.add_val(step, tokens_seen, _evaluate(raw_model, val_batches, device, mixed))
        eval_seconds += time.perf_counter() - started
        log.info("step %d: val loss %.4f", step, history.last_val_loss)

    bar = _progress_bar(progress and dist.is_main, step, total_steps)
    meter = _Throughput()
    eval_seconds, calibration_start = 0.0, 0.0
    calibration_steps = (step + 1, step + 1 + _CALIBRATION_STEPS)  # this session's steps 2..11
    stopped = "done"
    model.train()
    while total_steps is None or step < total_steps:
        if dist.is_main and step % config.eval_interval == 0 and not history.has_val(step):
            validate()

        started = time.perf_counter()
        lr = lr_at(step, config, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = next(batches)  # (B, T) each
        n_targets = int((targets != IGNORE_INDEX).sum())
        with mixed:
            logits = model(inputs)  # (B, T, V), float32
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=IGNORE_INDEX,
            reduction="sum",
        ) / max(1, n_targets)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = math.nan
        if config.grad_clip:
            grad_norm = float(nn.utils.clip_grad_norm_(raw_model.parameters(), config.grad_clip))
        scaler.step(optimizer)
        scaler.update()
        step += 1

        # one collective per step: the global loss and token count, and whether any rank must stop
        loss_sum, step_tokens, stop_votes = dist.sum(
            [loss.item() * n_targets, n_targets, float(stop.is_set)], device
        )
        seconds = time.perf_counter() - started
        train_seconds += seconds
        tokens_seen += int(step_tokens)
        meter.add(int(step_tokens), seconds)
        history.add_train(step, tokens_seen, loss_sum / max(1.0, step_tokens), lr, grad_norm)

        if total_steps is None:  # --minutes: fix the run's length once the speed is known
            if step == calibration_steps[0]:  # the first step pays one-off costs; skip it
                calibration_start = train_seconds
            elif step == calibration_steps[1]:
                estimate = _steps_for_budget(
                    config, step, (train_seconds - calibration_start) / _CALIBRATION_STEPS,
                    train_seconds + eval_seconds, eval_seconds / max(1, len(history.val_step)),
                )  # fmt: skip
                total_steps = dist.broadcast_int(estimate, device)
                bar.total = total_steps
                log.info(
                    "--minutes %g: this run takes %d steps (--steps %d repeats it)",
                    config.minutes, total_steps, total_steps,
                )  # fmt: skip
        if dist.is_main:
            bar.set_postfix_str(_postfix(history, lr, meter), refresh=False)
            bar.update(1)
            if on_step is not None:
                on_step(
                    StepReport(step, total_steps or 0, history.last_train_loss, lr, tokens_seen)
                )
            if step % config.checkpoint_interval == 0 and step != total_steps:
                save_state()
        if stop_votes:
            stopped = "interrupted"
            break
    bar.close()

    # the end (or Ctrl-C): final validation, resumable state, bundles, curve and log
    summary = {
        "step": step, "total_steps": total_steps or step, "stopped": stopped, "tokens_seen": tokens_seen,
        "train_seconds": round(train_seconds, 3),
        "tokens_per_second": round(tokens_seen / max(train_seconds, 1e-9), 1),
        "device": str(device), "precision": precision, "threads": torch.get_num_threads(),
        "world_size": dist.world_size, "parameters": raw_model.num_parameters(),
    }  # fmt: skip
    paths = {
        "checkpoint": out_dir / CHECKPOINT_NAME,
        "bundles": (out_dir / "model.safetensors", out_dir / "model.pt"),
        "curve": out_dir / "loss_curve.png",
        "log": out_dir / "train_log.json",
    }
    if dist.is_main:
        if not history.has_val(step):
            validate()
        save_state()
        for path in paths["bundles"]:
            save_bundle(path, raw_model, model_config, encoder_config)
        plot_loss_curve(history, paths["curve"], title=_title(config, precision))
        write_train_log(paths["log"], config.to_dict(), model_config.to_dict(), summary, history)
        log.info(
            "%s at step %d of %d: train loss %.4f, val loss %.4f, %.0f tokens/s; wrote %s",
            stopped, step, summary["total_steps"], history.last_train_loss, history.last_val_loss,
            summary["tokens_per_second"], out_dir,
        )  # fmt: skip
    return TrainResult(
        out_dir, step, summary["total_steps"], stopped, tokens_seen, train_seconds,
        summary["tokens_per_second"], history.last_train_loss, history.last_val_loss,
        paths["bundles"], paths["curve"], paths["log"], paths["checkpoint"], history, dist.rank,
    )  # fmt: skip


# ---- data ----------------------------------------------------------------------------------------


def _load_pieces(
    config: TrainConfig, dist: Distributed, progress: bool
) -> tuple[list[Any], list[Any]]:
    """The corpus split into train and validation pieces; rank 0 fills the cache first."""
    from .corpus import load_corpus, split_pieces

    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    pieces: list[Any] = []
    for turn in (0, 1):  # rank 0 extracts, then the others read its cache
        if (turn == 0) == dist.is_main:
            pieces = load_corpus(
                config.sources, cache_dir, workers=config.workers,
                progress=progress and dist.is_main, limit=config.limit,
            )  # fmt: skip
        dist.barrier()
    train_pieces, val_pieces = split_pieces(
        pieces, val_fraction=config.val_fraction, seed=config.seed
    )
    if not train_pieces or not val_pieces:
        raise RunFileError(
            f"{len(pieces)} piece(s) from {', '.join(config.sources)} leave no "
            f"{'training' if not train_pieces else 'validation'} pieces; use more data"
        )
    return list(train_pieces), list(val_pieces)


def _load_initial_weights(model: GPT2, name: str) -> None:
    """Copy the weights of bundle ``name`` (a shipped name or a path) into ``model`` (fine-tuning)."""
    from ..checkpoint import CheckpointError, load_bundle
    from ..inference import EngineError, find_pretrained

    try:
        bundle = load_bundle(find_pretrained(name))
    except (CheckpointError, EngineError) as exc:
        raise TrainConfigError("init_from", str(exc)) from exc
    own, theirs = model.config.to_dict(), bundle.model_config.to_dict()
    differ = [k for k in own if k != "dropout" and own[k] != theirs.get(k)]
    if differ:
        shapes = ", ".join(f"{k} {theirs.get(k)} (this run: {own[k]})" for k in differ)
        raise TrainConfigError("init_from", f"{name} has another shape: {shapes}")
    with torch.no_grad():
        model.load_state_dict(bundle.state_dict, strict=True)


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "sideman" / "corpus"


def _training_batches(
    pieces: Sequence[Any],
    encoder_config: EncoderConfig,
    config: TrainConfig,
    seed: int,
    start_step: int,
    device: torch.device,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless padded batches of similar-length samples, from step ``start_step`` on.

    ``length_pool`` batches' worth of samples are drawn at once, sorted by length, cut into batches
    and served in a seeded random order: on Bach (mean 311 of max 512 tokens) real tokens rise from
    65% to 94% of the padded batch. Pool ``i`` depends only on the stream seed and ``i``, so a resume
    at step ``s`` skips ``s // length_pool`` pools of samples and ``s % length_pool`` batches.
    """
    from .samples import SampleStream

    stream = SampleStream(pieces, encoder_config, config.sample_config(), seed=seed)
    pool_batches, size = config.length_pool, config.batch_size
    pool_index, skip = divmod(start_step, pool_batches)
    for _ in range(pool_index * pool_batches * size):  # ~1,600 samples/s: seconds per 1,000 steps
        next(stream)
    while True:
        pool = sorted((next(stream) for _ in range(pool_batches * size)), key=len)
        order = np.random.default_rng([seed, pool_index]).permutation(pool_batches)
        for k in order[skip:]:
            inputs, targets = _pad_batch(pool[k * size : (k + 1) * size])
            yield inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        pool_index, skip = pool_index + 1, 0


def _validation_batches(
    pieces: Sequence[Any], encoder_config: EncoderConfig, config: TrainConfig
) -> list[tuple[Tensor, Tensor]]:
    """The fixed validation samples, padded into batches once (sorted by length: less padding)."""
    from .samples import validation_set

    samples = validation_set(
        pieces, encoder_config, config.eval_samples, seed=config.seed,
        config=config.sample_config(),
    )  # fmt: skip
    samples = sorted(samples, key=len)
    return [
        _pad_batch(samples[i : i + config.batch_size])
        for i in range(0, len(samples), config.batch_size)
    ]


def _pad_batch(samples: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """(inputs, targets), each (B, T): next-token pairs, right-padded; padded targets are ignored.

    Right padding never reaches a real position through causal attention, so no mask is needed.
    """
    width = max(1, max(len(s) for s in samples) - 1)
    inputs = torch.zeros(len(samples), width, dtype=torch.long)
    targets = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    for row, sample in enumerate(samples):
        ids = torch.from_numpy(np.asarray(sample, dtype=np.int64))
        n = len(ids) - 1
        if n > 0:
            inputs[row, :n] = ids[:-1]
            targets[row, :n] = ids[1:]
    return inputs, targets


# ---- model, optimiser, evaluation --------------------------------------------------------------


def _adamw(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings (>= 2-D) only, not biases or LayerNorms."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=device.type == "cuda"
    )


@torch.no_grad()
def _evaluate(
    model: GPT2, batches: Sequence[tuple[Tensor, Tensor]], device: torch.device, mixed: Any
) -> float:
    """Mean next-token loss over the validation batches (per token, padding excluded)."""
    loss, _ = _loss_and_tokens(model, batches, device, mixed)
    model.train()
    return loss


def _loss_and_tokens(
    model: GPT2, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device, mixed: Any
) -> tuple[float, int]:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, targets in batches:
            inputs, targets = inputs.to(device), targets.to(device)
            with mixed:
                logits = model(inputs)
            total += float(
                F.cross_entropy(
                    logits.view(-1, logits.size(-1)).float(), targets.view(-1),
                    ignore_index=IGNORE_INDEX, reduction="sum",
                )
            )  # fmt: skip
            count += int((targets != IGNORE_INDEX).sum())
    return total / max(1, count), count


def sequence_loss(
    model: GPT2, samples: Sequence[np.ndarray], *, batch_size: int = 16, device: str = "cpu"
) -> tuple[float, int]:
    """(mean next-token cross-entropy in nats, tokens scored) of ``model`` over ``samples`` in
    fp32; the model is left in eval mode."""
    ordered = sorted(samples, key=len)
    batches = (
        _pad_batch(ordered[i : i + batch_size]) for i in range(0, len(ordered), batch_size)
    )
    return _loss_and_tokens(model, batches, torch.device(device), contextlib.nullcontext())


def _steps_for_budget(
    config: TrainConfig, step: int, step_seconds: float, spent_seconds: float, eval_seconds: float
) -> int:
    """Total steps that fit ``minutes``: the time left at the measured cost of a step plus its share
    of validation passes (checkpoint writes are not counted: small next to them)."""
    per_step = step_seconds + eval_seconds / config.eval_interval
    remaining = (config.minutes or 0.0) * 60.0 - spent_seconds
    return step + max(1, int(remaining / max(per_step, 1e-9)))


# ---- progress ------------------------------------------------------------------------------------


class _Throughput:
    """Tokens per second over the last few seconds of training steps."""

    def __init__(self, window_seconds: float = 5.0) -> None:
        self.window_seconds = window_seconds
        self.tokens, self.seconds = 0, 0.0
        self.rate = 0.0

    def add(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        self.seconds += seconds
        self.rate = self.tokens / max(self.seconds, 1e-9)
        if self.seconds > self.window_seconds:
            self.tokens, self.seconds = 0, 0.0


def _progress_bar(enabled: bool, step: int, total_steps: int | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total_steps, initial=step, disable=not enabled, unit="step", dynamic_ncols=True,
        desc="train",
    )  # fmt: skip


def _postfix(history: History, lr: float, meter: _Throughput) -> str:
    return (
        f"loss={history.last_train_loss:.3f} val={history.last_val_loss:.3f} "
        f"lr={lr:.2e} tok/s={meter.rate:,.0f}"
    )


def _title(config: TrainConfig, precision: str) -> str:
    return (
        f"{'+'.join(config.sources)}: ({config.n_layer}, {config.n_embd}, {config.n_head}), "
        f"batch {config.batch_size} x {config.max_len}, {precision}"
    )
