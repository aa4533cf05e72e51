"""Where and how a training run executes: process group, device, precision, threads, RNG, Ctrl-C.

Kept apart from ``loop.py`` so the loop reads as data -> model -> optimiser -> steps. Everything
here that touches process-wide state (torch threads, the global RNGs, the SIGINT handler) restores
it on exit, so ``train()`` can be called from tests or a notebook without side effects.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist

from ..model import bf16_is_native


class TrainRuntimeError(RuntimeError):
    """The requested device or precision is not available here."""


# ---- torchrun / DDP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job; world size 1 (no process group) without one."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @classmethod
    def from_environment(cls) -> Distributed:
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls()
        world_size = int(os.environ["WORLD_SIZE"])
        return cls(
            rank=int(os.environ["RANK"]),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=world_size,
            local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size))),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def init(self, device: torch.device) -> None:
        if self.active and not torch_dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            # rank 0 alone validates and writes files while the others wait in the next collective
            torch_dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))

    def close(self) -> None:
        if self.active and torch_dist.is_initialized():
            torch_dist.destroy_process_group()

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    def sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks (the values themselves in a single process)."""
        if not self.active:
            return [float(v) for v in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast_int(self, value: int, device: torch.device) -> int:
        """Rank 0's ``value`` on every rank."""
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=device)
        torch_dist.broadcast(tensor, src=0)
        return int(tensor.item())


# ---- device, precision, threads ------------------------------------------------------------------


def pick_device(name: str, local_rank: int) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainRuntimeError("device 'cuda' requested but torch sees no CUDA GPU")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise TrainRuntimeError("device 'mps' requested but torch sees no MPS device")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 where the hardware does it natively, fp16 (with loss scaling) on older GPUs,
    fp32 otherwise. On CPUs without avx512_bf16/AMX bf16 autocast is slower than fp32."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu":
            return "bf16" if bf16_is_native() else "fp32"
        return "fp32"
    if name == "fp16" and device.type == "cpu":
        raise TrainRuntimeError("precision 'fp16' needs a GPU; use bf16 or fp32 on the CPU")
    return name


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed-precision forward passes; parameters, gradients and optimizer state stay fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def torch_threads(threads: int, dist: Distributed, device: torch.device) -> Iterator[int]:
    """Torch intra-op threads for the run (default: the cores, split among this node's ranks)."""
    previous = torch.get_num_threads()
    if not threads:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = max(1, (cores or 1) // dist.local_world_size)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


# ---- random state --------------------------------------------------------------------------------


@contextlib.contextmanager
def forked_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global generators (dropout draws from torch's) for the
    run, and give the caller's states back afterwards."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global generators' states in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---- Ctrl-C ----------------------------------------------------------------------------------------


class StopFlag:
    """Set by the first SIGINT; the loop finishes its step, saves and returns."""

    def __init__(self) -> None:
        self._event = threading.Event()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()


@contextlib.contextmanager
def stop_on_signal() -> Iterator[StopFlag]:
    """The first Ctrl-C (SIGINT) or SIGTERM sets the flag: a clean stop after this step. A second
    Ctrl-C interrupts at once. SIGTERM counts because torchrun and batch schedulers send it before
    they kill a job.

    Outside the main thread signal handlers cannot be installed; there the signals keep their
    defaults.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: Any) -> None:
        flag.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for signum in previous:
        signal.signal(signum, on_signal)
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
