"""Score <-> yellow token ids: the Python face of the dsp encode/decode/attribute kernels.

Validation happens here, at the edge (meters, window, modes, attribute ranges); the kernels get
contiguous arrays and lookup tables and never see a Python object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from sideman.dsp.attributes import compute_attributes_kernel
from sideman.dsp.decode import decode_kernel
from sideman.dsp.encode import encode_window_kernel, notes_are_sorted
from sideman.engine.score import NoteArrays, Score, TrackInfo
from sideman.engine.vocab import (
    ATTRIBUTE_NAMES,
    ATTRIBUTE_TYPES,
    DENSITY_DRUM_ROW,
    EncoderConfig,
    TokenType,
)


class BarMode(IntEnum):
    """How one (track, bar) of a window is encoded."""

    NOTES = 0  # the bar's note events
    FILL = 1  # infill target: FillInPlaceholder here, its notes in a fill block at the end
    MASKED = 2  # empty shell `Bar TimeSig BarEnd`, its token span reported
    REMOVED = 3  # no tokens at all
    CUT = 4  # partial autoregressive track: stops before this bar, without TrackEnd
    MASK_TOKEN = 5  # `Bar TimeSig MaskBar BarEnd` (mask mode "token"); needs a MaskBar vocabulary


class TokenizerError(ValueError):
    """A score or request the yellow token format cannot express."""


@dataclass(frozen=True)
class EncodedWindow:
    """Token ids of one window plus where its masked shells and infill targets are."""

    ids: np.ndarray  # (n,) int32
    mask_spans: np.ndarray  # (k, 2) int32 [start, end) spans of MASKED `Bar TimeSig BarEnd` shells
    fill_targets: tuple[tuple[int, int], ...]  # (track, window-local bar) in fill-block order


class Tokenizer:
    """Encodes score windows to ids and decodes ids to scores for one encoder config."""

    def __init__(self, config: EncoderConfig):
        self.config = config
        vocabulary = config.vocabulary
        self._offsets = vocabulary.offsets
        self._sizes = vocabulary.sizes
        self._id_type = vocabulary.id_type
        self._id_value = vocabulary.id_value
        self._velocity_to_level = config.velocity_to_level
        self._level_to_velocity = config.level_to_velocity
        self._program_to_group = config.program_to_group
        self._group_to_program = config.group_to_program
        self._time_signatures = config.time_signature_array
        self._has_mask_bar = vocabulary.has(TokenType.MASK_BAR)
        # Attribute columns the vocabulary and config can carry; others are always -1.
        self._attribute_enabled = np.array(
            [
                vocabulary.has(ATTRIBUTE_TYPES[name]) and name in config.attributes
                for name in ATTRIBUTE_NAMES
            ]
        )
        self._attribute_sizes = np.array(
            [self._sizes[ATTRIBUTE_TYPES[name]] for name in ATTRIBUTE_NAMES]
        )
        density_row = config.density_thresholds[int(DENSITY_DRUM_ROW)]
        self._density_row = density_row if density_row[0] >= 0 else None

    # ---- grid and attributes -------------------------------------------------------------
    def to_grid(self, score: Score) -> Score:
        """The score at the model resolution (rounding onsets and durations), or itself if already there."""
        if score.resolution == self.config.resolution:
            return score
        return score.rescaled(self.config.resolution)

    def compute_attributes(self, score: Score, bar_mask: np.ndarray | None = None) -> np.ndarray:
        """(n_tracks, 5) int32 attribute bins in ATTRIBUTE_NAMES order; -1 where not applicable.

        ``bar_mask`` (n_tracks, n_bars) bool selects the bars analysed (default: all).
        """
        score = self.to_grid(score)
        if bar_mask is None:
            bar_mask = np.ones((score.n_tracks, score.n_bars), dtype=np.bool_)
        else:
            bar_mask = np.asarray(bar_mask, dtype=np.bool_)
            if bar_mask.shape != (score.n_tracks, score.n_bars):
                raise TokenizerError(
                    f"bar_mask has shape {bar_mask.shape}; expected (n_tracks, n_bars) = "
                    f"{(score.n_tracks, score.n_bars)}"
                )
        thresholds = (
            self._density_row if self._density_row is not None else np.zeros(1, dtype=np.int64)
        )
        notes = score.notes
        values = compute_attributes_kernel(
            notes.track,
            notes.bar,
            notes.onset,
            notes.duration,
            score.bar_ticks(),
            self._track_is_drum(score),
            np.ascontiguousarray(bar_mask),
            thresholds,
            self.config.resolution,
        )
        values[:, ~self._attribute_enabled] = -1
        if self._density_row is None:
            values[:, ATTRIBUTE_NAMES.index("note_density")] = -1
        return values

    def stored_attributes(self, score: Score) -> np.ndarray:
        """(n_tracks, 5) int32 of the values kept in each TrackInfo.attributes; -1 where absent."""
        out = np.full((score.n_tracks, len(ATTRIBUTE_NAMES)), -1, dtype=np.int32)
        for t, info in enumerate(score.track_info):
            for a, name in enumerate(ATTRIBUTE_NAMES):
                if name in info.attributes:
                    out[t, a] = info.attributes[name]
        return out

    # ---- encode --------------------------------------------------------------------------
    def encode_window(
        self,
        score: Score,
        *,
        start_bar: int = 0,
        n_bars: int | None = None,
        num_bars: int | None = None,
        track_order: Sequence[int] | None = None,
        bar_modes: np.ndarray | None = None,
        attributes: np.ndarray | None = None,
    ) -> EncodedWindow:
        """Encode bars [start_bar, start_bar + n_bars) of the listed tracks (tokens.md §3).

        ``num_bars`` (default ``n_bars``) is the NumBars value and must be in the config's
        ``num_bars_map``. ``bar_modes`` is (n_tracks, n_bars) of BarMode over the window;
        MASK_TOKEN bars need a vocabulary with a MaskBar token (yellow has none).
        ``attributes`` (n_tracks, 5), -1 = omit; None emits no attribute tokens.
        """
        score = self.to_grid(score)
        if not 0 <= start_bar < max(score.n_bars, 1):
            raise TokenizerError(f"start_bar={start_bar} outside the score's {score.n_bars} bars")
        if n_bars is None:
            n_bars = score.n_bars - start_bar
        if n_bars < 0 or start_bar + n_bars > score.n_bars:
            raise TokenizerError(
                f"window of {n_bars} bars from bar {start_bar} runs past the score's {score.n_bars} bars"
            )
        num_bars_index = self._num_bars_index(n_bars if num_bars is None else num_bars)
        order = self._track_order(score, track_order)
        modes = self._bar_modes(score, n_bars, bar_modes)
        attribute_values = self._attribute_values(score, attributes)
        timesig = self._timesig_values(score, start_bar, n_bars)
        notes = self._window_notes(score, start_bar, n_bars)
        fill_targets = _fill_targets(order, modes)
        ids, spans = encode_window_kernel(
            notes.track,
            notes.bar,
            notes.onset,
            notes.duration,
            notes.pitch,
            notes.velocity,
            timesig,
            self._track_is_drum(score),
            self._track_groups(score),
            attribute_values,
            order,
            modes,
            1 if fill_targets else 0,
            num_bars_index,
            self._offsets,
            self._sizes,
            self._velocity_to_level,
            self.config.max_duration_ticks,
        )
        return EncodedWindow(ids=ids, mask_spans=spans, fill_targets=fill_targets)

    def encode_score(
        self, score: Score, *, window_bars: int | None = None, attributes: bool = True
    ) -> np.ndarray:
        """Ids of the whole score as one sequence; NumBars from ``window_bars`` (default: the bar count)."""
        score = self.to_grid(score)
        values = self.compute_attributes(score) if attributes else None
        window = self.encode_window(score, num_bars=window_bars, attributes=values)
        return window.ids

    # ---- decode --------------------------------------------------------------------------
    def decode(self, ids: np.ndarray | Sequence[int]) -> Score:
        """A score at the model resolution from token ids; bars without a TimeSig are 4/4."""
        ids = np.ascontiguousarray(
            np.asarray(ids, dtype=np.int64).clip(-1, 2**31 - 1), dtype=np.int32
        )
        decoded = decode_kernel(ids, self._id_type, self._id_value, self._level_to_velocity)
        notes = NoteArrays(*decoded[:6])
        is_drum, groups, attributes, bar_offsets, bar_timesig = decoded[6:]
        n_tracks = len(is_drum)
        bars_per_track = np.diff(bar_offsets)
        n_bars = int(bars_per_track.max()) if n_tracks else 0
        time_signatures = np.tile(np.array([4, 4], dtype=np.int32), (n_bars, 1))
        if n_bars:
            longest = int(np.argmax(bars_per_track))
            meters = bar_timesig[bar_offsets[longest] : bar_offsets[longest + 1]]
            known = (meters >= 0) & (meters < len(self._time_signatures))
            time_signatures[known] = self._time_signatures[meters[known]]
        track_info = []
        for t in range(n_tracks):
            group = int(groups[t])
            program = (
                int(self._group_to_program[group])
                if 0 <= group < len(self._group_to_program)
                else 0
            )
            values = {
                name: int(attributes[t, a])
                for a, name in enumerate(ATTRIBUTE_NAMES)
                if attributes[t, a] >= 0
            }
            track_info.append(
                TrackInfo(program=program, is_drum=bool(is_drum[t]), attributes=values)
            )
        if not notes_are_sorted(notes.track, notes.bar, notes.onset, notes.pitch):
            notes = notes.sorted()
        return Score(
            resolution=self.config.resolution,
            time_signatures=time_signatures,
            track_info=track_info,
            notes=notes,
        )

    # ---- validation helpers --------------------------------------------------------------
    def _num_bars_index(self, num_bars: int) -> int:
        if not self._sizes[TokenType.NUM_BARS]:
            return -1
        bars_map = list(self.config.num_bars_map)
        if num_bars not in bars_map:
            raise TokenizerError(f"window_bars={num_bars} not in num_bars_map {bars_map}")
        return bars_map.index(num_bars)

    def _track_order(self, score: Score, track_order: Sequence[int] | None) -> np.ndarray:
        if track_order is None:
            return np.arange(score.n_tracks, dtype=np.int32)
        order = np.asarray(track_order, dtype=np.int64).reshape(-1)
        if len(order) and (order.min() < 0 or order.max() >= score.n_tracks):
            raise TokenizerError(
                f"track_order {order.tolist()} names a track outside 0..{score.n_tracks - 1}"
            )
        if len(np.unique(order)) != len(order):
            raise TokenizerError(f"track_order {order.tolist()} lists a track twice")
        return order.astype(np.int32)

    def _bar_modes(self, score: Score, n_bars: int, bar_modes: np.ndarray | None) -> np.ndarray:
        if bar_modes is None:
            return np.zeros((score.n_tracks, n_bars), dtype=np.int8)
        modes = np.asarray(bar_modes)
        if modes.shape != (score.n_tracks, n_bars):
            raise TokenizerError(
                f"bar_modes has shape {modes.shape}; expected (n_tracks, n_bars) = {(score.n_tracks, n_bars)}"
            )
        if modes.size and (modes.min() < BarMode.NOTES or modes.max() > BarMode.MASK_TOKEN):
            raise TokenizerError(
                f"bar_modes values must be BarMode 0..{int(BarMode.MASK_TOKEN)}, "
                f"got {sorted(set(modes.ravel().tolist()))}"
            )
        if not self._has_mask_bar and np.any(modes == BarMode.MASK_TOKEN):
            raise TokenizerError(
                f"bar_modes asks for MASK_TOKEN bars, but the {self.config.name} vocabulary has no "
                "MaskBar token; use mask mode 'attention' (BarMode.MASKED shells) instead"
            )
        return np.ascontiguousarray(modes, dtype=np.int8)

    def _attribute_values(self, score: Score, attributes: np.ndarray | None) -> np.ndarray:
        shape = (score.n_tracks, len(ATTRIBUTE_NAMES))
        if attributes is None:
            return np.full(shape, -1, dtype=np.int32)
        values = np.asarray(attributes)
        if values.shape != shape:
            raise TokenizerError(
                f"attributes has shape {values.shape}; expected (n_tracks, 5) = {shape}"
            )
        too_big = values >= self._attribute_sizes
        if np.any(too_big):
            t, a = np.argwhere(too_big)[0]
            raise TokenizerError(
                f"track {t}: {ATTRIBUTE_NAMES[a]}={values[t, a]} outside [0, {self._attribute_sizes[a] - 1}]"
            )
        values = np.where(values < 0, -1, values).astype(np.int32)
        values[:, ~self._attribute_enabled] = -1
        return values

    def _timesig_values(self, score: Score, start_bar: int, n_bars: int) -> np.ndarray:
        meters = score.time_signatures[start_bar : start_bar + n_bars]
        values = np.array(
            [self.config.time_signature_index(n, d) for n, d in meters.tolist()], dtype=np.int32
        )
        if np.any(values < 0):
            bar = int(np.flatnonzero(values < 0)[0])
            n, d = meters[bar]
            raise TokenizerError(
                f"bar {start_bar + bar}: time signature {n}/{d} is not in the vocabulary; "
                f"known meters: {', '.join(f'{a}/{b}' for a, b in self.config.time_signatures)}"
            )
        return values.reshape(n_bars)

    def _window_notes(self, score: Score, start_bar: int, n_bars: int) -> NoteArrays:
        notes = score.notes
        if not notes_are_sorted(notes.track, notes.bar, notes.onset, notes.pitch):
            notes = notes.sorted()
        if start_bar != 0 or n_bars != score.n_bars:
            keep = (notes.bar >= start_bar) & (notes.bar < start_bar + n_bars)
            notes = notes.select(keep)
            notes = NoteArrays(
                notes.track,
                notes.bar - start_bar,
                notes.onset,
                notes.duration,
                notes.pitch,
                notes.velocity,
            )
        onset_limit = int(self._sizes[TokenType.TIME_ABSOLUTE_POS]) - 1
        if len(notes) and notes.onset.max() > onset_limit:
            # Clamp before grouping so notes sharing the clamped onset still come in pitch order.
            clamped = np.minimum(notes.onset, onset_limit)
            notes = NoteArrays(
                notes.track, notes.bar, clamped, notes.duration, notes.pitch, notes.velocity
            ).sorted()
        return notes

    def _track_is_drum(self, score: Score) -> np.ndarray:
        return np.array([info.is_drum for info in score.track_info], dtype=np.int8)

    def _track_groups(self, score: Score) -> np.ndarray:
        programs = np.array([info.program for info in score.track_info], dtype=np.int64)
        if len(programs) and (programs.min() < 0 or programs.max() > 127):
            bad = int(np.flatnonzero((programs < 0) | (programs > 127))[0])
            raise TokenizerError(f"track {bad}: program {programs[bad]} outside 0..127")
        return self._program_to_group[programs].astype(np.int32)


def _fill_targets(order: np.ndarray, modes: np.ndarray) -> tuple[tuple[int, int], ...]:
    """(track, bar) of every FILL bar the encoder will emit, in emission order."""
    targets = []
    for t in order.tolist():
        row = modes[t]
        cut = np.flatnonzero(row == BarMode.CUT)
        end = int(cut[0]) if len(cut) else len(row)
        targets.extend((t, int(b)) for b in np.flatnonzero(row[:end] == BarMode.FILL))
    return tuple(targets)
