"""Checkpoint bundles (tokens.md §13): ``.pt`` (format 1) and ``.safetensors`` (format 2).

A bundle carries the GPT-2 shape, the encoder config that defines the token ids, and the weights in
Hugging Face names. Loading validates ``format_version`` and ``arch`` first, strips HF's attention
buffers (§14 item 14), then checks every tensor name and shape strictly, reporting all problems in
one message. Half-precision weights load as float32. Saving is atomic (temp file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .model import GPT2, ModelConfig, ModelConfigError
from .vocab import EncoderConfig, EncoderConfigError

ARCH = "gpt2"
PT_FORMAT = 1
SAFETENSORS_FORMAT = 2
_FORMAT_BY_SUFFIX = {".pt": PT_FORMAT, ".safetensors": SAFETENSORS_FORMAT}
_HF_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")


class CheckpointError(ValueError):
    """A bundle that cannot be read, or whose contents do not describe a usable sideman model."""


@dataclass(frozen=True)
class Bundle:
    model_config: ModelConfig
    encoder_config: EncoderConfig
    state_dict: dict[str, Tensor]
    path: Path | None
    format_version: int


# ---- expected layout ---------------------------------------------------------------------------


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The state dict of tokens.md §13.4: name -> shape (4 + 12 per layer + 1 tensors)."""
    V, P, D = config.vocab_size, config.n_positions, config.n_embd
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (V, D),
        "transformer.wpe.weight": (P, D),
    }
    for i in range(config.n_layer):
        h = f"transformer.h.{i}"
        shapes |= {
            f"{h}.ln_1.weight": (D,),
            f"{h}.ln_1.bias": (D,),
            f"{h}.attn.c_attn.weight": (D, 3 * D),
            f"{h}.attn.c_attn.bias": (3 * D,),
            f"{h}.attn.c_proj.weight": (D, D),
            f"{h}.attn.c_proj.bias": (D,),
            f"{h}.ln_2.weight": (D,),
            f"{h}.ln_2.bias": (D,),
            f"{h}.mlp.c_fc.weight": (D, 4 * D),
            f"{h}.mlp.c_fc.bias": (4 * D,),
            f"{h}.mlp.c_proj.weight": (4 * D, D),
            f"{h}.mlp.c_proj.bias": (D,),
        }
    shapes["transformer.ln_f.weight"] = (D,)
    shapes["transformer.ln_f.bias"] = (D,)
    shapes["lm_head.weight"] = (V, D)
    return shapes


def _check_state_dict(
    state_dict: Mapping[str, Tensor], config: ModelConfig, path: Path | None
) -> dict[str, Tensor]:
    """Strip HF buffers, check names and shapes strictly, return float32 tensors."""
    tensors = {k: v for k, v in state_dict.items() if not k.endswith(_HF_BUFFER_SUFFIXES)}
    expected = expected_shapes(config)
    problems: list[str] = []
    for name, shape in expected.items():
        if name not in tensors:
            problems.append(f"missing tensor {name} (expected shape {list(shape)})")
        elif not isinstance(tensors[name], Tensor):
            problems.append(f"{name} is a {type(tensors[name]).__name__}, not a tensor")
        elif tuple(tensors[name].shape) != shape:
            problems.append(
                f"mis-shaped tensor {name}: expected {list(shape)}, found {list(tensors[name].shape)}"
            )
    for name in tensors:
        if name not in expected:
            found = list(tensors[name].shape) if isinstance(tensors[name], Tensor) else "?"
            problems.append(f"unexpected tensor {name} (shape {found})")
    if problems:
        raise CheckpointError(
            f"{_where(path)}state dict does not match {_describe(config)} "
            f"({len(problems)} problem(s)):\n  " + "\n  ".join(problems)
        )
    converted: dict[str, Tensor] = {}
    for name in expected:
        tensor = tensors[name]
        if not tensor.is_floating_point():
            raise CheckpointError(f"{_where(path)}tensor {name} has non-float dtype {tensor.dtype}")
        converted[name] = tensor.float() if tensor.dtype != torch.float32 else tensor
    return converted


def _describe(config: ModelConfig) -> str:
    return (
        f"GPT-2 config (vocab_size={config.vocab_size}, n_positions={config.n_positions}, "
        f"n_embd={config.n_embd}, n_layer={config.n_layer}, n_head={config.n_head})"
    )


def _where(path: Path | None) -> str:
    return f"{path}: " if path is not None else ""


# ---- loading ------------------------------------------------------------------------------------


def _format_for(path: Path) -> int:
    try:
        return _FORMAT_BY_SUFFIX[path.suffix]
    except KeyError:
        raise CheckpointError(
            f"{path}: unknown checkpoint suffix {path.suffix!r}; supported: "
            ".pt (format 1, packed torch dict) and .safetensors (format 2)"
        ) from None


