"""Step planner: which window of bars each sampling step sees, and which bars it generates.

tokens.md §9. Two passes over the selection: autoregressive tracks first (right-anchored windows
that grow a suffix), then infill tracks (a window centred on each kernel of ``bars_per_step`` bars).
Each pass walks groups of ``tracks_per_step`` tracks and bar offsets ``j`` stepping by
``bars_per_step``; a step is emitted when its kernel meets the selection.

Context differs from the reference on purpose (tokens.md §14 item 3): an ignored track is never
context (the engine drops it from the prompt), mask bars are never context, and an autoregressive
track's selected bars are context only once generated. Every other bar of the window that is not a
target of the step is context, including the unselected prefix of a partially autoregressive track.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from sideman.engine.request import GenerationRequest
from sideman.engine.score import Score


class PlanError(ValueError):
    """Planner inputs that are inconsistent (shapes, ignored tracks with selected bars, ...)."""


@dataclass(frozen=True, eq=False)
class Step:
    """One sampling step over the window ``[start_bar, end_bar)`` of the score."""

    start_bar: int
    end_bar: int
    targets: tuple[tuple[int, int], ...]  # global (track, bar), ascending
    autoregressive: bool
    context: np.ndarray  # (n_tracks, end_bar - start_bar) bool, read-only
    track_indices: tuple[int, ...]  # tracks with targets in this step, ascending

    @property
    def n_bars(self) -> int:
        return self.end_bar - self.start_bar

    @property
    def target_mask(self) -> np.ndarray:
        """(n_tracks, n_bars) bool: the targets in window-local coordinates."""
        mask = np.zeros(self.context.shape, dtype=bool)
        for track, bar in self.targets:
            mask[track, bar - self.start_bar] = True
        return mask

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Step):
            return NotImplemented
        return (
            self.start_bar,
            self.end_bar,
            self.targets,
            self.autoregressive,
            self.track_indices,
        ) == (
            other.start_bar,
            other.end_bar,
            other.targets,
            other.autoregressive,
            other.track_indices,
        ) and np.array_equal(self.context, other.context)

    __hash__ = None  # type: ignore[assignment]


def plan_steps(
    selected: np.ndarray,
    autoregressive: Sequence[bool],
    ignore: Sequence[bool],
    model_dim: int,
    bars_per_step: int = 1,
    tracks_per_step: int = 1,
    mask_bars: np.ndarray | None = None,
) -> list[Step]:
    """Plan the steps that generate every selected (track, bar) exactly once.

    ``selected`` and ``mask_bars`` are (n_tracks, n_bars) bool. ``bars_per_step`` is clamped to
    ``[1, model_dim]`` (tokens.md §9.1). A score shorter than ``model_dim`` gets one shorter window.
    """
    selected = np.asarray(selected, dtype=bool)
    if selected.ndim != 2:
        raise PlanError(f"selected must be (n_tracks, n_bars), got shape {selected.shape}")
    n_tracks, n_bars = selected.shape
    is_ar = _per_track(autoregressive, n_tracks, "autoregressive")
    is_ignored = _per_track(ignore, n_tracks, "ignore")
    masked = np.zeros_like(selected) if mask_bars is None else np.asarray(mask_bars, dtype=bool)
    if masked.shape != selected.shape:
        raise PlanError(f"mask_bars shape {masked.shape} differs from selected {selected.shape}")
    if model_dim < 1:
        raise PlanError(f"model_dim must be >= 1, got {model_dim}")
    bad = np.flatnonzero(is_ignored & selected.any(axis=1))
    if len(bad):
        raise PlanError(f"track {int(bad[0])} is ignored but has bars selected for generation")
    overlap = np.argwhere(selected & masked)
    if len(overlap):
        raise PlanError(
            f"track {int(overlap[0][0])} bar {int(overlap[0][1])} is both selected and masked"
        )

    bars_per_step = min(max(int(bars_per_step), 1), model_dim)
    tracks_per_step = max(int(tracks_per_step), 1)
    planner = _Planner(selected, is_ar, is_ignored, masked, model_dim, bars_per_step)
    has_selection = selected.any(axis=1)
    for group in _groups(np.flatnonzero(has_selection & is_ar), tracks_per_step):
        planner.autoregressive_pass(group)
    for group in _groups(np.flatnonzero(has_selection & ~is_ar), tracks_per_step):
        planner.infill_pass(group)
    return planner.steps


def plan_request(request: GenerationRequest, score: Score) -> list[Step]:
    """``plan_steps`` for a request on a score (track ids and bars are checked against the score)."""
    request.check_bounds(score)
    shape = (score.n_tracks, score.n_bars)
    selected = np.zeros(shape, dtype=bool)
    masked = np.zeros(shape, dtype=bool)
    autoregressive = np.zeros(score.n_tracks, dtype=bool)
    ignore = np.zeros(score.n_tracks, dtype=bool)
    for prompt in request.tracks:
        selected[prompt.id, list(prompt.bars)] = True
        masked[prompt.id, list(prompt.mask_bars)] = True
        autoregressive[prompt.id] = prompt.autoregressive
        ignore[prompt.id] = prompt.ignore
    config = request.config
    return plan_steps(
        selected,
        autoregressive,
        ignore,
        config.model_dim,
        config.bars_per_step,
        config.tracks_per_step,
        masked,
    )


class _Planner:
    """The two passes, sharing the record of bars generated so far."""

    def __init__(
        self,
        selected: np.ndarray,
        is_ar: np.ndarray,
        is_ignored: np.ndarray,
        masked: np.ndarray,
        model_dim: int,
        bars_per_step: int,
    ):
        self.selected = selected
        self.is_ar = is_ar
        self.is_ignored = is_ignored
        self.masked = masked
        self.model_dim = model_dim
        self.bars_per_step = bars_per_step
        self.n_bars = selected.shape[1]
        self.last_start = max(0, self.n_bars - model_dim)
        self.generated = np.zeros_like(selected)
        self.steps: list[Step] = []

    def autoregressive_pass(self, group: np.ndarray) -> None:
        model_dim, bps = self.model_dim, self.bars_per_step
        for j in range(0, self.n_bars, bps):
            start = min(j, self.last_start)
            end = min(start + model_dim, self.n_bars)
            if j == 0:
                kernel_start = start
            else:
                kernel_start = start + (model_dim - bps) + max(j + model_dim - self.n_bars, 0)
            self._emit(group, start, end, kernel_start, end, autoregressive=True)

    def infill_pass(self, group: np.ndarray) -> None:
        model_dim, bps = self.model_dim, self.bars_per_step
        side_context = (model_dim - bps) // 2
        for j in range(0, self.n_bars, bps):
            start = min(max(j - side_context, 0), self.last_start)
            end = min(start + model_dim, self.n_bars)
            self._emit(group, start, end, j, min(j + bps, end), autoregressive=False)

    def _emit(
        self,
        group: np.ndarray,
        start: int,
        end: int,
        kernel_start: int,
        kernel_end: int,
        autoregressive: bool,
    ) -> None:
        if kernel_start >= kernel_end:
            return
        window = slice(start, end)
        targets = np.zeros_like(self.selected)
        targets[group, kernel_start:kernel_end] = True
        targets &= self.selected & ~self.generated
        if not targets.any():
            return
        pending_ar = self.is_ar[:, None] & self.selected & ~self.generated
        context = ~(targets | self.masked | pending_ar)
        context[self.is_ignored] = False
        context = np.ascontiguousarray(context[:, window])
        context.setflags(write=False)
        pairs = tuple((int(t), int(b)) for t, b in np.argwhere(targets))  # row-major: ascending
        self.steps.append(
            Step(
                start_bar=start,
                end_bar=end,
                targets=pairs,
                autoregressive=autoregressive,
                context=context,
                track_indices=tuple(sorted({track for track, _ in pairs})),
            )
        )
        self.generated |= targets


def _per_track(values: Sequence[bool], n_tracks: int, name: str) -> np.ndarray:
    flags = np.asarray(values, dtype=bool).reshape(-1)
    if flags.shape != (n_tracks,):
        raise PlanError(f"{name} needs one flag per track ({n_tracks}), got {flags.shape[0]}")
    return flags


def _groups(tracks: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for first in range(0, len(tracks), size):
        yield tracks[first : first + size]
