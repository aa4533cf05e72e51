"""The files a training run writes into its ``out_dir``, and the loss history they carry.

- ``checkpoint.pt``: the resumable state, one ``torch.save`` dict readable with
  ``torch.load(weights_only=True)`` (plain containers, numbers, strings and tensors only):
  ``kind`` ("sideman-train-state"), ``version`` (1), ``train_config`` (TrainConfig as a dict),
  ``model_config`` (the bundle's ``config``), ``model`` (GPT2 state dict, fp32, HF names),
  ``optimizer`` (AdamW state dict), ``scaler`` (GradScaler state), ``step`` (optimizer steps done),
  ``total_steps`` (the schedule's length; fixed after calibration for --minutes runs),
  ``stream_seed`` (rank 0's sample-stream seed; rank r uses seed + 7919 r; the stream position
  follows from ``step``, see ``loop._training_batches``), ``tokens_seen``, ``train_seconds``, ``rng`` (Python, NumPy, torch and CUDA generator
  states of rank 0), ``history`` (``History.to_dict()``), ``world_size``. Written atomically, every
  ``checkpoint_interval`` steps and at the end or on Ctrl-C.
- ``model.safetensors`` (format 2) and ``model.pt`` (format 1): the final bundle (tokens.md §13).
- ``train_log.json``: config, model config, a summary and the full history.
- ``loss_curve.png``: train and validation loss against tokens seen.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import _write_atomically

CHECKPOINT_NAME = "checkpoint.pt"
STATE_KIND = "sideman-train-state"
STATE_VERSION = 1


class RunFileError(ValueError):
    """A run folder or checkpoint that cannot be used as asked (missing, foreign, or in the way)."""


@dataclass
class History:
    """Per-step train loss and per-evaluation validation loss, with tokens seen at each."""

    train_step: list[int] = field(default_factory=list)
    train_tokens: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_tokens: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)

    def add_train(self, step: int, tokens: int, loss: float, lr: float, grad_norm: float) -> None:
        self.train_step.append(step)
        self.train_tokens.append(tokens)
        self.train_loss.append(loss)
        self.lr.append(lr)
        self.grad_norm.append(grad_norm)

    def add_val(self, step: int, tokens: int, loss: float) -> None:
        self.val_step.append(step)
        self.val_tokens.append(tokens)
        self.val_loss.append(loss)

    def has_val(self, step: int) -> bool:
        return bool(self.val_step) and self.val_step[-1] == step

    @property
    def last_train_loss(self) -> float:
        return self.train_loss[-1] if self.train_loss else math.nan

    @property
    def last_val_loss(self) -> float:
        return self.val_loss[-1] if self.val_loss else math.nan

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {name: list(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls(**{name: list(data.get(name, [])) for name in cls.__dataclass_fields__})


# ---- resumable state -------------------------------------------------------------------------------


def save_train_state(path: Path, **state: Any) -> Path:
    payload = {"kind": STATE_KIND, "version": STATE_VERSION, **state}
    _write_atomically(path, lambda tmp: torch.save(payload, tmp))
    return path


def load_train_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunFileError(f"no training checkpoint at {path} to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types on damaged or foreign files
        raise RunFileError(f"{path}: not a readable training checkpoint: {exc}") from exc
    if not isinstance(state, dict) or state.get("kind") != STATE_KIND:
        raise RunFileError(f"{path}: not a sideman training checkpoint")
    if state.get("version") != STATE_VERSION:
        raise RunFileError(
            f"{path}: training checkpoint version {state.get('version')!r}; this sideman reads "
            f"version {STATE_VERSION}"
        )
    return state


# ---- log and loss curve ----------------------------------------------------------------------------


def write_train_log(
    path: Path,
    train_config: dict[str, Any],
    model_config: dict[str, Any],
    summary: dict[str, Any],
    history: History,
) -> Path:
    document = {
        "train_config": train_config,
        "model_config": model_config,
        "summary": summary,
        "history": _finite(history.to_dict()),
    }
    text = json.dumps(document, indent=1)
    _write_atomically(path, lambda tmp: tmp.write_text(text + "\n"))
    return path


def _finite(history: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """JSON has no NaN: a missing grad norm (clipping off) is written as null."""
    return {
        name: [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]
        for name, values in history.items()
    }


def plot_loss_curve(history: History, path: Path, title: str = "") -> Path:
    """Train (raw and smoothed) and validation loss against tokens seen, as a PNG (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if history.train_loss:
        axes.plot(history.train_tokens, history.train_loss, color="tab:blue", alpha=0.25, lw=0.8)
        axes.plot(
            history.train_tokens, _smoothed(history.train_loss), color="tab:blue", label="train"
        )
    if history.val_loss:
        axes.plot(
            history.val_tokens, history.val_loss, "o-", color="tab:orange", label="validation"
        )
    axes.set_xlabel("tokens seen")
    axes.set_ylabel("loss (nats/token)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _write_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path


def _smoothed(values: list[float]) -> list[float]:
    """Exponential moving average over ~2% of the run, bias-corrected (no pull towards 0 at first)."""
    span = max(1.0, len(values) / 50)
    weight = 1 - 2 / (span + 1)
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i) if weight else value)
    return out
