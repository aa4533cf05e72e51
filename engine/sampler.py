"""Grammar-constrained token sampling (tokens.md §10, §11).

``Grammar`` wraps the numba state machine of ``sideman.dsp.grammar``: one int32 state row per
sequence, advanced token by token, giving the legal next tokens. ``TokenSampler`` does the whole
per-token step outside the model (mask, temperature, float32 softmax, top_k → top_p → mask_k →
mask_p, the draw, the state update) in one numba call, with uniforms drawn in blocks from the
request's own ``torch.Generator``, never from a global random state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from sideman.dsp import grammar as kernels
from sideman.engine.vocab import N_TOKEN_TYPES, EncoderConfig, TokenType

UNIFORM_BLOCK = 2048  # uniforms drawn per torch.rand call; one is consumed per row per token


class SamplingParamsError(ValueError):
    """A sampling parameter outside its valid range; the message names the field."""


class GrammarError(ValueError):
    """A token that the grammar does not allow where it appears."""


@dataclass(frozen=True)
class Constraints:
    """What the grammar enforces beyond the token table (tokens.md §10 item 3, §11.1, §11.2).

    0 disables a numeric limit. ``fill_block_is_drum`` and ``fill_block_bar_ticks`` describe fill
    block k (the k-th FillInStart); a block without an entry allows both drum and melodic successors
    and any position. ``type_pins`` forces the value of a token type wherever it is legal;
    ``bar_time_signature_pins[i]`` forces the TimeSig of bar i of every track (-1 = free).
    ``require_notes`` makes every bar hold a note: no BarEnd right after TimeSig, and no MaskBar
    (a masked bar has no notes), so a sampled bar is never masked; MaskBar bars in a prompt (mask
    mode "token") are still followed by the default, non-strict ``Grammar.advance``.
    """

    exact_bars: int = 0
    max_tracks: int = 0
    require_notes: bool = True
    autoregressive: bool = False
    polyphony_limit: int = 0
    density_limit: int = 0
    n_fill_targets: int = 0
    fill_block_is_drum: tuple[bool, ...] = ()
    fill_block_bar_ticks: tuple[int, ...] = ()
    type_pins: Mapping[TokenType, int] = field(default_factory=dict)
    bar_time_signature_pins: tuple[int, ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    """Temperature and the four filters, applied in the order top_k → top_p → mask_k → mask_p."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    mask_k: int = 0
    mask_p: float = 0.0

    def validate(self) -> None:
        """Raise ``SamplingParamsError`` naming the first bad field (tokens.md §10 item 9)."""
        if not self.temperature > 0:
            raise SamplingParamsError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise SamplingParamsError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise SamplingParamsError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.mask_k < 0:
            raise SamplingParamsError(f"mask_k must be >= 0 (0 = off), got {self.mask_k}")
        if not 0 <= self.mask_p < 1:
            raise SamplingParamsError(f"mask_p must be in [0, 1), got {self.mask_p}")
        if self.top_p < 1 and not self.mask_p < self.top_p:
            raise SamplingParamsError(
                f"mask_p must be < top_p when top_p < 1, got mask_p={self.mask_p}, top_p={self.top_p}"
            )
        if self.top_k > 0 and self.mask_k > 0 and not self.mask_k < self.top_k:
            raise SamplingParamsError(
                f"mask_k must be < top_k when both are set, got mask_k={self.mask_k}, top_k={self.top_k}"
            )


