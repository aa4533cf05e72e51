"""``TrainConfig``, the settings of a training run, ``lr_at``, its learning-rate schedule, and
``EvalConfig``, the settings of ``sideman eval``.

Imports neither torch nor the engine at module level, so the command line can read the defaults
while it parses arguments.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..model import ModelConfig
    from .samples import SampleConfig

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cpu", "cuda", "mps")
# Augmentation defaults (samples.py's module docstring), shared by SampleConfig and TrainConfig.
MERGE_PROBABILITY = 0.4
DOUBLE_PROBABILITY = 0.6
RESCALE_PROBABILITY = 0.3
REARTICULATE_PROBABILITY = 0.3
TEXTURE_PROBABILITY = 0.5
VOICING_PROBABILITY = 0.8
HOLD_PROBABILITY = 0.25
# Settings of a saved run that a resume may change: where and how fast it runs, not what it learns.
RUNTIME_FIELDS = ("device", "threads", "workers", "cache_dir", "checkpoint_interval")


class TrainConfigError(ValueError):
    """A training setting out of range; ``field`` names the TrainConfig field (the CLI's flag)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.reason = message

    def flag_message(self) -> str:
        """The message in the command line's terms: ``--field-name: reason``."""
        return f"--{self.field.replace('_', '-')}: {self.reason}"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved in its checkpoint and ``train_log.json``.

    Defaults suit the 2-core dev CPU: the (4, 256, 4) shape with bf16 autocast trained Bach there at
    9.5k real (non-padding) tokens/s, val loss 1.35 after one minute (fp32: 4.9k tokens/s; without
    length grouping: 5.4k). Give ``steps`` or ``minutes``: with ``minutes`` the step count is
    estimated once from the first steps' speed and logged, so ``steps`` reproduces the run. A
    warm-up longer than the run never reaches the peak ``lr``.
    """

    sources: tuple[str, ...] = ("bach",)
    out_dir: str = "runs/bach-4x256"
    cache_dir: str | None = None  # corpus cache; None: $XDG_CACHE_HOME/sideman/corpus
    limit: int | None = None  # load at most this many pieces (smoke runs)
    workers: int = 2  # corpus extraction processes
    val_fraction: float = 0.1
    # model
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 1024
    dropout: float = 0.0
    init_from: str | None = None  # start from this bundle's weights ("default" or a path); same shape
    # data and optimisation
    batch_size: int = 16
    max_len: int = 512
    length_pool: int = 8  # batches drawn at once and grouped by length (1: no grouping)
    merge_probability: float = MERGE_PROBABILITY  # keyboard reductions of 2..all voices
    double_probability: float = DOUBLE_PROBABILITY  # of reductions: octave doublings
    rescale_probability: float = RESCALE_PROBABILITY  # windows written 4x/2x faster or slower
    rearticulate_probability: float = REARTICULATE_PROBABILITY  # one part in notes of one length
    texture_probability: float = TEXTURE_PROBABILITY  # of reductions: thinner or thicker beats
    voicing_probability: float = VOICING_PROBABILITY  # of undoubled reductions: voices dropped or added
    hold_probability: float = HOLD_PROBABILITY  # one part held in long notes over some stretches
    steps: int | None = None
    minutes: float | None = 20.0
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0: off
    # evaluation, checkpoints, run time
    eval_interval: int = 100
    eval_samples: int = 64
    checkpoint_interval: int = 250
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    threads: int = 0  # torch threads; 0: this machine's cores (shared among local ranks)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        positive = ("n_layer", "n_embd", "n_head", "n_positions", "batch_size", "max_len")
        positive += (
            "eval_interval",
            "eval_samples",
            "checkpoint_interval",
            "workers",
            "length_pool",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise TrainConfigError(name, f"must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "threads", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TrainConfigError(name, f"must be an integer >= 0, got {value!r}")
        if not self.sources:
            raise TrainConfigError("sources", "name at least one corpus or MIDI folder")
        if self.n_embd % self.n_head:
            raise TrainConfigError(
                "n_embd", f"{self.n_embd} is not divisible by n_head ({self.n_head})"
            )
        if self.max_len > self.n_positions:
            raise TrainConfigError(
                "max_len", f"{self.max_len} exceeds n_positions ({self.n_positions})"
            )
        if self.steps is not None and self.minutes is not None:
            raise TrainConfigError("steps", "give steps or minutes, not both")
        if self.steps is None and self.minutes is None:
            raise TrainConfigError("steps", "give steps or minutes")
        if self.steps is not None and (isinstance(self.steps, bool) or self.steps <= 0):
            raise TrainConfigError("steps", f"must be a positive integer, got {self.steps!r}")
        if self.minutes is not None and not self.minutes > 0:
            raise TrainConfigError("minutes", f"must be > 0, got {self.minutes!r}")
        if self.limit is not None and self.limit <= 0:
            raise TrainConfigError("limit", f"must be a positive integer, got {self.limit!r}")
        if not self.lr > 0:
            raise TrainConfigError("lr", f"must be > 0, got {self.lr!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise TrainConfigError("min_lr", f"must lie in [0, lr={self.lr}], got {self.min_lr!r}")
        for name in ("weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise TrainConfigError(name, f"must be >= 0, got {getattr(self, name)!r}")
        shares = ("merge", "double", "rescale", "rearticulate", "texture", "voicing", "hold")
        for name in (f"{share}_probability" for share in shares):
            if not 0 <= getattr(self, name) <= 1:
                raise TrainConfigError(name, f"must lie in [0, 1], got {getattr(self, name)!r}")
        for name in ("beta1", "beta2", "dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise TrainConfigError(name, f"must lie in [0, 1), got {getattr(self, name)!r}")
        if not 0 < self.val_fraction < 1:
            raise TrainConfigError("val_fraction", f"must lie in (0, 1), got {self.val_fraction!r}")
        if self.precision not in PRECISIONS:
            raise TrainConfigError("precision", f"{self.precision!r} is not one of {PRECISIONS}")
        if self.device not in DEVICES:
            raise TrainConfigError("device", f"{self.device!r} is not one of {DEVICES}")

    def model_config(self) -> ModelConfig:
        from ..model import ModelConfig
        from ..vocab import EncoderConfig

        return ModelConfig(
            vocab_size=len(EncoderConfig.yellow().vocabulary), n_positions=self.n_positions,
            n_embd=self.n_embd, n_layer=self.n_layer, n_head=self.n_head, dropout=self.dropout,
        )  # fmt: skip

    def sample_config(self) -> SampleConfig:
        """The ``SampleConfig`` of this run's training and validation sequences."""
        from .samples import SampleConfig

        return SampleConfig(
            max_len=self.max_len, merge_probability=self.merge_probability,
            double_probability=self.double_probability,
            rescale_probability=self.rescale_probability,
            rearticulate_probability=self.rearticulate_probability,
            texture_probability=self.texture_probability,
            voicing_probability=self.voicing_probability,
            hold_probability=self.hold_probability,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sources"] = list(self.sources)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def lr_at(step: int, config: TrainConfig, total_steps: int | None) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine down to ``min_lr`` at the end.

    ``total_steps`` None (a --minutes run not yet calibrated) holds the peak after warm-up.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if total_steps is None:
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


# ---- sideman eval ----------------------------------------------------------------------------
EVAL_SECTIONS = ("validation", "adherence", "infill", "realtime")


class EvalConfigError(TrainConfigError):
    """An evaluation setting out of range; ``field`` names the EvalConfig field (the CLI's flag)."""


@dataclass(frozen=True)
class EvalConfig:
    """What ``sideman eval`` measures on and how much (``evaluate``'s module docstring).

    The split options must match the training run's (``sideman train``'s defaults: bach,
    val_fraction 0.1, seed 0) for the held-out pieces to be unseen.
    """

    sources: tuple[str, ...] = ("bach",)
    val_fraction: float = 0.1
    split_seed: int = 0
    limit: int | None = None
    cache_dir: str | None = None
    workers: int = 2
    sections: tuple[str, ...] = EVAL_SECTIONS
    validation_samples: int = 256
    max_len: int = 512
    adherence_samples: int = 6  # per attribute level
    infill_samples: int = 100
    window_bars: int = 4
    temperature: float = 1.0
    num_candidates: int = 3  # the daemon's default (serve's num_candidates parameter)
    seed: int = 0
    baseline_seed: int = 0
    threads: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [s for s in self.sections if s not in EVAL_SECTIONS]
        if unknown or not self.sections:
            raise EvalConfigError(
                "sections",
                f"must be some of {', '.join(EVAL_SECTIONS)}; got {', '.join(self.sections) or 'none'}",
            )
        if not self.sources:
            raise EvalConfigError("sources", "name at least one source")
        if not 0 < self.val_fraction < 1:
            raise EvalConfigError("val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        for name in (
            "validation_samples", "adherence_samples", "infill_samples", "threads", "workers",
            "num_candidates",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise EvalConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.max_len < 2:
            raise EvalConfigError("max_len", f"must be >= 2, got {self.max_len}")
        if self.window_bars < 2:
            raise EvalConfigError("window_bars", f"must be >= 2 (a bar and the one before it), got {self.window_bars}")
        if not self.temperature > 0:
            raise EvalConfigError("temperature", f"must be > 0, got {self.temperature}")
        if self.limit is not None and self.limit < 2:
            raise EvalConfigError("limit", f"must be >= 2 (a training and a held-out piece), got {self.limit}")