def _read_pt(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage input can raise almost anything from inside the unpickler
        raise CheckpointError(
            f"{path}: not a readable .pt checkpoint (corrupt, truncated or not a torch file): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path}: a .pt bundle must hold a dict with format_version, arch, config, "
            f"encoder_config and state_dict; found {type(payload).__name__}"
        )
    state_dict = payload.get("state_dict")
    header = {k: v for k, v in payload.items() if k != "state_dict"}
    return header, state_dict  # type: ignore[return-value]


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        state_dict = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, or whatever a mangled header triggers
        raise CheckpointError(
            f"{path}: not a readable .safetensors checkpoint (corrupt, truncated or not a "
            f"safetensors file): {exc}"
        ) from exc
    header: dict[str, Any] = dict(metadata)
    for key in ("config", "encoder_config"):
        if key in header:
            try:
                header[key] = json.loads(header[key])
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{path}: metadata {key!r} is not valid JSON: {exc}") from exc
    return header, state_dict


def _parse_format_version(value: Any, expected: int, path: Path) -> int:
    try:
        version = int(value)
    except (TypeError, ValueError):
        version = None
    if version != expected:
        raise CheckpointError(
            f"{path}: format_version {value!r} is not supported for {path.suffix} bundles; "
            f"sideman reads format_version {expected} here"
        )
    return version


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and validate a ``.pt`` or ``.safetensors`` bundle; weights come back float32."""
    path = Path(path)
    expected_format = _format_for(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    header, state_dict = (_read_pt if expected_format == PT_FORMAT else _read_safetensors)(path)

    if "format_version" not in header:
        raise CheckpointError(f"{path}: no format_version; not a sideman/MIDI-GPT bundle")
    version = _parse_format_version(header["format_version"], expected_format, path)
    arch = header.get("arch")
    if arch != ARCH:
        raise CheckpointError(f"{path}: arch {arch!r} is not supported; sideman runs {ARCH!r} only")

    try:
        model_config = ModelConfig.from_dict(header.get("config"))  # type: ignore[arg-type]
    except ModelConfigError as exc:
        raise CheckpointError(f"{path}: bad model config: {exc}") from exc

    encoder_source = header.get("encoder_config")
    if encoder_source in (None, "", {}):
        raise CheckpointError(
            f"{path}: no encoder_config; sideman needs the encoder config embedded in the bundle "
            "(its token_domains define the token ids) - re-save the bundle with one"
        )
    try:
        if isinstance(encoder_source, (str, bytes)):
            encoder_config = EncoderConfig.from_json(
                encoder_source if isinstance(encoder_source, bytes) else encoder_source.strip()
            )
        else:
            encoder_config = EncoderConfig.from_dict(encoder_source)
    except EncoderConfigError as exc:
        raise CheckpointError(f"{path}: bad encoder_config: {exc}") from exc
    vocab_size = len(encoder_config.vocabulary)
    if model_config.vocab_size != vocab_size:
        raise CheckpointError(
            f"{path}: model vocab_size {model_config.vocab_size} does not match the encoder "
            f"config's vocabulary size {vocab_size}"
        )

    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path}: no state_dict in the bundle")
    weights = _check_state_dict(state_dict, model_config, path)
    return Bundle(model_config, encoder_config, weights, path, version)


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[GPT2, EncoderConfig]:
    """Load a bundle into an eval-mode ``GPT2`` plus the encoder config it was trained with."""
    bundle = load_bundle(path)
    model = GPT2(bundle.model_config, initialize=False)
    model.load_state_dict(bundle.state_dict, strict=True, assign=True)
    return model.to(device).eval(), bundle.encoder_config


# ---- saving -------------------------------------------------------------------------------------


def save_bundle(
    path: str | os.PathLike[str],
    model_or_state_dict: GPT2 | Mapping[str, Tensor],
    model_config: ModelConfig,
    encoder_config: EncoderConfig,
    *,
    weights_dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a bundle (format chosen by suffix) atomically; returns the path written.

    ``weights_dtype`` float16/bfloat16 stores a half-size bundle; it loads back as float32.
    """
    path = Path(path)
    version = _format_for(path)
    if weights_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise CheckpointError(
            f"weights_dtype must be float32, float16 or bfloat16, got {weights_dtype}"
        )
    vocab_size = len(encoder_config.vocabulary)
    if model_config.vocab_size != vocab_size:
        raise CheckpointError(
            f"model vocab_size {model_config.vocab_size} does not match the encoder config's "
            f"vocabulary size {vocab_size}"
        )
    source = (
        model_or_state_dict.state_dict()
        if isinstance(model_or_state_dict, torch.nn.Module)
        else model_or_state_dict
    )
    checked = _check_state_dict(source, model_config, None)
    tensors = {k: v.detach().to("cpu", weights_dtype).contiguous() for k, v in checked.items()}
    config = model_config.to_dict()

    def write(tmp: Path) -> None:
        if version == PT_FORMAT:
            torch.save(
                {
                    "format_version": PT_FORMAT,
                    "arch": ARCH,
                    "config": config,
                    "encoder_config": encoder_config.to_dict(),
                    "state_dict": tensors,
                },
                tmp,
            )
        else:
            from safetensors.torch import save_file

            metadata = {
                "format_version": str(SAFETENSORS_FORMAT),
                "arch": ARCH,
                "config": json.dumps(config),
                "encoder_config": encoder_config.to_json(),
            }
            save_file(tensors, str(tmp), metadata=metadata)

    _write_atomically(path, write)
    return path


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