class Grammar:
    """The legal-next-token state machine for one encoder config and one set of constraints."""

    def __init__(self, config: EncoderConfig, constraints: Constraints):
        vocab = config.vocabulary
        self.vocabulary = vocab
        self.constraints = constraints
        self.vocab_size = len(vocab)
        type_pins = np.full(N_TOKEN_TYPES, -1, dtype=np.int32)
        for token_type, value in constraints.type_pins.items():
            type_pins[int(token_type)] = int(value)
        bar_ticks = config.bar_ticks if len(config.time_signatures) else np.zeros(0, np.int32)
        self.tables = kernels.pack_tables(
            vocab.offsets,
            vocab.sizes,
            vocab.id_type,
            vocab.id_value,
            bar_ticks,
            (
                constraints.exact_bars,
                constraints.max_tracks,
                int(constraints.require_notes),
                int(constraints.autoregressive),
                constraints.polyphony_limit,
                constraints.density_limit,
                constraints.n_fill_targets,
            ),
            np.asarray(constraints.fill_block_is_drum, dtype=np.int32),
            np.asarray(constraints.fill_block_bar_ticks, dtype=np.int32),
            type_pins,
            np.asarray(constraints.bar_time_signature_pins, dtype=np.int32),
        )
        self._ranges = np.zeros(2 * kernels.N_TYPES, dtype=np.int32)  # kernel scratch

    def new_states(self, batch: int) -> np.ndarray:
        """(batch, STATE_SIZE) int32 states before the first token (layout: ``sideman.dsp.grammar``)."""
        return kernels.new_states(batch)

    def advance(self, states: np.ndarray, ids: np.ndarray, strict: bool = False) -> None:
        """Step states in place: 1-D ``ids`` = one prompt for every row; 2-D ``(B, T)`` = row b
        takes ``ids[b]`` (entries < 0 skipped). With ``strict``, raise ``GrammarError`` at the
        first illegal token (rows before it, and that row up to it, stay advanced).

        ``strict`` is off by default: like the reference, a prompt is followed, not judged (an empty
        context bar is legal input even under ``require_notes``).
        """
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 and ids.ndim == 1 or ids.max() >= self.vocab_size):
            raise GrammarError(
                f"token ids must lie in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}"
            )
        if ids.ndim == 1:
            position, row = kernels.advance_prompt(
                states, self.tables, self._ranges, ids.astype(np.int32), strict
            )
        elif ids.ndim == 2 and ids.shape[0] == states.shape[0]:
            position, row = kernels.advance_rows(
                states, self.tables, self._ranges, ids.astype(np.int32), strict
            )
        else:
            raise GrammarError(
                f"ids must be 1-D (one prompt) or (B, T) with B = {states.shape[0]}, got {ids.shape}"
            )
        if position >= 0:
            token = int(ids[position] if ids.ndim == 1 else ids[row, position])
            prev = int(states[row, kernels.S_PREV_TYPE])
            where = "at the start" if prev < 0 else f"after a {TokenType(prev).name} token"
            raise GrammarError(
                f"token {token} ({self.vocabulary.describe(token)}) at position {position} (row {row}) "
                f"is not legal {where}"
            )

    def legal_mask(self, states: np.ndarray) -> np.ndarray:
        """(B, V) bool: which tokens may come next in each row."""
        mask = np.empty((states.shape[0], self.vocab_size), dtype=bool)
        kernels.legal_mask(states, self.tables, self._ranges, mask)
        return mask

    def finished(self, states: np.ndarray) -> np.ndarray:
        """(B,) bool from the state flags alone: complete, or found without a legal token at a draw.

        The per-token check of the decode loop; cheaper than ``complete``, which also looks ahead.
        """
        return (states[:, kernels.S_COMPLETE] != 0) | (states[:, kernels.S_DEAD] != 0)

    def complete(self, states: np.ndarray) -> np.ndarray:
        """(B,) bool: the row is complete, or nothing can legally follow (the caller stops)."""
        out = np.empty(states.shape[0], dtype=np.bool_)
        kernels.complete(states, self.tables, self._ranges, out)
        return out


class TokenSampler:
    """Draws one legal token per row from (B, V) logits and advances the grammar states."""

    def __init__(self, grammar: Grammar, params: SamplingParams, generator: torch.Generator):
        params.validate()
        if generator.device.type != "cpu":
            raise ValueError(
                f"generator must be a CPU torch.Generator, got device {generator.device}"
            )
        self.grammar = grammar
        self.params = params
        self.generator = generator
        vocab_size = grammar.vocab_size
        self._uniforms_tensor = torch.empty(UNIFORM_BLOCK, dtype=torch.float64)
        self._uniforms = self._uniforms_tensor.numpy()  # shares memory: refilled in place
        self._next_uniform = UNIFORM_BLOCK
        self._cand_ids = np.empty(vocab_size, dtype=np.int32)
        self._probs = np.empty(vocab_size, dtype=np.float32)
        self._heap = np.empty(vocab_size, dtype=np.int32)
        self._order = np.empty(vocab_size, dtype=np.int32)
        self._ranges = np.zeros(2 * kernels.N_TYPES, dtype=np.int32)

    def sample(self, logits: torch.Tensor, states: np.ndarray) -> np.ndarray:
        """(B,) int32 drawn ids; -1 for rows that are complete or have no legal token.

        ``logits`` is (B, V') float32 with V' >= V (extra columns, e.g. padding, are never legal);
        a contiguous CPU float32 tensor is read without a copy.
        """
        if logits.requires_grad:
            logits = logits.detach()
        if (
            logits.dtype != torch.float32
            or logits.device.type != "cpu"
            or not logits.is_contiguous()
        ):
            logits = logits.to(device="cpu", dtype=torch.float32).contiguous()
        scores = logits.numpy()  # (B, V')
        batch = scores.shape[0]
        if (
            scores.ndim != 2
            or scores.shape[1] < self.grammar.vocab_size
            or states.shape[0] != batch
        ):
            raise ValueError(
                f"logits must be (B, >= {self.grammar.vocab_size}) with B = {states.shape[0]}, got {tuple(scores.shape)}"
            )
        if self._next_uniform + batch > UNIFORM_BLOCK:
            self._refill(batch)
        out = np.empty(batch, dtype=np.int32)
        params = self.params
        kernels.sample_step(
            scores,
            states,
            self.grammar.tables,
            self._ranges,
            params.temperature,
            params.top_k,
            params.top_p,
            params.mask_k,
            params.mask_p,
            self._uniforms,
            self._next_uniform,
            out,
            self._cand_ids,
            self._probs,
            self._heap,
            self._order,
        )
        self._next_uniform += batch
        return out

    def _refill(self, batch: int) -> None:
        if batch > len(self._uniforms):
            self._uniforms_tensor = torch.empty(batch, dtype=torch.float64)
            self._uniforms = self._uniforms_tensor.numpy()
        torch.rand(
            len(self._uniforms),
            generator=self.generator,
            dtype=torch.float64,
            out=self._uniforms_tensor,
        )
        self._next_uniform = 0
