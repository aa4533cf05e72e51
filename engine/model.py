"""GPT-2 over the yellow vocabulary, with a preallocated KV cache (tokens.md §11.4, §12, §14 item 4).

Read top to bottom in the order data flows:

- ``ModelConfig``: the five architecture fields of a bundle's ``config`` (plus a training ``dropout``).
- ``KVCache``: K and V buffers of shape (n_layer, batch, n_head, max_len, head_dim), allocated once and
  written in place by position; ``length`` slots are filled, all batch rows in lockstep.
- ``_forward``: the whole network as one function over a ``_Weights`` bundle of plain tensors. Both
  the trainable ``GPT2`` module and the frozen ``InferenceGPT2`` run exactly this code, so there is
  one implementation of the math.
- ``GPT2``: ``nn.Module`` whose parameters carry Hugging Face's names and layouts (Conv1D weights
  stored (in, out) and applied as ``x @ W + b``; a separate, untied ``lm_head``).
- ``InferenceGPT2``: ``GPT2.for_inference(dtype)`` copies the weights once into the layout that
  batch-1 decoding on CPU likes best ((out, in) contiguous for ``F.linear``), optionally in
  bfloat16, and runs under ``torch.inference_mode()``. The state dict stays fp32 HF layout.

Speed notes: eager mode, no ``torch.compile`` (platform-notes §6.5). Decode is bound by weight
traffic (77 MB of fp32 weights per step for yellow_small) and per-op overhead, so the fast path
avoids module calls, per-step allocations and cache growth. Measured on an AVX2-only 2-core dev box
(yellow_small, 585-token prompt): fp32 prefill ~0.23-0.29 s (2 threads) / 0.39-0.42 s (1 thread),
decode ~8-13 ms/step; bf16 decode 5.9-8 ms/step on 2 threads but its prefill is 6x slower there;
int8 (dynamic, fbgemm) prefill 0.16-0.17 s / decode 3.7-6 ms/step on 2 threads. ``InferenceGPT2``
takes a run-time ``precision`` ("fp32" reference, "bf16", "int8", "mixed", "auto").
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-5


class ModelConfigError(ValueError):
    """A model configuration that cannot describe a GPT-2."""


class KVCacheError(ValueError):
    """A cache operation that does not fit the cache (overflow, bad length, bad batch)."""


# ---- configuration --------------------------------------------------------------------------------

_PRESETS: dict[str, dict[str, int]] = {
    "yellow_small": {"n_embd": 512, "n_layer": 6, "n_head": 8},
    "yellow_medium": {"n_embd": 768, "n_layer": 12, "n_head": 12},
    "yellow_large": {"n_embd": 1024, "n_layer": 24, "n_head": 16},
}
_ARCH_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")


@dataclass(frozen=True)
class ModelConfig:
    """GPT-2 shape. ``head_dim = n_embd / n_head`` is derived; ``dropout`` is for training only."""

    vocab_size: int = 647
    n_positions: int = 2048
    n_embd: int = 512
    n_layer: int = 6
    n_head: int = 8
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in _ARCH_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ModelConfigError(
                    f"model config field {name!r} must be a positive int, got {value!r}"
                )
        if self.n_embd % self.n_head:
            raise ModelConfigError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"dropout must be a float in [0, 1), got {self.dropout!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named shape of tokens.md §12: yellow_small, yellow_medium or yellow_large."""
        if name not in _PRESETS:
            raise ModelConfigError(f"unknown model preset {name!r}; known: {', '.join(_PRESETS)}")
        return cls(**{**_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The bundle's ``config`` object (``dropout`` only when non-zero: it is not architecture)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _ARCH_FIELDS}
        if self.dropout:
            data["dropout"] = self.dropout
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a bundle's ``config``; ``max_seq_len`` (reference training configs) is read as
        ``n_positions``. Unknown keys are ignored so foreign configs with extra fields still load."""
        if not isinstance(data, dict):
            raise ModelConfigError(f"model config must be a mapping, got {type(data).__name__}")
        values = dict(data)
        if "n_positions" not in values and "max_seq_len" in values:
            values["n_positions"] = values["max_seq_len"]
        missing = [name for name in _ARCH_FIELDS if name not in values]
        if missing:
            raise ModelConfigError(f"model config is missing field(s): {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# ---- KV cache -----------------------------------------------------------------------------------


class KVCache:
    """Preallocated K/V buffers written in place by position (no ``torch.cat`` growth).

    ``k`` and ``v`` are (n_layer, batch, n_head, max_len, head_dim). ``length`` slots are filled, all
    rows in lockstep; a forward with fewer rows than ``batch`` writes rows [0, B) only, and
    ``expand_batch`` then copies row 0 into the others (prefill once, decode several candidates).
    """

    def __init__(
        self,
        n_layer: int,
        batch: int,
        n_head: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (n_layer, batch, n_head, max_len, head_dim)
        # zeros, not empty: slots are only read after being written, but garbage NaNs would poison
        # 0-weight products if that ever changed.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    def truncate(self, length: int) -> None:
        """Forget slots >= ``length`` (keep an unchanged prompt prefix, re-decode from there)."""
        if not 0 <= length <= self.length:
            raise KVCacheError(f"cannot truncate a cache of length {self.length} to {length}")
        self.length = length

    def reset(self) -> None:
        self.length = 0

    def expand_batch(self, batch: int) -> KVCache:
        """Copy row 0's filled slots into rows 1..batch-1 and return a cache with ``batch`` rows.

        In place (returns ``self``) when the cache already has that many rows; otherwise a new cache
        of exactly ``batch`` rows is allocated.
        """
        if batch < 1:
            raise KVCacheError(f"batch must be >= 1, got {batch}")
        n = self.length
        if batch <= self.batch:
            target = self
        else:
            n_layer, _, n_head, max_len, head_dim = self.k.shape
            target = KVCache(n_layer, batch, n_head, max_len, head_dim, self.dtype, self.k.device)
            target.length = n
            target.k[:, :1, :, :n] = self.k[:, :1, :, :n]
            target.v[:, :1, :, :n] = self.v[:, :1, :, :n]
        if batch > 1:
            target.k[:, 1:batch, :, :n] = target.k[:, :1, :, :n]
            target.v[:, 1:batch, :, :n] = target.v[:, :1, :, :n]
        return target

    def select_row(self, row: int) -> None:
        """Copy row ``row`` into row 0 (keep the chosen candidate, continue with batch 1)."""
        if not 0 <= row < self.batch:
            raise KVCacheError(f"row {row} out of range for a cache of batch {self.batch}")
        if row:
            n = self.length
            self.k[:, 0, :, :n] = self.k[:, row, :, :n]
            self.v[:, 0, :, :n] = self.v[:, row, :, :n]


# ---- the network as one function ------------------------------------------------------------------


class _Layer(NamedTuple):
    """One block's tensors. Linear weights are (out, in) for ``F.linear``: transposed views of the
    Conv1D parameters in ``GPT2``, contiguous copies in ``InferenceGPT2``. In the int8 path a
    linear weight slot holds fbgemm packed params (bias packed inside, the bias slot ``None``)."""

    ln_1_w: Tensor
    ln_1_b: Tensor
    attn_w: Tensor  # (3D, D)
    attn_b: Tensor
    attn_proj_w: Tensor  # (D, D)
    attn_proj_b: Tensor
    ln_2_w: Tensor
    ln_2_b: Tensor
    fc_w: Tensor  # (4D, D)
    fc_b: Tensor
    fc_proj_w: Tensor  # (D, 4D)
    fc_proj_b: Tensor


class _Weights(NamedTuple):
    wte: Tensor  # (V, D)
    wpe: Tensor  # (P, D)
    layers: tuple[_Layer, ...]
    ln_f_w: Tensor
    ln_f_b: Tensor
    lm_head: Tensor  # (V, D)


def _linear(x: Tensor, weight: Any, bias: Tensor | None) -> Tensor:
    """``F.linear`` for a plain weight tensor; int8 dynamic quantisation for packed params."""
    if isinstance(weight, Tensor):
        return F.linear(x, weight, bias)
    # Activations quantised per tensor (all rows of this call share one scale) to 7 bits:
    # reduce_range avoids int16 saturation in fbgemm's AVX2 (non-VNNI) u8*s8 kernels.
    return torch.ops.quantized.linear_dynamic(x, weight, True)


def _attention_mask(
    start: int, T: int, key_mask: Tensor | None, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor | None, bool]:
    """(additive mask over keys [0, start+T), is_causal) for one forward; built once, used by all layers."""
    S = start + T
    if key_mask is None:
        if start == 0 and T > 1:
            return None, True  # plain causal prefill or training
        if T == 1:
            return None, False  # one new query attends to every filled slot
    allowed = torch.ones(T, S, dtype=torch.bool, device=device)
    if T > 1:
        allowed = torch.tril(allowed, diagonal=start)  # query i sees keys <= start + i
    if key_mask is not None:
        if key_mask.dim() == 1:
            key_mask = key_mask.unsqueeze(0)
        if key_mask.shape[-1] < S:
            raise ValueError(f"key_mask covers {key_mask.shape[-1]} keys, the forward needs {S}")
        allowed = allowed & key_mask[:, None, None, :S].to(device=device, dtype=torch.bool)
    else:
        allowed = allowed[None, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return mask.masked_fill_(~allowed, float("-inf")), False


def _forward(
    w: _Weights,
    config: ModelConfig,
    input_ids: Tensor,
    cache: KVCache | None,
    position_ids: Tensor | None,
    key_mask: Tensor | None,
    last_only: bool,
    positions: Tensor,
    dropout: float = 0.0,
) -> Tensor:
    B, T = input_ids.shape
    H, hd, D = config.n_head, config.head_dim, config.n_embd
    start = 0 if cache is None else cache.length
    if cache is not None:
        if start + T > cache.max_len:
            raise KVCacheError(
                f"cache full: {start} filled + {T} new > max_len {cache.max_len}; "
                "truncate it or allocate a longer one"
            )
        if B > cache.batch:
            raise KVCacheError(f"input batch {B} exceeds the cache's {cache.batch} rows")
    if position_ids is None:
        if start + T > config.n_positions:
            raise ValueError(f"positions up to {start + T} exceed n_positions {config.n_positions}")
        pos_emb = F.embedding(positions[start : start + T], w.wpe)  # (T, D)
    else:
        pos_emb = F.embedding(position_ids, w.wpe)  # (B, T, D)
    x = F.embedding(input_ids, w.wte) + pos_emb  # (B, T, D)
    if dropout:
        x = F.dropout(x, dropout)
    mask, is_causal = _attention_mask(start, T, key_mask, x.dtype, x.device)

    for i, layer in enumerate(w.layers):
        h = F.layer_norm(x, (D,), layer.ln_1_w, layer.ln_1_b, LAYER_NORM_EPS)
        qkv = _linear(h, layer.attn_w, layer.attn_b)  # (B, T, 3D)
        q, k, v = qkv.view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)  # each (B, H, T, hd)
        if cache is not None:
            cache.k[i, :B, :, start : start + T] = k
            cache.v[i, :B, :, start : start + T] = v
            k = cache.k[i, :B, :, : start + T]  # (B, H, S, hd)
            v = cache.v[i, :B, :, : start + T]
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal,
            dropout_p=dropout,
            scale=1.0 / math.sqrt(hd),
        )  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)
        y = _linear(y, layer.attn_proj_w, layer.attn_proj_b)
        x = x + (F.dropout(y, dropout) if dropout else y)

        h = F.layer_norm(x, (D,), layer.ln_2_w, layer.ln_2_b, LAYER_NORM_EPS)
        h = F.gelu(_linear(h, layer.fc_w, layer.fc_b), approximate="tanh")  # "gelu_new"
        h = _linear(h, layer.fc_proj_w, layer.fc_proj_b)
        x = x + (F.dropout(h, dropout) if dropout else h)

    if cache is not None:
        cache.length = start + T
    if last_only:
        x = x[:, -1:]
    x = F.layer_norm(x, (D,), w.ln_f_w, w.ln_f_b, LAYER_NORM_EPS)
    return _linear(x, w.lm_head, None).float()  # (B, T, V) or (B, 1, V)


# ---- trainable module with Hugging Face names --------------------------------------------------


class Conv1D(nn.Module):
    """HF's Conv1D: a linear layer whose weight is stored (in, out) and applied as ``x @ W + b``."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.t(), self.bias)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd)
        self.c_proj = Conv1D(config.n_embd, config.n_embd)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = Conv1D(config.n_embd, 4 * config.n_embd)
        self.c_proj = Conv1D(4 * config.n_embd, config.n_embd)


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=LAYER_NORM_EPS)
        self.mlp = MLP(config)


def _default_generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


class GPT2(nn.Module):
    """GPT-2 of tokens.md §12 (pre-LN, gelu_new, untied ``lm_head``), state dict in HF names.

    Random weights come from ``generator`` (default: a private generator seeded 0), never from the
    global torch RNG. ``initialize=False`` leaves parameters uninitialised, for loading weights.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        generator: torch.Generator | None = None,
        initialize: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        D = config.n_embd
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(
                    config.vocab_size, D, _weight=torch.empty(config.vocab_size, D)
                ),
                "wpe": nn.Embedding(
                    config.n_positions, D, _weight=torch.empty(config.n_positions, D)
                ),
                "h": nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                "ln_f": nn.LayerNorm(D, eps=LAYER_NORM_EPS),
            }
        )
        self.lm_head = nn.Linear(D, config.vocab_size, bias=False, device="meta")
        self.lm_head.weight = nn.Parameter(torch.empty(config.vocab_size, D))
        self.register_buffer("_positions", torch.arange(config.n_positions), persistent=False)
        if initialize:
            self.init_weights(generator)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """GPT-2 init: weights ~ N(0, 0.02), biases 0, LayerNorm ones/zeros."""
        generator = generator if generator is not None else _default_generator()
        for module in self.modules():
            if isinstance(module, (Conv1D, nn.Embedding, nn.Linear)):
                module.weight.normal_(0.0, 0.02, generator=generator)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _weights(self) -> _Weights:
        """The parameters as ``_forward`` takes them: (out, in) views, no copies."""
        layers = tuple(
            _Layer(
                block.ln_1.weight,
                block.ln_1.bias,
                block.attn.c_attn.weight.t(),
                block.attn.c_attn.bias,
                block.attn.c_proj.weight.t(),
                block.attn.c_proj.bias,
                block.ln_2.weight,
                block.ln_2.bias,
                block.mlp.c_fc.weight.t(),
                block.mlp.c_fc.bias,
                block.mlp.c_proj.weight.t(),
                block.mlp.c_proj.bias,
            )  # fmt: skip
            for block in self.transformer.h
        )
        t = self.transformer
        return _Weights(
            t.wte.weight, t.wpe.weight, layers, t.ln_f.weight, t.ln_f.bias, self.lm_head.weight
        )

    def new_cache(
        self, batch: int = 1, max_len: int | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        c = self.config
        return KVCache(
            c.n_layer, batch, c.n_head, max_len or c.n_positions, c.head_dim,
            dtype or self.lm_head.weight.dtype, self.lm_head.weight.device,
        )  # fmt: skip

    def forward(
        self,
        input_ids: Tensor,
        cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        key_mask: Tensor | None = None,
        last_only: bool = False,
    ) -> Tensor:
        """Logits (B, T, V), or (B, 1, V) with ``last_only``, as float32.

        - ``input_ids`` (B, T). With ``cache``, the T tokens are written at slots
          [cache.length, cache.length + T) and attend to every earlier slot (causally).
        - ``position_ids`` (B, T): default ``cache.length + arange(T)``; pass them explicitly for
          ``attention_skip`` prompts whose positions have gaps.
        - ``key_mask`` (B, L) or (L,) bool, L >= cache.length + T: False marks keys no query may
          attend (mask mode ``attention``); combined with causality. Every query must keep at least
          one visible key.
        """
        p = self.config.dropout if self.training else 0.0
        return _forward(
            self._weights(), self.config, input_ids, cache, position_ids, key_mask, last_only,
            self._positions, dropout=p,
        )  # fmt: skip

    def for_inference(self, precision: str | torch.dtype = "fp32") -> InferenceGPT2:
        """A frozen, fast copy for generation; ``precision`` as in ``InferenceGPT2`` (a name or a
        float dtype: ``for_inference(torch.bfloat16)`` still works)."""
        return InferenceGPT2(self, precision)


# ---- frozen fast path -----------------------------------------------------------------------------

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "mixed", "auto")
_DTYPE_PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
_PRECISION_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Quantise lm_head too in the int8 path: it is 1.3 MB of the 77 MB per step for yellow_small, so
# the gain is small, and it is the layer whose error reaches the logits unfiltered. Kept fp32.
_INT8_LM_HEAD = False


class InferenceGPT2:
    """Frozen copy of a ``GPT2`` laid out for fast CPU generation; same ``forward`` signature.

    ``precision`` (a name, or a torch dtype for the float ones):

    - ``"fp32"``: the exact reference path (default). Weights are copied once to contiguous
      (out, in) tensors, ``F.linear``'s native layout (on the AVX2 dev box as fast as ``addmm`` over
      HF's (in, out) layout for fp32 decode, much faster for bf16, and batch rows stay bit-identical).
    - ``"bf16"`` / ``"fp16"``: weights, activations and cache in that dtype. bf16 halves weight
      traffic, but its prefill is ~6x slower on CPUs without native bf16 (``bf16_is_native``).
    - ``"int8"``: the four linear layers of every block use int8 weights (symmetric, per output
      channel) with activations quantised dynamically per call (fbgemm ``linear_dynamic``);
      embeddings, LayerNorms, attention, ``lm_head`` and the KV cache stay fp32. Logits differ from
      fp32 by quantisation noise (see tests). Activation scales are per call, so rows of one batch
      share a scale: identical rows stay bit-identical, different rows are not bit-independent.
    - ``"mixed"``: fp32 weights for multi-token calls (prefill), int8 for single-token steps.
    - ``"auto"``: ``choose_precision()`` for this CPU, resolved once; ``self.precision`` tells which.

    The cache dtype is ``self.dtype`` (float32 except for bf16/fp16); logits come back as float32.
    No module calls per step.
    """

    def __init__(self, model: GPT2, precision: str | torch.dtype = "fp32") -> None:
        w = model._weights()
        if precision == "auto" and w.wte.device.type != "cpu":
            precision = "fp32"  # the measured choice is for CPUs; int8 runs on CPU only
        self.precision = resolve_precision(precision)
        self.config = model.config
        self.dtype = _PRECISION_DTYPE.get(self.precision, torch.float32)
        self._positions = torch.arange(self.config.n_positions, device=w.wte.device)
        self._decode_weights: _Weights | None = None
        if self.precision in ("int8", "mixed"):
            if w.wte.device.type != "cpu":
                raise ValueError(
                    f"precision {self.precision!r} runs on CPU only, not {w.wte.device}"
                )
            if not int8_is_available():
                raise ValueError(
                    f"precision {self.precision!r} needs torch's quantized linear_dynamic/linear_prepack "
                    f"ops, which this torch build (engine {torch.backends.quantized.engine!r}) lacks; "
                    "use 'fp32' or 'auto'"
                )
            quantised = _int8_weights(w)
            if self.precision == "int8":
                self.weights = quantised
                return
            self._decode_weights = quantised
        self.weights = _copy_weights(w, self.dtype)

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        c = self.config
        return KVCache(
            c.n_layer, batch, c.n_head, max_len or c.n_positions, c.head_dim, self.dtype,
            self.weights.wte.device,
        )  # fmt: skip

    @torch.inference_mode()
    def forward(
        self,
        input_ids: Tensor,
        cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        key_mask: Tensor | None = None,
        last_only: bool = False,
    ) -> Tensor:
        """As ``GPT2.forward``, under ``torch.inference_mode()``."""
        weights = self.weights
        if self._decode_weights is not None and input_ids.shape[1] == 1:
            weights = self._decode_weights
        return _forward(
            weights, self.config, input_ids, cache, position_ids, key_mask, last_only,
            self._positions,
        )  # fmt: skip

    __call__ = forward


def _copy_weights(w: _Weights, dtype: torch.dtype) -> _Weights:
    def prep(t: Tensor) -> Tensor:
        return t.detach().to(dtype, copy=True).contiguous()

    return _Weights(
        prep(w.wte), prep(w.wpe), tuple(_Layer(*(prep(t) for t in layer)) for layer in w.layers),
        prep(w.ln_f_w), prep(w.ln_f_b), prep(w.lm_head),
    )  # fmt: skip


def _pack_int8(weight: Tensor, bias: Tensor | None) -> Any:
    """fbgemm packed params for an (out, in) weight: int8, symmetric, one scale per output row."""
    w = weight.detach().float().contiguous()
    scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    zero_point = torch.zeros(w.shape[0], dtype=torch.long)
    b = None if bias is None else bias.detach().float().contiguous()
    with warnings.catch_warnings():
        # torch 2.13 warns that quantized-tensor *creation* is deprecated (pytorch issue 184982);
        # the qint8 tensor is only the input format of linear_prepack and is dropped right after.
        warnings.simplefilter("ignore", UserWarning)
        q = torch.quantize_per_channel(w, scale, zero_point, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, b)


def _int8_weights(w: _Weights) -> _Weights:
    def prep(t: Tensor) -> Tensor:
        return t.detach().float().contiguous()

    def block(layer: _Layer) -> _Layer:
        return _Layer(
            prep(layer.ln_1_w), prep(layer.ln_1_b),
            _pack_int8(layer.attn_w, layer.attn_b), None,
            _pack_int8(layer.attn_proj_w, layer.attn_proj_b), None,
            prep(layer.ln_2_w), prep(layer.ln_2_b),
            _pack_int8(layer.fc_w, layer.fc_b), None,
            _pack_int8(layer.fc_proj_w, layer.fc_proj_b), None,
        )  # fmt: skip

    layers = tuple(block(layer) for layer in w.layers)
    head = _pack_int8(w.lm_head, None) if _INT8_LM_HEAD else prep(w.lm_head)
    return _Weights(prep(w.wte), prep(w.wpe), layers, prep(w.ln_f_w), prep(w.ln_f_b), head)


@functools.cache
def int8_is_available() -> bool:
    """Whether torch's dynamic int8 linear ops work in this build (fbgemm on x86)."""
    try:
        packed = _pack_int8(torch.ones(2, 4), torch.zeros(2))
        out = torch.ops.quantized.linear_dynamic(torch.ones(1, 4), packed, True)
    except (AttributeError, NotImplementedError, RuntimeError):
        return False
    return out.shape == (1, 2)


def bf16_is_native() -> bool:
    """Whether this CPU has native bf16 dot products (the only case where bf16 inference pays)."""
    try:
        features = torch._C._cpu._get_cpu_capability()  # private; absent in some torch releases
    except AttributeError:
        return False
    return bool(features.get("avx512_bf16") or features.get("amx_bf16"))


def choose_precision() -> str:
    """The precision ``"auto"`` resolves to on this CPU (decided at run time, never hard-coded).

    int8 whenever fbgemm's dynamic linear works (x86 quantized engine): measured on the AVX2-only
    2-core dev box (yellow_small, 585-token prompt, medians under some shared load), int8 was the
    fastest in *both* phases: prefill 155-172 ms vs fp32 231-271 ms (2 threads; 256-312 vs 400-423
    ms on 1), decode 3.7-6.1 ms/step vs 10.2-12.7 ms (4x less weight traffic). "mixed" decodes as
    fast but prefills at fp32 speed; it is ~30x closer to fp32 (mean |dlogit| 0.001 vs 0.03), so
    pick it explicitly when accuracy matters more than ~100 ms. Without int8 ops: bf16 only with
    native bf16 dot products (avx512_bf16/AMX; unmeasured here, where bf16 prefill is 6x slower
    than fp32), else the fp32 reference.
    """
    if int8_is_available() and torch.backends.quantized.engine in ("x86", "fbgemm"):
        return "int8"
    if bf16_is_native():
        return "bf16"
    return "fp32"


def resolve_precision(precision: str | torch.dtype) -> str:
    """A concrete precision name for ``precision`` (a name of ``PRECISIONS`` or a float dtype)."""
    if isinstance(precision, torch.dtype):
        if precision not in _DTYPE_PRECISION:
            raise ValueError(
                f"unsupported inference dtype {precision}; use torch.float32 or torch.bfloat16, "
                f"or a precision name: {', '.join(PRECISIONS)}"
            )
        return _DTYPE_PRECISION[precision]
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown inference precision {precision!r}; known: {', '.join(PRECISIONS)}"
        )
    return choose_precision() if precision == "auto" else precision
